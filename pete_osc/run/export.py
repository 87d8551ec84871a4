"""``pete-osc export``: a recorded show rendered through a mapping, offline, into a
Standard MIDI File (one track per MIDI target, with the real timing) and the OSC
messages as a timestamped log (JSON lines), or into sound: the same MIDI messages played
by the built-in synth (pete_osc.outputs.synth) into a WAV file.

The recording (``run --record``) has every token with its time in its frame and each
frame's start in the run, so each line's event happens when its newline arrived. The
mapping's router is the live one, run on that timeline instead of the clock: events at
their times, ticks at the mapping's control rate in between (glides, held values, note
offs, settles, heartbeats) up to the end of the last frame, then what the show sends
when it stops (sounding notes end there, as they do live). Recordings made before frame
starts were recorded play their frames back to back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..director.parser import LineParser
from ..director.schema import Director
from ..errors import PeteError
from ..mapping.config import MappingConfig
from ..mapping.router import Router
from ..records import Event, FrameInfo, Message, MidiMessage, OscMessage
from .recording import load_recording

TEMPO_BPM = 120
TICKS_PER_BEAT = 960


@dataclass(frozen=True)
class Timed:
    at: float  # seconds since the recording's first frame
    message: Message


def timeline(recording: Path, director: Director) -> tuple[list[tuple[float, Event | None]], float]:
    """Every event of the recording with its time (its line's newline), None at each
    frame's end (where chords change), and when the last frame ended."""
    out: list[tuple[float, Event | None]] = []
    end = 0.0
    for number, frame in enumerate(load_recording(recording)):
        start = frame[0].start if frame[0].start is not None else end
        clock = [start]
        parser = LineParser(director, FrameInfo(number, frame[0].source or "replay", start),
                            clock=lambda: clock[0])
        for token in frame:
            clock[0] = start + token.at
            for record in parser.feed(token.text):
                if isinstance(record, Event):
                    out.append((clock[0], record))
        finish = frame[-1].finish  # none: the show cut this answer (watchdog, stop, error)
        for record in parser.finish(truncated=finish == "length",
                                    cut=None if finish in ("stop", "length") else "cut in the show"):
            if isinstance(record, Event):
                out.append((clock[0], record))
        out.append((clock[0], None))
        end = clock[0]
    return out, end


def render(events: list[tuple[float, Event | None]], mapping: MappingConfig, end: float) -> list[Timed]:
    """The messages the mapping sends for ``events`` until ``end``, each with its time."""
    router = Router(mapping)
    period = 1.0 / mapping.control_rate
    out: list[Timed] = []
    tick = 0.0

    def ticks_until(t: float) -> None:
        nonlocal tick
        while tick < t:
            out.extend(Timed(tick, m) for m in router.tick(tick))
            tick += period

    for at, event in events:
        ticks_until(at)
        sent = router.end_frame(at) if event is None else router.event(event, at)
        out.extend(Timed(at, m) for m in sent)
    ticks_until(end)
    out.extend(Timed(max(end, 0.0), m) for m in router.closing())
    return out


def patches(mapping: MappingConfig) -> list[Timed]:
    """The program each ``synth:`` target that names one starts with (live, its output
    sends it when it opens), at the start."""
    import mido

    return [Timed(0.0, MidiMessage(name, mido.Message("program_change", channel=t.channel - 1,
                                                      program=t.program)))
            for name, t in mapping.midi.items() if t.synth and t.program is not None]


def write_midi(messages: list[Timed], mapping: MappingConfig, path: Path) -> int:
    """A type 1 Standard MIDI File, a track per MIDI target; returns the messages written."""
    import mido

    tempo = mido.bpm2tempo(TEMPO_BPM)
    song = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT)
    meta = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=tempo, time=0)])
    song.tracks.append(meta)
    written = 0
    for name, target in mapping.midi.items():
        track = mido.MidiTrack([mido.MetaMessage("track_name", name=target.port, time=0)])
        now = 0
        for timed in messages:
            if isinstance(timed.message, MidiMessage) and timed.message.target == name:
                tick = round(mido.second2tick(timed.at, TICKS_PER_BEAT, tempo))
                track.append(timed.message.message.copy(time=tick - now))
                now = tick
                written += 1
        song.tracks.append(track)
    song.save(str(path))
    return written


