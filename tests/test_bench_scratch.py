"""bench/common.scratch: a benchmark's 1.5 GB model folder is gone when it exits.

Benchmarks that left their random FastVLM-0.5B behind filled the disk, and CI's install
then failed with "No space left on device"."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"

SCRIPT = f"""
import sys, time
sys.path.insert(0, {str(BENCH)!r})
from common import scratch
folder = scratch("weights-")
(folder / "model.safetensors").write_bytes(b"0" * 1024)
print(folder, flush=True)
how = sys.argv[1]
if how == "raise":
    raise RuntimeError("a benchmark that failed")
if how == "wait":
    time.sleep(60)
"""


def run(tmp_path: Path, how: str) -> tuple[subprocess.CompletedProcess, Path]:
    env = dict(os.environ, TMPDIR=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", SCRIPT, how], env=env, capture_output=True,
                          text=True, timeout=60)
    return proc, Path(proc.stdout.strip())


@pytest.mark.parametrize("how", ["return", "raise"])
def test_the_folder_goes_at_exit(tmp_path, how):
    proc, folder = run(tmp_path, how)
    assert (proc.returncode == 0) == (how == "return"), proc.stderr
    assert folder.parent == tmp_path and folder.name.startswith("weights-")
    assert not folder.exists()
    assert list(tmp_path.iterdir()) == []


def test_the_folder_goes_when_timeout_stops_the_benchmark(tmp_path):
    env = dict(os.environ, TMPDIR=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, "wait"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        folder = Path(proc.stdout.readline().strip())
        assert (folder / "model.safetensors").stat().st_size == 1024   # there while it runs
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()
    assert not folder.exists()
    assert list(tmp_path.iterdir()) == []
