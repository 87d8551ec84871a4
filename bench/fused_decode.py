"""The fused decode step (pete_osc/engines/fused.py) on its own, on a CUDA GPU: its logits
against transformers' step at the same positions over the same static cache, the GPU
time of one replayed step, and where that time goes (torch profiler).

    python bench/fused_decode.py [--steps 32] [--qwen] [--tune] [--write]

FastVLM-0.5B shapes with random weights, bf16. After one frame fills the cache, each
step feeds a random token at the next position to transformers' eager step, then to the
fused step (both write that position's key and value), and compares their logits.
``--tune`` first tries other launch shapes (engines.fused.SHAPES: rows per program, warps,
attention blocks, down's K in parts), one at a time from the shipped ones, twice round,
and measures the fastest found (the table lists every shape tried).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))  # the random-weight model builders (tests/support)

import numpy as np  # noqa: E402
from common import commit, report, scratch  # noqa: E402
from support.models import FULL, build_fastvlm_torch, qwen_ranks  # noqa: E402

from pete_osc.director.schema import load_director  # noqa: E402
from pete_osc.engines import GenerationSettings  # noqa: E402
from pete_osc.engines.torch_engine import TorchEngine  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--qwen", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--tune", action="store_true")
    ap.add_argument("--model", default=None, help="a FastVLM-0.5B-shaped folder (default: built)")
    args = ap.parse_args()
    import torch

    model = args.model or build_fastvlm_torch(scratch("fastvlm-full-"), FULL,
                                              qwen=qwen_ranks() if args.qwen else None)
    director = load_director(ROOT / "DIRECTOR.md")
    engine = TorchEngine(str(model), director.prompt, director.instruction,
                         GenerationSettings(8, 0.0, args.size), kernels="fused")
    engine.warm_up()
    image = np.random.default_rng(0).integers(0, 255, (args.size, args.size, 3), dtype=np.uint8)
    list(engine.stream(image))
    start = engine.prefix_len + (args.size // 64) ** 2 + engine._suffix.shape[1]
    tried = tune(engine, torch, start) if args.tune else []
    rng = np.random.default_rng(1)
    cosines, same_top = [], 0
    with torch.inference_mode():
        for i in range(args.steps):
            token, position = int(rng.integers(0, 151000)), start + i
            engine._rewind(to=position)
            reference = engine._decode_step(torch.tensor([[token]], device="cuda"),
                                            torch.tensor([position], device="cuda")).float()
            fused = engine._fused.step(token, position).clone()
            cosines.append(float(torch.nn.functional.cosine_similarity(reference, fused, dim=-1)))
            same_top += int(reference.argmax()) == int(fused.argmax())
        graph = engine._fused.graph
        replay_ms = replayed(torch, graph)
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(20):
                graph.replay()
            torch.cuda.synchronize()
    kernels = {}
    for event in prof.key_averages():
        total = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0)
        if total:
            kernels[event.key] = (total / 20 / 1000, event.count // 20)
    busy = sum(ms for ms, _ in kernels.values())
    lines = [
        "### The fused decode step on its own (engines/fused.py)",
        "",
        f"- machine: {torch.cuda.get_device_name(0)}, torch {torch.__version__}",
        f"- date: {datetime.date.today()}, commit {commit()}",
        f"- command: `python bench/fused_decode.py --steps {args.steps}{' --qwen' if args.qwen else ''}{' --tune' if args.tune else ''}`",
        "- FastVLM-0.5B shapes, random weights, bf16; positions after a 128 px frame's prompt",
        "",
        f"- logits against transformers' eager step, {args.steps} steps: lowest cosine "
        f"**{min(cosines):.5f}**, same top token in {same_top} of {args.steps}",
        f"- one replayed step (CUDA graph, GPU time between events over 200 replays): "
        f"**{replay_ms:.3f} ms**; kernels busy {busy:.3f} ms of it",
        "",
        "| kernel | per step | launches per step |",
        "| --- | ---: | ---: |",
    ] + [f"| `{name[:60]}` | {ms * 1000:.0f} µs | {n} |"
         for name, (ms, n) in sorted(kernels.items(), key=lambda kv: -kv[1][0])[:10]]
    if tried:
        lines += ["", f"- shapes measured: `{engine._fused.shapes}`", "",
                  "| launch shapes (changed from the shipped) | one step |", "| --- | ---: |"]
        shown = tried[:12] + [r for r in tried[12:] if not r[0]]  # the fastest, and as shipped
        lines += [f"| {changed or 'as shipped'} | {ms:.3f} ms |" for changed, ms in shown]
        lines.append(f"\n{len(tried)} shapes measured in all.")
    return report(lines, args.out, args.write)


CHOICES = dict(qkv_rows=(2, 4, 8, 16), splits=(4, 8, 16, 32), o_rows=(1, 2, 4, 8), o_merged=(0, 1),
               gate_rows=(4, 8, 16, 32), down_rows=(1, 2, 4, 8, 16),
               down_block=(256, 512, 1024, 2048), down_parts=(1, 2, 4, 8),
               qkv_warps=(1, 2, 4, 8), attend_warps=(1, 2, 4), o_warps=(1, 2, 4, 8),
               gate_warps=(2, 4, 8), down_warps=(1, 2, 4, 8))


def replayed(torch, graph, n=200) -> float:
    """Milliseconds of one replay of ``graph`` (GPU time between events, n replays)."""
    for _ in range(20):
        graph.replay()
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    for _ in range(n):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return begin.elapsed_time(end) / n


def tune(engine, torch, position):
    """Coordinate descent over CHOICES from the shipped shapes: (changes, ms) per shape
    tried, the fastest left set on the engine's decoder."""
    from pete_osc.engines.fused import SHAPES

    fused = engine._fused
    tried, best = {}, dict(SHAPES)

    def measure(shapes):
        key = tuple(sorted(shapes.items()))
        if key not in tried:
            try:
                with torch.inference_mode():
                    engine._rewind(to=position)
                    fused.reshape(**shapes)
                    fused.step(0, position)
                    tried[key] = replayed(torch, fused.graph, 100)
                print(f"tried {tried[key]:.4f} ms: {shapes}", file=sys.stderr, flush=True)
            except Exception as exc:  # (a shape Triton cannot build: out of resources)
                print(f"{shapes}: {type(exc).__name__}", file=sys.stderr)
                tried[key] = float("inf")
        return tried[key]

    best_ms = measure(best)
    for _ in range(2):
        for name, values in CHOICES.items():
            for value in values:
                ms = measure(dict(best, **{name: value}))
                if ms < best_ms:
                    best, best_ms = dict(best, **{name: value}), ms
        print(f"fastest so far {best_ms:.3f} ms: {best}", file=sys.stderr)
    with torch.inference_mode():
        fused.reshape(**best)
    print(f"shapes: {json.dumps(best)}", file=sys.stderr)
    rows = [(", ".join(f"{k}={v}" for k, v in key if SHAPES[k] != v), ms)
            for key, ms in tried.items() if ms < float("inf")]
    return sorted(rows, key=lambda r: r[1])


if __name__ == "__main__":
    sys.exit(main())
