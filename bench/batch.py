"""Several sources in one batch (issue 25): what one batched step costs per row count,
and whether the batch's answers are each frame's answer alone, on this machine.

    python bench/batch.py [--model FOLDER] [--rows 1,2,4,8,16] [--frames 8] [--json FILE]

Loads the torch engine (FastVLM-0.5B shapes with random weights and Qwen2's tokenizer
unless --model is given; grammar on, 128 px) and measures:

- the decode step of the batch for each row count (on CUDA: its recorded graph; one
  chosen token a row), against the engine's own single-frame step (the fused kernels on
  CUDA, where they run) in the same process;
- ``--frames`` frames (random pictures) answered alone, then together in one batch: how
  many answers are the same (greedy; bf16 on CUDA can flip a near-tie), and the
  batch's steps and rows per step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402
from common import commit, scratch  # noqa: E402

from pete_osc.director.schema import load_director  # noqa: E402
from pete_osc.engines.base import GenerationSettings, Prompt  # noqa: E402


def timed(torch, device, fn, repeat: int = 50) -> float:
    """Median milliseconds of ``fn`` (synchronised on CUDA)."""
    out = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        out.append((time.perf_counter() - t0) * 1000)
    return statistics.median(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--rows", default="1,2,4,8,16")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    model = args.model
    if model is None:
        tmp = scratch("batch-bench")
        from support.models import FULL, build_fastvlm_torch, qwen_ranks

        model = str(build_fastvlm_torch(tmp / "model", FULL, qwen=qwen_ranks()))
    from pete_osc.engines.torch_engine import TorchEngine

    director = load_director(ROOT / "DIRECTOR.md")
    prompt = Prompt.of(director)
    engine = TorchEngine(model, prompt.system, prompt.instruction,
                         GenerationSettings(max_tokens=84))
    engine.constrain(director)
    engine.warm_up()
    torch, device = engine.torch, engine.device
    counts = [int(n) for n in args.rows.split(",")]
    result = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "commit": commit(), "steps": {}}
    # The single-frame step, as the engine runs it (fused where it can).
    with torch.inference_mode():
        engine._rewind()
        result["single_step_ms"] = timed(torch, device,
                                         lambda: engine._run([5], engine.prefix_len + 20))
        engine._rewind()
    batch = engine.batch(max(counts))
    rows = batch.rows
    image = np.zeros((128, 128, 3), np.uint8)
    for n in counts:
        slots = [rows.open(200) for _ in range(n)]
        rows.prefill([(s, image, [], [1, 2, 3], []) for s in slots])
        base = list(rows.length)

        def step():
            for s in slots:
                rows.length[s] = base[s]
            rows.run(slots, [[5]] * n)
        result["steps"][n] = timed(torch, device, step)
        for s in slots:
            rows.close(s)
        print(f"{n} rows: {result['steps'][n]:.3f} ms a step "
              f"(single-frame step {result['single_step_ms']:.3f} ms)", file=sys.stderr)
    # The same frames alone and together.
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (128, 128, 3), dtype=np.uint8) for _ in range(args.frames)]
    alone = ["".join(t.text for t in engine.stream(im, prompt)) for im in images]
    batch = engine.batch(args.frames)
    texts = {i: "" for i in range(args.frames)}
    for i, im in enumerate(images):
        batch.join(i, im, prompt)
    t0 = time.perf_counter()
    while batch.size:
        for result_row in batch.step():
            key, tokens = result_row
            texts[key] += "".join(t.text for t in tokens)
    took = time.perf_counter() - t0
    result["same_answers"] = sum(texts[i] == alone[i] for i in range(args.frames))
    result["frames"] = args.frames
    result["batch_s"] = round(took, 4)
    result["batch_steps"] = batch.steps
    result["rows_per_step"] = batch.rows_per_step
    result["memory_mb"] = (round(torch.cuda.max_memory_allocated() / 2**20, 1)
                           if device.type == "cuda" else None)
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
