"""Every benchmark this machine can run, in one command, appended to docs/benchmarks.md.

    .venv/bin/python bench/run.py [--quick] [--no-write]

- torch engine (if torch is installed): FastVLM-0.5B shapes with random weights; on CUDA
  the fast path at 64..1024 px, with and without the DIRECTOR prefix cache and with the
  grammar, beside eager decoding and transformers' `generate` per frame; elsewhere (CPU,
  Apple MPS) eager decoding at 64 and 128 px, with and without the prefix cache, with
  the grammar, and the `generate` baseline; plus the 20-token-prompt comparison. Each
  table has the decode floor (weights per token over the measured bandwidth).
- mlx engine (if mlx-vlm is installed): FastVLM-0.5B shapes, prefix cache on and off;
  on a Mac at 64..1024 px, elsewhere (MLX's slow CPU backend) one frame at 64 px.
- parse -> map -> send per event, beside a bare python-osc send.
- docs/latency.png redrawn from all tables (if matplotlib is installed).
Runs unchanged on an Apple Silicon Mac: please send us your docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def plan(quick: bool) -> list[list[str]]:
    frames = ["--frames", "2" if quick else "4"]
    steps: list[list[str]] = []
    if available("torch") and available("timm"):
        import torch

        if torch.cuda.is_available():
            sizes = "256" if quick else "64,128,256,512,1024"
            steps.append(["torch_engine.py", "--sizes", sizes, "--modes",
                          "fast,fast-noprefix,fast+grammar,eager,naive", "--eager-sizes", "256",
                          *frames, "--tokens", "50"])
            steps.append(["torch_engine.py", "--sizes", "128", "--modes", "fast,fast-noprefix",
                          *frames, "--tokens", "50", "--short-prompt"])
            steps.append(["sources.py", "--frames", "12" if quick else "24", "--tokens", "24"])
        else:
            sizes = "64" if quick else "64,128"
            steps.append(["torch_engine.py", "--modes", "eager,eager-noprefix,eager+grammar,naive",
                          "--eager-sizes", sizes, *frames, "--tokens", "20"])
            steps.append(["torch_engine.py", "--modes", "eager,eager-noprefix", "--eager-sizes",
                          "128", *frames, "--tokens", "20", "--short-prompt"])
            steps.append(["sources.py", "--frames", "4" if quick else "8", "--tokens", "16"])
    if available("mlx_vlm"):
        metal = platform.system() == "Darwin" and platform.machine() == "arm64"
        if metal:
            sizes = "64" if quick else "64,128,256,512,1024"
            steps.append(["frame_latency.py", "--full", "--sizes", sizes, "--modes",
                          "cached,noprefix", *frames, "--max-tokens", "20"])
        else:
            # MLX's CPU backend needs minutes per full-size frame without the prefix cache.
            steps.append(["frame_latency.py", "--full", "--sizes", "64", "--modes",
                          "cached,noprefix", "--frames", "1", "--max-tokens", "10"])
    steps.append(["mapping_cost.py", "--events", "5000" if quick else "20000"])
    return steps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer sizes and frames (a smoke run)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs alone")
    args = ap.parse_args()
    failed = []
    for step in plan(args.quick):
        command = [sys.executable, str(BENCH / step[0]), *step[1:]] + ([] if args.no_write else ["--write"])
        print("bench/run.py: " + " ".join(command[1:]), file=sys.stderr, flush=True)
        if subprocess.run(command).returncode != 0:
            failed.append(step[0])
    if not args.no_write and available("matplotlib"):
        subprocess.run([sys.executable, str(BENCH / "plot.py")])
    if failed:
        print(f"bench/run.py: failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
