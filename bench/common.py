"""What every benchmark writes beside its numbers: the machine, the commit, the file."""

from __future__ import annotations

import atexit
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "benchmarks.md"


def cpu() -> str:
    """'Linux x86_64, AMD EPYC ..., 2 cores'."""
    sys.path.insert(0, str(ROOT))
    from pete_osc.run.bench import cpu_name

    name = cpu_name()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    return f"{platform.system()} {platform.machine()}, {name}, {cores} cores"


def scratch(prefix: str) -> Path:
    """A new folder under the temp dir, removed when the benchmark exits.

    A FastVLM-0.5B of random weights is 1.5 GB: a benchmark that left its folder behind
    filled this machine's disk after a few dozen runs, and CI's install failed for lack
    of space. The folder goes at a normal exit, an exception, Ctrl-C and a SIGTERM
    (``timeout``'s signal); only a SIGKILL leaves it.
    """
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        # The default SIGTERM ends Python without running atexit.
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    return folder


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True).stdout.strip() or "-"
    except OSError:
        return "-"


def append(table: str) -> None:
    """Add a table (with its own heading) to docs/benchmarks.md."""
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmarks\n\nEvery table says the machine, the date and the "
                           "command that made it. Add your own machine's with `--write`.\n\n")
    with RESULTS.open("a") as f:
        f.write("\n" + table)


def report(lines: list[str], out: str | None = None, write: bool = False) -> int:
    """Print a benchmark's table; also to ``out`` and, with ``write``, docs/benchmarks.md."""
    table = "\n".join(lines) + "\n"
    print(table)
    if out:
        Path(out).write_text(table)
    if write:
        append(table)
    return 0


def report_json(result: dict, out: str | None = None) -> int:
    """Print a benchmark's result as JSON; also into ``out`` (--json FILE)."""
    print(json.dumps(result))
    if out:
        Path(out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


class FrameReports:
    """A tap (see pete_osc.run.taps) that keeps a show's frame reports."""

    name = "the benchmark's frame reports"

    def __init__(self):
        self.reports = []

    def take(self, record) -> None:
        from pete_osc.records import FrameReport

        if isinstance(record, FrameReport):
            self.reports.append(record)

    def close(self) -> None:
        pass
