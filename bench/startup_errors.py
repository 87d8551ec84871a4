"""How long a user waits for the one-line error when a run cannot start.

    .venv/bin/python bench/startup_errors.py [--repeat 3] [--write]

Each case runs ``pete-osc run`` as a subprocess on the shared clip (or a camera number
when the clip is absent), with an empty Hugging Face cache, and times it to exit code 2:
  - the default model, not in the cache, no network, HF_HUB_OFFLINE unset,
  - the same with HF_HUB_OFFLINE=1,
  - --model naming a folder that does not exist,
  - four problems at once (DIRECTOR.md, mapping, model, camera).
Prints a Markdown table (median and worst of --repeat runs, error lines); --write
appends it to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))  # the random-weight model builders (tests/support)

from common import append, commit, cpu  # noqa: E402

CLIP = ROOT.parent / "shared" / "data" / "big_buck_bunny.mp4"


def cases(source: str) -> list[tuple[str, list[str], dict]]:
    return [
        ("default model, not cached, offline", ["--source", source], {}),
        ("the same, HF_HUB_OFFLINE=1", ["--source", source], {"HF_HUB_OFFLINE": "1"}),
        ("--model /nonexistent", ["--source", source, "--model", "/nonexistent"], {}),
        ("four problems at once", ["--source", "7", "--director", "nothere.md", "--mapping",
                                   "nosuch", "--model", "./nope"], {}),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    source = str(CLIP) if CLIP.is_file() else "0"
    rows = []
    with tempfile.TemporaryDirectory() as hf_home:
        base = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
        base["HF_HOME"] = hf_home  # nothing cached
        for name, argv, extra in cases(source):
            times, lines = [], 0
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                proc = subprocess.run([sys.executable, "-m", "pete_osc", "run", *argv],
                                      capture_output=True, text=True, cwd=ROOT,
                                      env=dict(base, **extra), timeout=300)
                times.append(time.perf_counter() - t0)
                assert proc.returncode == 2, proc.stderr
                lines = sum(l.startswith("pete-osc: error:") for l in proc.stderr.splitlines())
            rows.append(f"| {name} | {statistics.median(times):.2f} s | {max(times):.2f} s | {lines} |")
    table = "\n".join([
        "### Start-up failures: time to the one-line error",
        "",
        f"{cpu()}; {datetime.date.today()}; commit {commit()}; "
        f"`python bench/startup_errors.py --repeat {args.repeat}`",
        "",
        "| case | median | worst | error lines |",
        "| --- | --- | --- | --- |",
        *rows,
        "",
    ])
    print(table)
    if args.write:
        append(table)


if __name__ == "__main__":
    main()
