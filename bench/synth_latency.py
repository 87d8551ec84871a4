"""MIDI message to sound (issue 30): note-ons sent to the built-in synth's child process
(the path a synth: target's messages take: a pipe to the process, rendered in chunks)
while it writes a WAV file in real time; each note's onset in the file against the time
its message was sent.

    python bench/synth_latency.py [--notes 40] [--gap 0.5] [--json FILE]

The WAV writer renders 1024 frames (21.3 ms at 48 kHz) every 21.3 ms by the clock, and
its first render is the file's time 0 (read from the process's own beat, polled every
0.2 ms). A note-on reaches the sound at the next render after it arrives: that delay is
what is measured, median and worst. A sound card adds its own buffer and the player's
ring (FILL, 1024 frames) after it; JACK's dummy driver at 256-frame periods adds 5.3 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import commit, cpu, report_json, scratch  # noqa: E402


def main() -> int:
    import mido

    from pete_osc.outputs.synth import RATE
    from pete_osc.outputs.synth_output import _Process

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notes", type=int, default=40)
    parser.add_argument("--gap", type=float, default=0.5)
    parser.add_argument("--json")
    args = parser.parse_args()
    work = scratch("pete-latency-")
    out = work / "latency.wav"
    process = _Process(str(out), RATE)
    first = process.beat.value
    while process.beat.value == first:  # the first render: the file's time 0
        time.sleep(0.0002)
    origin = process.beat.value
    time.sleep(0.3)
    process.put(bytes(mido.Message("program_change", program=80).bytes()))  # a lead
    process.put(bytes(mido.Message("control_change", control=91, value=0).bytes()))  # dry
    sent = []
    for i in range(args.notes):
        time.sleep(args.gap + (i % 7) * 0.0031)  # (not in step with the renders)
        note = 60 + (i % 2) * 12
        sent.append(time.monotonic())
        process.put(bytes(mido.Message("note_on", note=note, velocity=110).bytes()))
        time.sleep(0.08)
        process.put(bytes(mido.Message("note_off", note=note).bytes()))
    time.sleep(0.5)
    process.close()
    with wave.open(str(out)) as f:
        pcm = np.frombuffer(f.readframes(f.getnframes()), "<i2").reshape(-1, 2)
    loud = np.abs(pcm).max(axis=1) > 30  # (-60 dB)
    delays = []
    for at in sent:
        start = int((at - origin) * RATE) - RATE // 100  # from 10 ms before the message
        hit = np.argmax(loud[start:start + RATE // 5])
        delays.append((start + hit) / RATE + origin - at)
    delays_ms = sorted(d * 1e3 for d in delays)
    result = {"machine": cpu(), "commit": commit(), "notes": args.notes,
              "median_ms": round(statistics.median(delays_ms), 2),
              "worst_ms": round(delays_ms[-1], 2), "best_ms": round(delays_ms[0], 2)}
    report_json(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
