"""Memory over a long show: does pete-osc's RSS grow with the frames?

The CLI runs N frames with the replay engine (no model: what grows is pete-osc's own
bookkeeping, not a framework's cache), blank frames taken as fast as the engine goes,
DIRECTOR text of nine keys per answer, and a mapping that sends every key as OSC to a
local UDP port (nobody listens: the sender's work is the same). The process's RSS is
read from /proc every 0.2 s; the growth is a straight line fitted to the samples after the
first 10% of the frames (warm-up), given per 100,000 frames.

    python bench/memory.py --frames 20000 [--tree PATH] [--write]

``--tree PATH`` runs the pete_osc package of another checkout (the landed commit, say,
from ``git worktree add``), so both are measured on this machine in one session.
"""

from __future__ import annotations

import argparse
import datetime
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, commit, cpu, report, scratch  # noqa: E402

ANSWER = ("color: amber\nmood: tense\nenergy: 0.{i}\ntempo: 12{i}\nbrightness: 0.{i}\n"
          "motion: 0.{i}\nscene: a dark stage {i}\nperson: a dancer\nobject: a red chair\n")


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def run(tree: Path, frames: int, folder: Path) -> dict:
    answers = folder / "answers.txt"
    answers.write_text("".join(f"--- frame {i}\n" + ANSWER.format(i=i) for i in range(10)))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mapping = folder / "all.yaml"
    mapping.write_text(f"osc:\n  main: {{port: {port}}}\nroutes:\n" + "".join(
        f"  - {{event: {k}, address: /{k}, args: [$word]}}\n"
        for k in ("color", "mood", "energy", "tempo", "brightness", "motion", "scene",
                  "person", "object")))
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONUNBUFFERED="1")
    argv = [sys.executable, "-m", "pete_osc", "run", "--engine", "replay", "--replay",
            str(answers), "--replay-speed", "100000", "--loop", "--every-frame", "--fps", "0",
            "--max-frames", str(frames), "--mapping", str(mapping), "--quiet",
            "--director", str(tree / "DIRECTOR.md")]
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=folder)
    samples = []  # (seconds, kB)
    while proc.poll() is None:
        kb = rss_kb(proc.pid)
        if kb is not None:
            samples.append((time.monotonic() - started, kb))
        time.sleep(0.2)
    err = proc.stderr.read()
    if proc.returncode != 0:
        raise SystemExit(f"the run failed:\n{err}")
    summary = [line for line in err.splitlines() if "stopped." in line][-1]
    took = samples[-1][0]
    # Frames come at a steady rate once warm: a sample's time stands for its frame count.
    warm = [(t / took * frames, kb) for t, kb in samples if t >= 0.1 * took]
    n = len(warm)
    mx = sum(x for x, _ in warm) / n
    my = sum(y for _, y in warm) / n
    slope = (sum((x - mx) * (y - my) for x, y in warm)
             / max(1e-9, sum((x - mx) ** 2 for x, _ in warm)))  # kB per frame
    return {"start_kb": warm[0][1], "end_kb": samples[-1][1], "peak_kb": max(k for _, k in samples),
            "per_100k_kb": slope * 100_000, "seconds": took, "summary": summary}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--tree", type=Path, action="append", default=None,
                        help="a checkout whose pete_osc to run (default: this one); repeat "
                             "to measure several in one session")
    parser.add_argument("--write", action="store_true", help="append to docs/benchmarks.md")
    args = parser.parse_args()
    trees = args.tree or [ROOT]
    folder = scratch("pete-memory-")
    lines = [f"### Memory over {args.frames:,} frames (replay engine, nine keys a frame, nine "
             "OSC routes)", "",
             f"{cpu()}, Python {sys.version.split()[0]}, {datetime.date.today()}, commit "
             f"{commit()}. Command: `python bench/memory.py --frames {args.frames}"
             + "".join(f" --tree {t}" for t in args.tree or []) + "`", "",
             "| pete_osc from | frames/s | RSS after 10% | RSS at the end | growth per 100k frames |",
             "|---|---:|---:|---:|---:|"]
    for tree in trees:
        got = run(tree.resolve(), args.frames, folder)
        name = "this checkout" if tree.resolve() == ROOT else f"{tree} ({_commit_of(tree)})"
        lines.append(f"| {name} | {args.frames / got['seconds']:.0f} | "
                     f"{got['start_kb'] / 1024:.1f} MB | {got['end_kb'] / 1024:.1f} MB | "
                     f"{got['per_100k_kb'] / 1024:+.2f} MB |")
        print(got["summary"], file=sys.stderr)
    return report(lines, write=args.write)


def _commit_of(tree: Path) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree,
                              capture_output=True, text=True).stdout.strip() or "-"
    except OSError:
        return "-"


if __name__ == "__main__":
    sys.exit(main())