def write_osc_log(messages: list[Timed], path: Path) -> int:
    """One JSON line per OSC message: its time, target, address and arguments."""
    lines = [json.dumps({"t": round(t.at, 6), "target": t.message.target,
                         "address": t.message.address, "args": list(t.message.args)})
             for t in messages if isinstance(t.message, OscMessage)]
    path.write_text("".join(line + "\n" for line in lines))
    return len(lines)


def write_wav(messages: list[Timed], mapping: MappingConfig, end: float, path: Path) -> tuple[int, float]:
    """The MIDI messages played by the built-in synth (pete_osc.outputs.synth), a synth
    per MIDI target, mixed into a WAV file; returns the messages played and the seconds."""
    import numpy as np

    from ..outputs.synth import RATE, render_timed
    from ..outputs.synth import write_wav as save

    played, mix = 0, np.zeros((0, 2), np.float32)
    for name in mapping.midi:
        timed = [(t.at, t.message.message) for t in messages
                 if isinstance(t.message, MidiMessage) and t.message.target == name]
        played += len(timed)
        sound = render_timed(timed, end, synth=_engine(mapping.midi[name]))
        if len(sound) > len(mix):
            sound[: len(mix)] += mix
            mix = sound
        else:
            mix[: len(sound)] += sound
    save(path, mix)
    return played, len(mix) / RATE


def _engine(target):
    """A FluidSynth for a ``synth: {engine: fluidsynth}`` target; None: the numpy synth."""
    if target.engine != "fluidsynth":
        return None
    from ..outputs.fluid import FluidSynth, missing

    problem = missing(target.soundfont)
    if problem:
        raise PeteError(f"synth target {target.name}: engine fluidsynth: {problem}")
    from ..outputs.synth import RATE

    return FluidSynth(RATE, target.soundfont)


def export(recording: Path, director: Director, mapping: MappingConfig, out: Path) -> str:
    """Render and write; a one-line account of what was written."""
    audio = out.suffix.lower() == ".wav"
    if out.suffix.lower() not in (".mid", ".midi", ".wav"):
        raise PeteError(f"-o {out}: the output is a Standard MIDI File (*.mid) or sound "
                        "(*.wav)")
    if audio and not mapping.midi:
        raise PeteError(f"-o {out}: the mapping sends no MIDI, so the synth has nothing to "
                        "play (try --mapping harmony)")
    if not out.parent.is_dir():
        raise PeteError(f"-o {out}: no folder {out.parent} to write into")
    events, end = timeline(recording, director)
    if not any(event is not None for _, event in events):
        raise PeteError(f"{recording}: no event in it, so there is nothing to export (is it a "
                        "file written by pete-osc run --record?)")
    messages = patches(mapping) + render(events, mapping, end)
    count = sum(event is not None for _, event in events)
    if audio:
        try:
            played, seconds = write_wav(messages, mapping, end, out)
        except OSError as exc:
            raise PeteError(f"{exc.filename or out}: cannot write: {exc.strerror or exc}") from None
        return (f"{count} events over {end:.1f} s: {played} MIDI messages played by the "
                f"built-in synth into {out} ({seconds:.1f} s of sound)")
    osc_path = out.with_suffix(".osc.jsonl")
    try:
        midi = write_midi(messages, mapping, out) if mapping.midi else 0
        osc = write_osc_log(messages, osc_path) if mapping.osc else 0
    except OSError as exc:
        raise PeteError(f"{exc.filename or out}: cannot write: {exc.strerror or exc}") from None
    length = messages[-1].at if messages else 0.0
    return (f"{count} events over {length:.1f} s: {midi} MIDI messages to {out}"
            + (f", {osc} OSC messages to {osc_path}" if mapping.osc else ""))
