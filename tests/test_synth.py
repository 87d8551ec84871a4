"""The built-in synth (issue 30, pete_osc/outputs/synth.py), heard offline: a note sounds
at its time and pitch, CC 74 brightens it, a program change changes its timbre, every
note ends in silence, and no pitch is ever on twice (a property over random message
streams); ``pete-osc export -o show.wav`` plays a recording's MIDI into a WAV file whose
sound follows the recording's notes."""

from __future__ import annotations

import json
import subprocess
import sys
import wave
from pathlib import Path

import mido
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pete_osc.outputs.synth import RATE, Synth, render_timed


def note_hz(note: int) -> float:
    return 440.0 * 2 ** ((note - 69) / 12)


def spectrum(samples: np.ndarray):
    mono = samples.mean(axis=1) if samples.ndim == 2 else samples
    mags = np.abs(np.fft.rfft(mono * np.hanning(len(mono))))
    return np.fft.rfftfreq(len(mono), 1 / RATE), mags


def centroid(samples: np.ndarray) -> float:
    freqs, mags = spectrum(samples)
    return float((freqs * mags).sum() / mags.sum())


def onset(samples: np.ndarray, threshold: float = 1e-4) -> float:
    return float(np.argmax(np.abs(samples).max(axis=1) > threshold) / RATE)


@pytest.mark.parametrize("program,note,at", [(0, 69, 0.10), (33, 40, 0.25), (90, 60, 0.033),
                                             (81, 84, 0.5)])
def test_a_note_sounds_at_its_time_and_pitch(program, note, at):
    sound = render_timed([(0.0, mido.Message("program_change", program=program)),
                          (at, mido.Message("note_on", note=note, velocity=110)),
                          (at + 0.8, mido.Message("note_off", note=note))], at + 1.0)
    assert abs(onset(sound) - at) < 0.010  # within 10 ms of the message
    assert np.abs(sound[: int((at - 0.005) * RATE)]).max() < 1e-6  # nothing before it
    freqs, mags = spectrum(sound[int((at + 0.05) * RATE): int((at + 0.45) * RATE)])
    assert abs(freqs[mags.argmax()] - note_hz(note)) < note_hz(note) * 0.03


def held(messages, seconds=0.5):
    synth = Synth()
    for m in messages:
        synth.send(m)
    synth.render(int(0.2 * RATE))  # past the attack
    return synth.render(int(seconds * RATE))


def test_cc74_opens_the_filter_and_cc71_adds_resonance():
    lead = [mido.Message("program_change", program=81)]
    note = mido.Message("note_on", note=48, velocity=100)
    dark = held(lead + [mido.Message("control_change", control=74, value=10), note])
    bright = held(lead + [mido.Message("control_change", control=74, value=120), note])
    assert centroid(bright) > 2 * centroid(dark)
    # resonance: the harmonics near the cutoff (here ~1.5 kHz) stand out
    plain = held(lead + [mido.Message("control_change", control=74, value=40), note])
    peaked = held(lead + [mido.Message("control_change", control=74, value=40),
                          mido.Message("control_change", control=71, value=127), note])
    freqs, a = spectrum(plain)
    _, b = spectrum(peaked)
    band = (freqs > 1000) & (freqs < 2500)
    assert b[band].max() > 2 * a[band].max()


def test_a_program_change_changes_the_timbre():
    note = mido.Message("note_on", note=45, velocity=100)
    bass = held([mido.Message("program_change", program=33), note])  # square: odd harmonics
    pad = held([mido.Message("program_change", program=89), note])  # saw: every harmonic
    f0 = note_hz(45)

    def second_over_third(sound):
        freqs, mags = spectrum(sound)
        at = lambda f: mags[np.abs(freqs - f) < 4].max()  # noqa: E731
        return at(2 * f0) / at(3 * f0)
    assert second_over_third(bass) < 0.2 and second_over_third(pad) > 0.5


