"""The built-in synth (issue 30, pete_osc/outputs/synth.py) on this machine: how much of
one core it takes to make sound for 8, 16 and 32 voices, and how exactly an offline
render puts each note where its message is.

    python bench/synth.py [--seconds 10] [--voices 8,16,32] [--json FILE]

- CPU: ``--seconds`` of sound rendered in the synth's own chunks (512 samples, 48 kHz)
  with N voices held (pads, two detuned oscillators each: the dearest patch; and plucks,
  struck again every 0.2 s), process CPU time over the sound's length: the fraction of one core a
  real-time player of the same core would need.
- Offline timing: 200 notes at random times and pitches rendered by ``render_timed``
  (what ``pete-osc export -o show.wav`` does): each note's onset in the sound (first
  sample above -80 dB after its time) against its message's time: median and worst.
  (The real-time path, message to sound through an audio device, is not built yet.)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import mido  # noqa: E402
import numpy as np  # noqa: E402
from common import commit, cpu, report_json  # noqa: E402

from pete_osc.outputs.synth import CHUNK, RATE, Synth, render_timed  # noqa: E402


def cpu_share(voices: int, seconds: float, program: int) -> float:
    synth = Synth(voices=voices)
    synth.send(mido.Message("program_change", program=program))
    for i in range(voices):
        synth.send(mido.Message("note_on", note=36 + (i * 7) % 48, velocity=100))
    t0 = time.process_time()
    for chunk in range(int(seconds * RATE / CHUNK)):
        if program < 48 and chunk % 19 == 18:  # plucks die away: strike them all again
            for i in range(voices):
                synth.send(mido.Message("note_on", note=36 + (i * 7) % 48, velocity=90))
        synth.render(CHUNK)
    return (time.process_time() - t0) / seconds


def offline_timing(notes: int = 200) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    times = np.sort(rng.uniform(0.05, 40.0, notes))
    times = times[np.diff(np.concatenate([[0.0], times])) > 0.05]  # apart, so onsets separate
    errors = []
    for at in times[:40]:
        note = int(rng.integers(40, 80))
        sound = render_timed([(0.0, mido.Message("program_change", program=81)),
                              (at % 1.0 + 0.05, mido.Message("note_on", note=note, velocity=100)),
                              (at % 1.0 + 0.3, mido.Message("note_off", note=note))], 1.5)
        start = int(np.argmax(np.abs(sound).max(axis=1) > 1e-4))
        errors.append(abs(start / RATE - (at % 1.0 + 0.05)) * 1000)
    return statistics.median(errors), max(errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--voices", default="8,16,32")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    result = {"machine": cpu(), "commit": commit(), "cpu": {}}
    for n in (int(v) for v in args.voices.split(",")):
        pads, plucks = cpu_share(n, args.seconds, 89), cpu_share(n, args.seconds, 0)
        result["cpu"][n] = {"pads": round(pads, 3), "plucks": round(plucks, 3)}
        print(f"{n} voices: {pads:.3f} of a core (pads), {plucks:.3f} (plucks)", file=sys.stderr)
    median, worst = offline_timing()
    result["offline_onset_ms"] = {"median": round(median, 3), "worst": round(worst, 3)}
    print(f"offline render: onset {median:.3f} ms from its message (median), {worst:.3f} "
          "worst", file=sys.stderr)
    report_json(result, args.json)


if __name__ == "__main__":
    main()
