"""The fused decode step (pete_osc/engines/fused.py) on its own, on a CUDA GPU: its logits
against transformers' step at the same positions over the same static cache, the GPU
time of one replayed step, and where that time goes (torch profiler).

    python bench/fused_decode.py [--steps 32] [--qwen] [--write]

FastVLM-0.5B shapes with random weights, bf16. After one frame fills the cache, each
step feeds a random token at the next position to transformers' eager step, then to the
fused step (both write that position's key and value), and compares their logits.
"""

from __future__ import annotations

import argparse
import datetime
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
    args = ap.parse_args()
    import torch

    model = build_fastvlm_torch(scratch("fastvlm-full-"), FULL,
                                qwen=qwen_ranks() if args.qwen else None)
    director = load_director(ROOT / "DIRECTOR.md")
    engine = TorchEngine(str(model), director.prompt, director.instruction,
                         GenerationSettings(8, 0.0, args.size), kernels="fused")
    engine.warm_up()
    image = np.random.default_rng(0).integers(0, 255, (args.size, args.size, 3), dtype=np.uint8)
    list(engine.stream(image))
    start = engine.prefix_len + (args.size // 64) ** 2 + engine._suffix.shape[1]
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
        for _ in range(20):
            graph.replay()
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        for _ in range(200):
            graph.replay()
        end.record()
        torch.cuda.synchronize()
        replay_ms = begin.elapsed_time(end) / 200
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
        f"- command: `python bench/fused_decode.py --steps {args.steps}{' --qwen' if args.qwen else ''}`",
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
    return report(lines, args.out, args.write)


if __name__ == "__main__":
    sys.exit(main())
