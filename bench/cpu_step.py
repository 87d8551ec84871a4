"""Where a CPU decode pass goes (issue 25, the CPU target): one answer of the torch engine
(int8, the CPU default) under PyTorch's profiler, its operators grouped, per pass.

    python bench/cpu_step.py [--frames 3] [--model FOLDER] [--write]

FastVLM-0.5B shapes with random weights (built unless ``--model``), Qwen2's tokenizer, the
grammar and jump-forward, 128 px, the shipped bench frames. The frames are answered
without the profiler first (TTFT and time per pass, medians), then one more under it. The
profiler's operator times (self CPU time, the profiled answer's prefill included) are
split into the int8 matrices (``aten._weight_int8pack_mm``: the int8 layers and the
output layer), the matrices of the first layers kept in float (``aten.mm``, ``addmm``:
see pete_osc/engines/int8.py), the vision tower's convolutions, attention, and everything
else (norms, rotary embedding, copies, the grammar's mask), each over the answer's passes.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import commit, cpu, report  # noqa: E402
from sparse_head import answer, full_engine  # noqa: E402

GROUPS = [
    ("int8 matrices (`_weight_int8pack_mm`)", ("aten::_weight_int8pack_mm",)),
    ("float matrices of the kept first layers (`mm`, `addmm`)", ("aten::mm", "aten::addmm")),
    ("vision tower's convolutions", ("aten::mkldnn_convolution", "aten::_slow_conv2d_forward")),
    ("attention", ("aten::_scaled_dot_product_flash_attention_for_cpu",)),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--model", default=None, help="a FastVLM-0.5B-shaped folder (default: built)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    import torch
    from torch.profiler import ProfilerActivity, profile

    engine, frames = full_engine(args.model)
    answer(engine, frames[0])  # warm
    plain = [answer(engine, frames[i % len(frames)])[1:] for i in range(args.frames)]
    for ttft, per_pass, passes in plain:
        print(f"TTFT {ttft * 1000:.1f} ms, {per_pass * 1000:.1f} ms a pass ({passes} passes)",
              file=sys.stderr, flush=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        _, ttft, per_pass, passes = answer(engine, frames[1 % len(frames)])
    self_ms = {e.key: e.self_cpu_time_total / 1000 for e in prof.key_averages()}
    total = sum(self_ms.values())
    rows, grouped = [], 0.0
    for name, keys in GROUPS:
        ms = sum(self_ms.get(k, 0.0) for k in keys)
        grouped += ms
        rows.append((name, ms))
    rows.append(("everything else (norms, rotary, copies, the grammar's mask, ...)", total - grouped))
    ttfts, per_passes, counts = zip(*plain)
    lines = [
        "### Where a CPU decode pass goes (`bench/cpu_step.py`)",
        "",
        f"- machine: {cpu()}, torch {torch.__version__}, {torch.get_num_threads()} threads",
        f"- date: {datetime.date.today()}, commit {commit()}",
        f"- command: `python bench/cpu_step.py --frames {args.frames}`",
        "- FastVLM-0.5B shapes, random weights, int8 (the CPU default), Qwen2's tokenizer, "
        "grammar and jump-forward, 128 px, the shipped bench frames",
        f"- without the profiler ({args.frames} frames, medians): TTFT "
        f"{statistics.median(ttfts) * 1000:.1f} ms, **{statistics.median(per_passes) * 1000:.1f} ms "
        f"a pass**, {statistics.median(counts)} passes a frame",
        f"- the profiled answer: {passes} passes after the prefill, {per_pass * 1000:.1f} ms a pass; "
        f"operators' self CPU time {total:.0f} ms in all (prefill included)",
        "",
        "| operators | ms in the answer | ms a pass (over its passes) | share |",
        "| --- | ---: | ---: | ---: |",
        *(f"| {name} | {ms:.0f} | "
          f"{'(the prefill)' if 'vision' in name else f'{ms / max(1, passes):.1f}'} | "
          f"{ms / total:.0%} |" for name, ms in rows),
    ]
    return report(lines, args.out, args.write)


if __name__ == "__main__":
    sys.exit(main())
