"""Several sources in one batch (issue 25): what one batched step costs per row count,
and whether the batch's answers are each frame's answer alone, on this machine.

    python bench/batch.py [--model FOLDER] [--rows 1,2,4,8,16] [--widths 1,4]
                          [--max-tokens N] [--tune] [--frames 8] [--json FILE]

Loads the torch engine (FastVLM-0.5B shapes with random weights and Qwen2's tokenizer
unless --model is given; grammar on, 128 px) and measures:

- the decode step of the batch for each row count (on CUDA: its recorded graph; one
  chosen token a row, and four: a forced run), with the batch's fused kernels and with
  the plain torch ops they replace, against the engine's own single-frame step (the
  fused kernels on CUDA, where they run) in the same process;
- ``--frames`` frames (random pictures) answered alone, then together in one batch: how
  many answers are the same (greedy; bf16 on CUDA can flip a near-tie), and the
  batch's steps and rows per step.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402
from common import commit, report_json, scratch  # noqa: E402

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


SHAPES = [  # part, splits, bn, split_o, split_down (engines/fused_rows.FusedRows)
    (16, 8, 16, 1, 1), (16, 8, 16, 2, 4), (32, 16, 16, 2, 4), (16, 16, 16, 4, 8),
    (16, 16, 32, 2, 4), (64, 8, 16, 1, 1)]


def tune(torch, device, rows, image) -> list:
    """The fused batch step at 1 and 8 rows for each of SHAPES; the fastest at 8 rows is
    left in place (print it, then put it in FusedRows as the default)."""
    fused, out = rows.fused, []
    names = ("part", "splits", "bn", "split_o", "split_down")
    slots = [rows.open(200) for _ in range(8)]
    rows.prefill([(s, image, [], [1, 2, 3], []) for s in slots])
    base = list(rows.length)
    for shape in SHAPES:
        for name, value in zip(names, shape):
            setattr(fused, name, value)
        rows.graphs.clear()
        got = {}
        for n in (1, 8):
            def step():
                for s in slots:
                    rows.length[s] = base[s]
                rows.run(slots[:n], [[5]] * n)
            got[n] = round(timed(torch, device, step), 4)
        out.append({**dict(zip(names, shape)), "ms_1": got[1], "ms_8": got[8]})
        print(f"tune {shape}: {got[1]:.3f} ms at 1 row, {got[8]:.3f} at 8", file=sys.stderr)
    best = min(out, key=lambda r: r["ms_8"] + r["ms_1"])
    for name in names:
        setattr(fused, name, best[name])
    for s in slots:
        rows.close(s)
    rows.graphs.clear()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--rows", default="1,2,4,8,16")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--json", default=None)
    parser.add_argument("--widths", default="1,4",
                        help="tokens a row per step (1: a chosen token; more: forced runs)")
    parser.add_argument("--max-tokens", type=int, default=None,
                        help="tokens a call the fused batch step takes (default: its own)")
    parser.add_argument("--tune", action="store_true",
                        help="also try other block shapes of the fused batch step")
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
    if args.tune and rows.fused is not None:
        result["tune"] = tune(torch, device, rows, image)
    # The batch's step per row count: the fused kernels (engines/fused_rows.py) where they
    # run, and the plain torch ops they replace, in this process; width 4: a forced run.
    kinds = [("fused", rows.fused), ("plain", None)] if rows.fused is not None else [("plain", None)]
    widths = [int(w) for w in args.widths.split(",")]
    if rows.fused is not None and args.max_tokens:
        rows.fused.max_tokens = args.max_tokens
    for kind, fused in kinds:
        rows.fused = fused
        rows.graphs.clear()
        result["steps" if kind == kinds[0][0] else f"steps_{kind}"] = steps = {}
        for n in counts:
            slots = [rows.open(200) for _ in range(n)]
            rows.prefill([(s, image, [], [1, 2, 3], []) for s in slots])
            base = list(rows.length)
            for width in widths:
                def step():
                    for s in slots:
                        rows.length[s] = base[s]
                    rows.run(slots, [[5] * width] * n)
                steps[n if width == 1 else f"{n}x{width}"] = timed(torch, device, step)
            for s in slots:
                rows.close(s)
            print(f"{kind}: {n} rows: " + ", ".join(
                f"{steps[n if w == 1 else f'{n}x{w}']:.3f} ms for {w} a row" for w in widths)
                + f" (single-frame step {result['single_step_ms']:.3f} ms)", file=sys.stderr)
    rows.fused = kinds[0][1]
    if rows.fused is not None:
        from pete_osc.engines.fused_rows import MAX_TOKENS

        rows.fused.max_tokens = MAX_TOKENS
    rows.graphs.clear()
    rows.warm_up()
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
    report_json(result, args.json)


if __name__ == "__main__":
    main()
