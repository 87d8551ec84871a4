"""The CPU's int8 output layer read only where the grammar allows few tokens
(engines.torch_setup.SparseHead) against every row read, on one engine, frame by frame.

    python bench/sparse_head.py [--frames 8] [--model FOLDER] [--write]

FastVLM-0.5B shapes with random weights (built unless ``--model``), Qwen2's tokenizer, the
grammar and jump-forward, int8 (the CPU default), 128 px, the shipped bench frames. Each
frame is answered twice in turn, once each way (``SparseHead.LIMIT`` 0 reads every row):
TTFT, the decode's time per pass (the answer's decode time over its passes: the passes of
a DIRECTOR answer are not alike, so this is a mean, not a median), and whether the
answers are the same.
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
sys.path.insert(0, str(ROOT / "tests"))  # the random-weight model builders (tests/support)

from common import commit, cpu, report, scratch  # noqa: E402
from support.models import FULL, build_fastvlm_torch, qwen_ranks  # noqa: E402

from pete_osc.director.schema import load_director  # noqa: E402
from pete_osc.engines import GenerationSettings  # noqa: E402
from pete_osc.engines.torch_engine import TorchEngine  # noqa: E402
from pete_osc.engines.torch_setup import SparseHead  # noqa: E402


def bench_frames(size: int) -> list:
    """The package's shipped bench frames, RGB, ``size`` px square."""
    import cv2

    folder = ROOT / "pete_osc" / "run" / "bench_frames"
    return [cv2.cvtColor(cv2.resize(cv2.imread(str(f)), (size, size)), cv2.COLOR_BGR2RGB)
            for f in sorted(folder.glob("*.jpg"))]


def answer(engine, frame) -> tuple[str, float, float, int]:
    """(text, TTFT s, decode s per pass, passes)."""
    tokens = list(engine.stream(frame))
    started = tokens[0].prefill.started
    first = next(t.at for t in tokens if t.text)
    passes = tokens[-1].steps or 1
    return "".join(t.text for t in tokens), first - started, (tokens[-1].at - first) / passes, passes


def full_engine(model: str | None):
    """The torch engine on the CPU over ``model`` (a FastVLM-0.5B of random weights built
    if None), the grammar on, at most its longest answer; and the shipped frames, 128 px."""
    model = model or build_fastvlm_torch(scratch("fastvlm-full-"), FULL, qwen=qwen_ranks())
    director = load_director(ROOT / "DIRECTOR.md")
    engine = TorchEngine(str(model), director.prompt, director.instruction,
                         GenerationSettings(100, 0.0, 128), device="cpu")
    engine.constrain(director)
    engine.set_max_tokens(engine.constraint.longest)
    return engine, bench_frames(128)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--model", default=None, help="a FastVLM-0.5B-shaped folder (default: built)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    import torch

    engine, frames = full_engine(args.model)
    limit = SparseHead.LIMIT
    answer(engine, frames[0])  # warm
    results = {"few rows read": [], "every row read": []}
    same = 0
    for i in range(args.frames):
        frame = frames[i % len(frames)]
        texts = []
        for way, value in (("few rows read", limit), ("every row read", 0)):
            SparseHead.LIMIT = value
            before = engine._sparse.steps
            text, ttft, per_pass, passes = answer(engine, frame)
            results[way].append((ttft, per_pass, passes, engine._sparse.steps - before))
            texts.append(text)
            print(f"frame {i} {way}: TTFT {ttft * 1000:.1f} ms, {per_pass * 1000:.1f} ms a pass "
                  f"({passes} passes)", file=sys.stderr, flush=True)
        same += texts[0] == texts[1]
    SparseHead.LIMIT = limit
    lines = [
        "### The int8 output layer read only where the grammar allows few tokens (`bench/sparse_head.py`)",
        "",
        f"- machine: {cpu()}, torch {torch.__version__}, {torch.get_num_threads()} threads",
        f"- date: {datetime.date.today()}, commit {commit()}",
        f"- command: `python bench/sparse_head.py --frames {args.frames}`",
        "- FastVLM-0.5B shapes, random weights, int8, Qwen2's tokenizer, grammar and jump-forward, "
        f"128 px, the shipped bench frames, each answered both ways in turn; {same} of "
        f"{args.frames} answers the same both ways",
        "",
        "| output layer | TTFT (median) | decode per pass (median of answers) | passes a frame | passes reading few rows |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for way, rows in results.items():
        ttft, per_pass, passes, few = zip(*rows)
        lines.append(f"| {way} | {statistics.median(ttft) * 1000:.1f} ms | "
                     f"{statistics.median(per_pass) * 1000:.1f} ms | {statistics.mean(passes):.1f} | "
                     f"{statistics.mean(few):.1f} |")
    return report(lines, args.out, args.write)


if __name__ == "__main__":
    sys.exit(main())
