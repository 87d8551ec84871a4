"""The built-in synth's FluidSynth engine (issue 30: ``synth: {engine: fluidsynth}``, the
shipped public-domain General MIDI SoundFont), where libfluidsynth is installed (CI
installs libfluidsynth3): a note sounds at its time and pitch, a program change is
another instrument, channel 10 is drums, every note ends in silence; ``run --play
show.wav`` plays through it in the child process; without the library, one line at
start naming the mapping, exit 2."""

from __future__ import annotations

import subprocess
import sys

import mido
import numpy as np
import pytest
from test_play import answers, energy_near, read_wav
from test_synth import centroid, note_hz, onset, spectrum

from pete_osc.outputs.fluid import SOUNDFONT, FluidSynth, missing
from pete_osc.outputs.synth import RATE, render_timed

WHY = missing()
needs_fluidsynth = pytest.mark.skipif(WHY is not None, reason=f"FluidSynth: {WHY}")


def test_the_shipped_soundfont_is_the_public_domain_one():
    assert SOUNDFONT.is_file() and SOUNDFONT.stat().st_size == 4191916
    assert "Public Domain" in (SOUNDFONT.parent / "README.md").read_text()


@needs_fluidsynth
@pytest.mark.parametrize("program,note,at", [(0, 69, 0.10), (33, 40, 0.25), (48, 60, 0.03)])
def test_a_note_sounds_at_its_time_and_pitch(program, note, at):
    sound = render_timed([(0.0, mido.Message("program_change", program=program)),
                          (at, mido.Message("note_on", note=note, velocity=110)),
                          (at + 0.8, mido.Message("note_off", note=note))], at + 1.0,
                         synth=FluidSynth(RATE))
    assert abs(onset(sound, 1e-3) - at) < 0.010  # (FluidSynth dithers: 1 LSB before)
    assert np.abs(sound[: int((at - 0.005) * RATE)]).max() < 1e-4
    freqs, mags = spectrum(sound[int((at + 0.05) * RATE): int((at + 0.45) * RATE)])
    # the fundamental or an octave of it (a sampled instrument's strongest partial)
    peak = freqs[mags.argmax()]
    assert min(abs(peak - k * note_hz(note)) / (k * note_hz(note)) for k in (1, 2, 4)) < 0.03


def held(program: int, note: int, channel: int = 0) -> np.ndarray:
    synth = FluidSynth(RATE)
    synth.send(mido.Message("program_change", channel=channel, program=program))
    synth.send(mido.Message("note_on", channel=channel, note=note, velocity=100))
    synth.render(int(0.1 * RATE))
    return synth.render(int(0.5 * RATE))


@needs_fluidsynth
def test_a_program_change_is_another_instrument_and_channel_10_is_drums():
    piano, flute = held(0, 60), held(73, 60)
    assert abs(centroid(piano) - centroid(flute)) > 0.15 * centroid(piano)
    hat = held(0, 42, channel=9)  # closed hi-hat: noise, high up
    assert centroid(hat) > 2 * centroid(piano)


@needs_fluidsynth
def test_every_note_ends_in_silence():
    synth = FluidSynth(RATE)
    for note in (48, 55, 60, 64):
        synth.send(mido.Message("note_on", note=note, velocity=100))
    synth.send(mido.Message("control_change", control=64, value=127))
    synth.render(RATE // 2)
    assert synth.voices >= 4
    synth.all_off()  # (the pedal too)
    synth.render(4 * RATE)
    assert synth.voices == 0 and np.abs(synth.render(RATE // 10)).max() < 1e-4


@needs_fluidsynth
def test_play_through_fluidsynth_follows_the_answers(tmp_path, cli_env):
    """The shipped 'play' mapping with 'engine: fluidsynth' added: red then green, the
    bass's C1 then E1, through the child process into a WAV in real time."""
    from support.peers import ROOT

    mapping = tmp_path / "play.yaml"
    mapping.write_text((ROOT / "mappings" / "play.yaml").read_text()
                       .replace("\nsynth:\n", "\nsynth:\n  engine: fluidsynth\n", 1))
    replay = answers(tmp_path, [("red", "sad")] * 3 + [("green", "happy")] * 3)
    out = tmp_path / "show.wav"
    proc = subprocess.run([sys.executable, "-m", "pete_osc", "run", "--engine", "replay",
                           "--replay", str(replay), "--fps", "1", "--play", str(out),
                           "--mapping", str(mapping)],
                          capture_output=True, text=True, env=cli_env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "built-in synth (FluidSynth) into" in proc.stderr, proc.stderr
    sound = read_wav(out)
    half = RATE // 2
    windows = [sound[i:i + half] for i in range(0, len(sound) - half, half)]
    c = [energy_near(w, 65.41) + energy_near(w, 130.8) for w in windows]
    e = [energy_near(w, 82.41) + energy_near(w, 164.8) for w in windows]
    first_c = next(i for i, (a, b) in enumerate(zip(c, e)) if a > 1e-3 and a > 5 * b)
    assert any(b > 1e-3 and b > 5 * a for a, b in zip(c[first_c:], e[first_c:]))
    assert np.abs(sound).max() > 0.05 and np.abs(sound[-RATE // 10:]).max() < 2e-3


def test_without_the_library_one_line_at_start(tmp_path, cli_env):
    """libfluidsynth hidden from the process (an empty library path and no ldconfig
    cache is not portable; pyfluidsynth honours a missing module just the same)."""
    mapping = tmp_path / "fluid.yaml"
    mapping.write_text("synth:\n  engine: fluidsynth\n  pad: {channel: 1, program: 89}\n"
                       "routes:\n  - {event: energy, to: pad, cc: 74}\n")
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "fluidsynth.py").write_text("raise ImportError(\"Couldn't find the FluidSynth "
                                           "library.\")\n")
    env = dict(cli_env, PYTHONPATH=f"{blocker}:{cli_env.get('PYTHONPATH', '')}")
    proc = subprocess.run([sys.executable, "-m", "pete_osc", "run", "--engine", "replay",
                           "--replay", str(mapping), "--play", str(tmp_path / "x.wav"),
                           "--mapping", str(mapping)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "fluidsynth" in line.lower()]
    assert lines == [f"pete-osc: error: {mapping}: synth: {{engine: fluidsynth}}: FluidSynth's "
                     "library is not installed (Debian/Ubuntu: apt install libfluidsynth3; "
                     "macOS: brew install fluid-synth)"], proc.stderr
