"""What {previous} costs: TTFT with the last N answers in the instruction, N = 0, 1, 3.

    python bench/context.py [--size 128] [--frames 6] [--tokens 8] [--model FOLDER] [--write]

One torch engine (FastVLM-0.5B shapes with random weights unless --model), the DIRECTOR
prefix cached; per frame the instruction after the image holds N previous answers (a
full nine-key answer each, as the show writes them), so only the image and the
instruction are prefilled. Each N is warmed up first (on CUDA a new instruction length
is a new graph), then timed over --frames frames of the shared clip; one run, same
engine, so the rows compare.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import commit, cpu, report  # noqa: E402

from pete_osc.capture import open_source  # noqa: E402
from pete_osc.context import render  # noqa: E402
from pete_osc.director import load_director  # noqa: E402
from pete_osc.engines import (EngineOptions, FrameTimes, GenerationSettings, Prompt,  # noqa: E402
                              open_engine, square_rgb)

VIDEO = ROOT.parent / "shared" / "data" / "big_buck_bunny.mp4"
ANSWER = ("color amber, mood tense, energy 0.7, tempo 120, brightness 0.4, motion 0.3, "
          "scene city street at night, person two people, object red car")
TEMPLATE = "Describe this frame. Your last answers, oldest first: {previous}."


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--tokens", type=int, default=8)
    ap.add_argument("--model", default=None)
    ap.add_argument("--video", type=Path, default=VIDEO)
    ap.add_argument("--out", default=None)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    from pete_osc.synthetic import FULL, build_fastvlm_torch

    model = args.model or str(build_fastvlm_torch(Path(tempfile.mkdtemp(prefix="fastvlm-full-")), FULL))
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
    rows = []
    for n in (0, 1, 3):
        instruction = director.instruction if n == 0 else render(TEMPLATE, [ANSWER] * n, {}, {})
        prompt = Prompt(director.prompt, instruction)
        ttft, prefilled = [], None
        for i, image in enumerate(images):
            times = FrameTimes()
            first = None
            for token in engine.stream(image, times, prompt):
                if first is None:
                    first = token.at - times.started
            if i >= 2:  # the first two warm this instruction length up
                ttft.append(first)
            prefilled = times.prefilled
        rows.append((n, prefilled, statistics.median(ttft)))
        print(f"N={n}: prefilled {prefilled}, TTFT {statistics.median(ttft) * 1000:.1f} ms",
              file=sys.stderr, flush=True)
    engine.close()
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else cpu()
    base = rows[0][2]
    lines = [
        "### Context across frames: TTFT with the last N answers in the instruction",
        "",
        f"- machine: {device}",
        f"- date: {datetime.date.today()}, commit {commit()}",
        f"- command: `python bench/context.py --size {args.size} --frames {args.frames} "
        f"--tokens {args.tokens}`",
        f"- torch engine{' (CUDA graphs)' if torch.cuda.is_available() else ''}, FastVLM-0.5B "
        f"shapes with random weights (and the test tokenizer, not Qwen's), {args.size} px, "
        "DIRECTOR prefix cached; each previous answer is a full nine-key line; median over "
        f"{args.frames} frames of the shared clip after two warm-up frames per N",
        "",
        "| N previous answers | positions prefilled per frame | TTFT median | vs N = 0 |",
        "| ---: | ---: | ---: | ---: |",
    ] + [f"| {n} | {p} | {t * 1000:.1f} ms | {t / base - 1:+.0%} |" for n, p, t in rows]
    return report(lines, args.out, args.write)


if __name__ == "__main__":
    sys.exit(main())
