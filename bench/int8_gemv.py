"""The CPU's int8 GEMV (issue 25): what one decode step's matrices cost through the kernel
the torch engine uses on a CPU (``aten._weight_int8pack_mm``, see pete_osc/engines/int8.py),
against fp32 and bf16 matmuls and the machine's copy bandwidth, at FastVLM-0.5B's shapes.

    python bench/int8_gemv.py [--threads 2] [--inductor] [--write]

A decode step reads every weight once from memory, so each matrix is timed cold: enough
copies of it are cycled through that none is still in the caches (512 MB in all), one
row of activations each call. "GB/s" is the weight's bytes over the time.

``--inductor`` adds a column: the same int8 product written as a reduction (the int8
row widened, multiplied by the activations, summed, scaled) and compiled by
torch.compile's inductor into one C++ loop, a candidate for a kernel of our own; its
largest difference to the int8 kernel's result, relative to the result's largest value,
is printed on stderr.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from common import commit, cpu, report  # noqa: E402

# (name, out, in, per step): FastVLM-0.5B's language model (Qwen2-0.5B), 24 layers
SHAPES = [("q/k/v", 1152, 896, 24), ("o", 896, 896, 24), ("gate+up", 9728, 896, 24),
          ("down", 896, 4864, 24), ("head", 151936, 896, 1)]
CYCLE = 512 * 2**20


def cold(torch, make, call, nbytes: int, reps: int = 3) -> float:
    """Milliseconds of ``call`` on one of enough copies (``make``) to leave the caches."""
    copies = [make() for _ in range(max(2, CYCLE // nbytes))]
    for c in copies:
        call(c)
    t0 = time.perf_counter()
    for _ in range(reps):
        for c in copies:
            call(c)
    return (time.perf_counter() - t0) / (reps * len(copies)) * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--inductor", action="store_true",
                    help="also time the product as a compiled reduction (needs a C++ compiler)")
    args = ap.parse_args()
    import torch

    def reduction(x, w, scale):  # the int8 kernel's product, as inductor may fuse it
        return ((x.float() * w.float()).sum(-1) * scale.float())[None, :]

    reduced = torch.compile(reduction, dynamic=False) if args.inductor else None

    if args.threads:
        torch.set_num_threads(args.threads)
    big, into = torch.ones(CYCLE, dtype=torch.uint8), torch.zeros(CYCLE, dtype=torch.uint8)
    copy_ms = cold(torch, lambda: big, lambda b: into.copy_(b), CYCLE, 5)
    copy_gbs = 2 * CYCLE / copy_ms / 1e6  # read and write
    rows, step = [], {"int8": 0.0, "fp32": 0.0, "bf16": 0.0}
    for name, n, k, per in SHAPES:
        x32 = torch.randn(1, k)
        x16 = x32.bfloat16()
        scale = torch.rand(n, dtype=torch.bfloat16)
        int8 = lambda: torch.randint(-127, 127, (n, k), dtype=torch.int8)  # noqa: E731
        ms = {
            "int8": cold(torch, int8, lambda w: torch.ops.aten._weight_int8pack_mm(x16, w, scale),
                         n * k),
            "fp32": cold(torch, lambda: torch.randn(n, k), lambda w: x32 @ w.T, 4 * n * k),
            "bf16": cold(torch, lambda: torch.randn(n, k, dtype=torch.bfloat16),
                         lambda w: x16 @ w.T, 2 * n * k),
        }
        if reduced is not None:
            w = int8()
            want = torch.ops.aten._weight_int8pack_mm(x16, w, scale).float()
            off = (reduced(x16, w, scale) - want).abs().max() / want.abs().max()
            print(f"{name}: the reduction's largest difference {off.item():.1e}", file=sys.stderr)
            ms["inductor"] = cold(torch, int8, lambda w: reduced(x16, w, scale), n * k)
            step.setdefault("inductor", 0.0)
        for kind in step:
            step[kind] += ms[kind] * per
        rows.append(f"| {name} | {n} x {k} | {per} | {ms['int8'] * 1000:.0f} µs "
                    f"({n * k / ms['int8'] / 1e6:.1f} GB/s) | {ms['fp32'] * 1000:.0f} µs "
                    f"({4 * n * k / ms['fp32'] / 1e6:.1f}) | {ms['bf16'] * 1000:.0f} µs "
                    f"({2 * n * k / ms['bf16'] / 1e6:.1f}) |"
                    + (f" {ms['inductor'] * 1000:.0f} µs ({n * k / ms['inductor'] / 1e6:.1f}) |"
                       if reduced is not None else ""))
        print(rows[-1], file=sys.stderr, flush=True)
    params = sum(n * k * per for _, n, k, per in SHAPES)
    lines = [
        "### The CPU's int8 GEMV at FastVLM-0.5B's shapes (`bench/int8_gemv.py`)",
        "",
        f"- machine: {cpu()}, torch {torch.__version__}, {torch.get_num_threads()} threads",
        f"- date: {datetime.date.today()}, commit {commit()}",
        f"- command: `python bench/int8_gemv.py{f' --threads {args.threads}' if args.threads else ''}"
        f"{' --inductor' if reduced is not None else ''}`",
        f"- copy bandwidth (a 512 MB copy, read + write): **{copy_gbs:.1f} GB/s**; one row "
        "of activations a call, weights cold (cycled through 512 MB of copies)",
        "",
        "| matrix | out x in | per step | int8 (`_weight_int8pack_mm`) | fp32 (GB/s) "
        "| bf16 (GB/s) |" + (" int8, inductor's reduction (GB/s) |" if reduced is not None else ""),
        "| --- | --- | ---: | ---: | ---: | ---: |" + (" ---: |" if reduced is not None else ""),
        *rows,
        "",
        f"A step's matrices ({params / 1e6:.0f} M weights): int8 **{step['int8']:.1f} ms** "
        f"(floor at the copy bandwidth: {params / copy_gbs / 1e6:.1f} ms), fp32 "
        f"{step['fp32']:.1f} ms, bf16 {step['bf16']:.1f} ms"
        + (f", inductor's reduction {step['inductor']:.1f} ms" if reduced is not None else "")
        + ".",
    ]
    return report(lines, args.out, args.write)


if __name__ == "__main__":
    sys.exit(main())
