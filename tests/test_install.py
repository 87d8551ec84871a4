"""install.sh names a short disk before pip starts, in one line per file system.

Its own run is CI's first step (.ci/run); here a copy runs with a `df` that reports what
a test chooses and a .venv whose pip stops the script right after the check."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(sys.platform == "darwin",
                                reason="the messages name the torch extras, which are Linux's")


def install(tmp_path: Path, free_kb: list[tuple[str, int]], *args: str) -> subprocess.CompletedProcess:
    """Run a copy of install.sh; `df` answers a row per (mount point, free KiB), in turn."""
    clone = tmp_path / "clone"
    clone.mkdir()
    shutil.copy(ROOT / "install.sh", clone)
    venv_bin = clone / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").write_text("#!/bin/sh\necho \"pip $*\" >&2\nexit 3\n")
    (venv_bin / "python").chmod(0o755)
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    rows = "".join(f"/dev/vd{i} 999999999 0 {kb} 1%% {mount}\\n"
                   for i, (mount, kb) in enumerate(free_kb))
    (bin_ / "df").write_text("#!/bin/sh\nprintf 'Filesystem 1024-blocks Used Available "
                             f"Capacity Mounted on\\n{rows}'\n")
    (bin_ / "df").chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_}:{os.environ['PATH']}", PYTHON=sys.executable,
               TMPDIR=str(tmp_path))
    return subprocess.run(["bash", str(clone / "install.sh"), "--no-model", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def short_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " GB free on " in line]


def test_a_short_disk_is_named_before_pip_starts(tmp_path):
    proc = install(tmp_path, [("/", 3 * 1048576), ("/tmp", 1 * 1048576)])
    assert proc.returncode == 3            # the stand-in pip stopped it, after the check
    assert short_lines(proc.stderr) == [
        'install.sh: only 3 GB free on / (extras torch,remote need about 7 GB); '
        'pip may fail with "No space left on device"',
        'install.sh: only 1 GB free on /tmp (extras torch,remote need about 7 GB); '
        'pip may fail with "No space left on device"']
    assert proc.stderr.index("GB free on") < proc.stderr.index("pip install")


def test_one_file_system_is_named_once(tmp_path):
    proc = install(tmp_path, [("/", 1048576), ("/", 1048576)])
    assert proc.returncode == 3
    assert short_lines(proc.stderr) == [
        'install.sh: only 1 GB free on / (extras torch,remote need about 7 GB); '
        'pip may fail with "No space left on device"']


def test_enough_space_says_nothing(tmp_path):
    proc = install(tmp_path, [("/", 80 * 1048576), ("/tmp", 9 * 1048576)])
    assert proc.returncode == 3 and "pip install" in proc.stderr
    assert short_lines(proc.stderr) == []
