"""What capture costs: the cores a run's capture threads keep busy, with no model at all.

The CLI runs for a fixed time with the replay engine (its answers cost next to nothing) on
1, 4 and 8 sources, each the shared clip playing in real time (24 fps, 640x360 H.264), at
--fps 2 as on stage; the process's CPU time (user + system, from /proc) over the wall
time is the cores it used. A run on blank frames (``--source none``) is the floor: the
show, the parser and the sender alone. Issue 25's target: four sources at most 0.15 of a
core here (each source decoding only the frames that can be taken).

    python bench/capture.py [--seconds 20] [--sources 1,4,8] [--write]
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, commit, cpu, report, scratch  # noqa: E402

CLIP = ROOT.parent / "shared" / "data" / "big_buck_bunny.mp4"
ANSWER = "color: amber\nmood: tense\nenergy: 0.5\n"


def cpu_seconds(pid: int) -> float | None:
    """User + system seconds of ``pid`` so far (its threads included)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(sources: list[str], seconds: float, folder: Path) -> dict:
    answers = folder / "answers.txt"
    answers.write_text(ANSWER)
    argv = [sys.executable, "-m", "pete_osc", "run", "--engine", "replay", "--replay",
            str(answers), "--loop", "--fps", "2", "--quiet", "--director",
            str(ROOT / "DIRECTOR.md")]
    for i, source in enumerate(sources):
        argv += ["--source", f"s{i + 1}={source}"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=folder)
    time.sleep(3.0)  # start-up (imports, the sources opening) is not capture
    begin, t0 = cpu_seconds(proc.pid), time.monotonic()
    time.sleep(seconds)
    end, t1 = cpu_seconds(proc.pid), time.monotonic()
    proc.send_signal(2)
    err = proc.communicate(timeout=30)[1]
    if begin is None or end is None:
        raise SystemExit(f"the run ended early:\n{err[-2000:]}")
    summary = [line for line in err.splitlines() if "stopped." in line]
    return {"cores": (end - begin) / (t1 - t0), "summary": summary[-1] if summary else ""}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--sources", default="1,4,8")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    if not CLIP.is_file():
        print(f"{CLIP} is absent (it lives in ../shared beside the checkout)", file=sys.stderr)
        return 2
    folder = scratch("capture-")
    rows = [("blank frames (no decoding)", run(["none"], args.seconds, folder))]
    for n in [int(x) for x in args.sources.split(",")]:
        rows.append((f"{n} x the clip", run([str(CLIP)] * n, args.seconds, folder)))
        print(f"{rows[-1][0]}: {rows[-1][1]['cores']:.2f} cores", file=sys.stderr, flush=True)
    lines = ["### What capture costs: cores busy with the replay engine (no model)", "",
             f"- machine: {cpu()}", f"- date: {datetime.date.today()}, commit {commit()}",
             f"- command: `python bench/capture.py --seconds {args.seconds:g} --sources "
             f"{args.sources}`",
             "- `pete-osc run --engine replay --fps 2` on N copies of the shared clip (24 fps, "
             "640x360, H.264, played in real time); CPU time of the process over "
             f"{args.seconds:g} s after a 3 s start", "",
             "| sources | cores busy | the run's summary |", "| --- | ---: | --- |"]
    lines += [f"| {name} | {r['cores']:.2f} | {r['summary'].split('stopped. ')[-1][:120]} |"
              for name, r in rows]
    return report(lines, write=args.write)


if __name__ == "__main__":
    raise SystemExit(main())