def test_after_the_last_note_off_and_its_release_all_is_silent():
    messages = [(0.0, mido.Message("program_change", program=89)),  # pad: 1.2 s release
                (0.1, mido.Message("note_on", note=60, velocity=100)),
                (0.1, mido.Message("note_on", note=64, velocity=100)),
                (0.2, mido.Message("control_change", control=64, value=127)),  # pedal down
                (0.5, mido.Message("note_off", note=60)),
                (0.5, mido.Message("note_off", note=64))]
    synth = Synth()
    for at, m in messages:
        synth.send(m)
    synth.render(RATE)
    assert len(synth.sounding) == 2  # the pedal holds them
    synth.send(mido.Message("control_change", control=64, value=0))
    release = synth.render(int(1.3 * RATE))
    assert synth.sounding == [] and np.abs(release[: RATE // 10]).max() > 0.01
    tail = synth.render(3 * RATE)
    assert np.abs(tail[-RATE // 2:]).max() < 1e-4  # the reverb too has died away
    # and render_timed ends every note itself and stops once silent
    sound = render_timed([(at, m) for at, m in messages], 1.0)
    assert np.abs(sound[-256:]).max() < 1e-4 and len(sound) < 4 * RATE


channels = st.sampled_from([0, 1, 9])
notes = st.integers(36, 84)
messages = st.lists(st.one_of(
    st.builds(lambda c, n, v: mido.Message("note_on", channel=c, note=n, velocity=v),
              channels, notes, st.integers(0, 127)),
    st.builds(lambda c, n: mido.Message("note_off", channel=c, note=n), channels, notes),
    st.builds(lambda c, v: mido.Message("control_change", channel=c, control=64, value=v),
              channels, st.sampled_from([0, 127])),
    st.builds(lambda c, p: mido.Message("program_change", channel=c, program=p),
              channels, st.integers(0, 127)),
    st.builds(lambda c, v: mido.Message("control_change", channel=c, control=74, value=v),
              channels, st.integers(0, 127))), max_size=40)


@settings(max_examples=60, deadline=None)
@given(messages, st.lists(st.integers(1, 600), min_size=40, max_size=40))
def test_no_pitch_twice_and_every_note_released(stream, gaps):
    synth = Synth(voices=64)
    for message, gap in zip(stream, gaps):
        synth.send(message)
        sounding = synth.sounding
        assert len(sounding) == len(set(sounding))  # never a pitch on twice on a channel
        out = synth.render(gap)
        assert np.isfinite(out).all() and np.abs(out).max() <= 1.0
    synth.all_off()
    synth.render(6 * RATE)  # longer than any release
    assert synth.sounding == []


def test_export_to_wav_plays_the_recordings_notes(tmp_path, cli_env):
    """The recording's moods pick notes (tense: C4, calm: E4 with this mapping) for a
    synth: target; the WAV has each at its time and pitch (in the target's patch, a
    pad), silence before the first, and the MIDI file of the same export has exactly
    those messages."""
    mapping = tmp_path / "m.yaml"
    mapping.write_text("synth:\n  keys: {channel: 2, program: 89}\nroutes:\n"
                       "  - {event: mood, note: {tense: C3, calm: E3}, velocity: 100, "
                       "length: 0.8}\n")
    recording = tmp_path / "rec.jsonl"
    recording.write_text("".join(json.dumps(r) + "\n" for r in [
        {"frame": 0, "s": 0.0, "t": 0.50, "text": "mood: tense\n"},
        {"frame": 0, "s": 0.0, "t": 0.55, "text": "", "finish": "stop"},
        {"frame": 1, "s": 2.0, "t": 0.50, "text": "mood: calm\n"},
        {"frame": 1, "s": 2.0, "t": 0.55, "text": "", "finish": "stop"},
        {"frame": 2, "s": 4.0, "t": 0.10, "text": "", "finish": "stop"}]))  # (the show goes on)
    outs = {}
    for suffix in ("wav", "mid"):
        outs[suffix] = tmp_path / f"show.{suffix}"
        proc = subprocess.run([sys.executable, "-m", "pete_osc", "export", str(recording),
                               "--mapping", str(mapping), "-o", str(outs[suffix])],
                              capture_output=True, text=True, env=cli_env, timeout=120)
        assert proc.returncode == 0, proc.stderr
    assert "played by the built-in synth" in proc.stderr or outs["wav"].exists()
    with wave.open(str(outs["wav"])) as f:
        assert (f.getnchannels(), f.getframerate(), f.getsampwidth()) == (2, RATE, 2)
        pcm = np.frombuffer(f.readframes(f.getnframes()), "<i2").reshape(-1, 2) / 32767.0
    midi = [m for m in mido.merge_tracks(mido.MidiFile(str(outs["mid"])).tracks)
            if not m.is_meta]
    # the synth target's patch first (as live, when it opens), then the notes
    assert [(m.type, getattr(m, "note", getattr(m, "program", None))) for m in midi] == [
        ("program_change", 89), ("note_on", 60), ("note_off", 60), ("note_on", 64),
        ("note_off", 64)]
    assert abs(onset(pcm) - 0.5) < 0.01
    for start, note, other in ((0.6, 60, 64), (2.8, 64, 60)):
        freqs, mags = spectrum(pcm[int(start * RATE): int((start + 0.5) * RATE)])

        def near(n):  # the energy at a note's fundamental and its first harmonics
            return sum((mags[np.abs(freqs - k * note_hz(n)) < note_hz(n) * 0.02] ** 2).sum()
                       for k in (1, 2, 3))
        assert near(note) > 5 * near(other), (start, note)  # (the last one rings on)


def test_a_mappings_synth_targets_are_midi_targets_of_the_built_in_synth(director):
    from pete_osc.errors import PeteError
    from pete_osc.mapping.load import parse_mapping

    text = ("synth:\n  pad: {channel: 2, program: 89}\n  lead: {}\nroutes:\n"
            "  - {event: energy, to: pad, cc: 74}\n  - {event: mood, to: lead, note: {calm: C4}}\n")
    mapping = parse_mapping(text, director)
    pad, lead = mapping.midi["pad"], mapping.midi["lead"]
    assert pad.synth and lead.synth and (pad.channel, pad.program) == (2, 89)
    assert (lead.channel, lead.program) == (1, None)
    assert [r.target for r in mapping.routes] == ["pad", "lead"]
    bad = {"program: 200": "m.yaml:2: synth target 'pad': program must be 0-127",
           "volume: 3": "m.yaml:2: ",
           "channel: 17": "m.yaml:2: "}
    for setting, said in bad.items():
        with pytest.raises(PeteError) as caught:
            parse_mapping(text.replace("program: 89", setting),
                          director, path=Path("m.yaml"))
        assert str(caught.value).startswith(said), str(caught.value)
    with pytest.raises(PeteError, match="used twice"):
        parse_mapping("osc:\n  pad: {host: 127.0.0.1, port: 9}\n" + text, director)
