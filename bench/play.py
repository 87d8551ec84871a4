"""What --play costs the show (issue 30): frame -> first OSC message with the built-in
synth playing and without, the same run otherwise, alternated on this machine.

    python bench/play.py [--model FOLDER] [--frames 20] [--rounds 2] [--json FILE]

The mapping sends energy and mood to an OSC target (a port nobody listens on); "with"
adds the shipped play mapping's synth targets and --play (the sound card where one can be
opened here, ALSA's null device on a machine without one, else a WAV file). The source is
the shipped bench frames at --fps 2; the model is the tiny random FastVLM with Qwen2's
tokenizer unless --model is given (torch engine, this machine's default device). The
median of each run's frame -> first OSC message (--metrics' capture_to_sent) is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from common import commit, cpu, report_json, scratch  # noqa: E402

OSC = """osc:
  out: {host: 127.0.0.1, port: 9}
"""
OSC_ROUTES = """  - {event: energy, to: out, address: /pete/energy}
  - {event: mood, to: out, address: /pete/mood}
"""


def destination(work: Path) -> str:
    from pete_osc.outputs.player import audio_devices, check_destination

    for name in ["default"] + audio_devices():
        if check_destination(name) is None:
            return name
    return str(work / "show.wav")


def run(model: str, mapping: Path, frames: int, play: str | None, work: Path) -> float:
    metrics = work / "metrics.jsonl"
    metrics.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "pete_osc", "run", "--engine", "torch", "--model", model,
            "--source", str(ROOT / "pete_osc" / "run" / "bench_frames"), "--fps", "2",
            "--loop", "--max-frames", str(frames), "--mapping", str(mapping),
            "--metrics", str(metrics)] + (["--play", play] if play else [])
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:
        sys.exit(proc.stderr[-2000:])
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    sent = [r["capture_to_sent"] for r in records[2:] if r.get("capture_to_sent")]
    return statistics.median(sent) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--play", default=None, metavar="DEVICE|FILE.wav",
                        help="where the synth plays (default: the first device that opens)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    work = scratch("play-bench")
    model = args.model
    if model is None:
        from support.models import build_fastvlm_torch, qwen_ranks

        model = str(build_fastvlm_torch(work / "model", qwen=qwen_ranks()))
    plain = work / "plain.yaml"
    plain.write_text(OSC + "routes:\n" + OSC_ROUTES)
    play = (ROOT / "mappings" / "play.yaml").read_text()
    played = work / "played.yaml"
    played.write_text(OSC + play.replace("routes:\n", "routes:\n" + OSC_ROUTES, 1))
    dest = args.play or destination(work)
    result = {"machine": cpu(), "commit": commit(), "play": dest, "without_ms": [],
              "with_ms": []}
    for _ in range(args.rounds):
        result["without_ms"].append(round(run(model, plain, args.frames, None, work), 2))
        result["with_ms"].append(round(run(model, played, args.frames, dest, work), 2))
        print(f"without --play {result['without_ms'][-1]} ms, with (on {dest}) "
              f"{result['with_ms'][-1]} ms", file=sys.stderr)
    a, b = statistics.median(result["without_ms"]), statistics.median(result["with_ms"])
    result["ratio"] = round(b / a, 3)
    report_json(result, args.json)


if __name__ == "__main__":
    main()
