"""What {previous} costs a frame: TTFT with the last N answers, N = 0, 1, 3, placed in
the context before the image (prefilled ahead, as the show does) or in the instruction
after it (prefilled with the frame).

    python bench/context.py [--size 128] [--frames 6] [--tokens 8] [--qwen] [--model FOLDER] [--write]

One torch engine (FastVLM-0.5B shapes with random weights unless --model; Qwen2's real
tokenizer with --qwen, so the answers have their real token counts), the DIRECTOR prefix
cached. Each frame's previous answers are new nine-key lines (the numbers change), as on
stage. "context, ahead": before each frame the show calls ``use_prompt`` with the next
frame's prompt, prefilling the context while no frame waits; the frame is taken after it,
so the frame's TTFT (timed from the engine's start on the frame, any prefill it still has
to do included) holds only the image and the instruction. The time spent ahead is shown
too: it is the model's time, not the frame's, and lowers frames per second on a machine
where the model is always busy. One run, same engine, so the rows compare.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))  # the random-weight model builders (tests/support)

from common import commit, cpu, report, scratch  # noqa: E402

from pete_osc.capture.sources import open_source  # noqa: E402
from pete_osc.director.prompt import render  # noqa: E402
from pete_osc.director.schema import load_director  # noqa: E402
from pete_osc.engines import (  # noqa: E402
    EngineOptions,
    GenerationSettings,
    Prompt,
    open_engine,
    square_rgb,
)

VIDEO = ROOT.parent / "shared" / "data" / "big_buck_bunny.mp4"
CONTEXT = "Your last answers, oldest first: {previous}."
INSTRUCTION = "Describe this frame. Your last answers, oldest first: {previous}."


def answer(i: int) -> str:
    """A full nine-key answer as the show writes it for {previous}; new numbers each frame."""
    return (f"color amber, mood tense, energy 0.{i % 10}, tempo {100 + i}, brightness "
            f"0.{(i + 3) % 10}, motion 0.{(i + 5) % 10}, scene city street at night, "
            "person two people, object red car")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--tokens", type=int, default=8)
    ap.add_argument("--qwen", action="store_true", help="Qwen2's tokenizer (real token counts)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--video", type=Path, default=VIDEO)
    ap.add_argument("--out", default=None)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    from support.models import FULL, build_fastvlm_torch, qwen_ranks

    model = args.model or str(build_fastvlm_torch(scratch("fastvlm-full-"),
                                                  FULL, qwen=qwen_ranks() if args.qwen else None))
    director = load_director(ROOT / "DIRECTOR.md")
    engine = open_engine("torch", model, director.prompt, director.instruction,
                         GenerationSettings(args.tokens, 0.0, args.size), EngineOptions(path=model))
    engine.warm_up()
    source = open_source(str(args.video), 320, 240)
    images = []
    while len(images) < args.frames + 2:
        image = source.read()
        if image is None:
            break
        for _ in range(12):  # frames half a second apart
            source.read()
        images.append(square_rgb(image, args.size))
    source.close()
    modes = [(0, "none", None), (1, "instruction", False), (1, "context, ahead", True),
             (3, "instruction", False), (3, "context, ahead", True)]
    rows = []
    counter = 0
    for n, where, ahead in modes:
        ttft, spent, total, prefilled, prompt_len = [], [], [], None, None
        for i, image in enumerate(images):
            counter += 1
            earlier = [answer(counter - k) for k in range(n, 0, -1)]
            if ahead is None:
                prompt = Prompt(director.prompt, director.instruction)
            elif ahead:
                prompt = Prompt(director.prompt, director.instruction, render(CONTEXT, earlier, {}, {}))
            else:
                prompt = Prompt(director.prompt, render(INSTRUCTION, earlier, {}, {}))
            t0 = time.perf_counter()
            took = engine.use_prompt(prompt) if ahead else 0.0  # between frames
            first = None
            for token in engine.stream(image, prompt):
                if first is None:
                    first = token.at - token.prefill.started
            if i >= 2:  # the first two warm this length up
                ttft.append(first)
                spent.append(took)
                total.append(time.perf_counter() - t0)
            prefilled, prompt_len = token.prefill.prefilled, token.prefill.prompt_len
        rows.append((n, where, prefilled, prompt_len, statistics.median(ttft),
                     statistics.median(spent), statistics.median(total)))
        print(f"N={n} {where}: prefilled {prefilled} of {prompt_len}, TTFT "
              f"{statistics.median(ttft) * 1000:.1f} ms, ahead {statistics.median(spent) * 1000:.1f} ms",
              file=sys.stderr, flush=True)
    engine.close()
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else cpu()
    base = rows[0][4]
    weights = ("bf16, CUDA graphs" if torch.cuda.is_available() else
               "int8 language model (the CPU default)" if getattr(engine, "int8", False)
               else "fp32")
    lines = [
        "### Context across frames: TTFT with the last N answers",
        "",
        f"- machine: {device}",
        f"- date: {datetime.date.today()}, commit {commit()}",
        f"- command: `python bench/context.py --size {args.size} --frames {args.frames} "
        f"--tokens {args.tokens}{' --qwen' if args.qwen else ''}`",
        f"- torch engine, {weights}, FastVLM-0.5B shapes with random weights, "
        f"{'Qwen2' if args.qwen else 'the test'} tokenizer, {args.size} px, DIRECTOR prefix "
        "cached; each previous answer is a new full nine-key line; median over "
        f"{args.frames} frames of the shared clip after two warm-up frames per row",
        "- TTFT: from the engine's start on the frame to its first token (a prefill the "
        "frame still needs is in it). Ahead: the context prefilled between frames, before "
        "the newest frame is taken (model time, not the frame's latency).",
        "",
        "| N previous answers | placed in | positions prefilled with the frame | prompt positions "
        "| TTFT median | vs N = 0 | prefilled ahead | frame total |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ] + [f"| {n} | {w} | {p} | {pl} | {t * 1000:.1f} ms | {t / base - 1:+.0%} | "
         f"{a * 1000:.1f} ms | {tot * 1000:.0f} ms |" for n, w, p, pl, t, a, tot in rows]
    return report(lines, args.out, args.write)


if __name__ == "__main__":
    sys.exit(main())
