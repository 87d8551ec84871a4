"""Answers that fit, decoded faster: the nine-key DIRECTOR answer at full FastVLM-0.5B
size (random weights) with Qwen2's real tokenizer, four ways in one run:

- ``free, 50``: unconstrained, the landed default limit of 50 tokens (the last line cut);
- ``free, 64``: unconstrained, the new default limit when decoding is not constrained;
- ``grammar, steps``: constrained to the ordered grammar, one decode step per token (the
  landed constrained loop), the limit sized from the grammar;
- ``grammar, jump``: the same with forced text run through the model in one pass.

A random model answers nothing useful, so every mode is made to write the same answer:
the engine still computes each step's logits, its grammar mask and its choice, and then
the answer's next token is taken instead (``Teacher`` below), so the work per step is a
real frame's. Reported per frame: tokens in the answer, decode steps (forward passes
after the prefill), frame -> first event (the first line's newline), time per frame.

    python bench/jump_forward.py [--frames 3] [--size 128] [--out FILE.md] [--write]

Runs on CUDA (static cache, CUDA graphs) or CPU (eager). Needs Qwen's BPE ranks
(fetched from the dashscope wheel on PyPI, or $PETE_QWEN_TIKTOKEN).
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

import numpy as np  # noqa: E402
from common import commit, cpu, report, scratch  # noqa: E402
from support.models import (
    FULL,
    TINY,
    build_fastvlm_mlx,
    build_fastvlm_torch,
    qwen_ranks,
)

from pete_osc.director.parser import LineParser  # noqa: E402
from pete_osc.director.schema import load_director  # noqa: E402
from pete_osc.engines import GenerationSettings  # noqa: E402
from pete_osc.engines.torch_engine import TorchEngine  # noqa: E402
from pete_osc.records import Event, FrameInfo  # noqa: E402

ANSWER = ("color: amber\nmood: tense\nenergy: 0.7\ntempo: 120\nbrightness: 0.4\nmotion: 0.3\n"
          "scene: city street at night\nperson: two people\nobject: red car\n")


class Teacher(TorchEngine):
    """The torch engine, with each chosen token replaced by the answer's next one after
    the real choice (mask and argmax) is computed."""

    def __init__(self, answer: list[int], *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.answer = answer
        self._next = 0
        prefill = self._prefill

        def prefilled(embeds, pos):
            # The answer's forced start rides in the prefill, after the instruction.
            self._next = embeds.shape[1] - self.image_tokens - self._suffix.shape[1]
            return prefill(embeds=embeds, pos=pos)

        self._prefill = prefilled

    def _run(self, ids, position):
        self._next = position + len(ids) - (self.prefix_len + self.image_tokens + self._suffix.shape[1])
        return super()._run(ids, position)

    def _choose(self, logits):
        super()._choose(logits)
        token = self.answer[self._next] if self._next < len(self.answer) else min(self.eos)
        return self.torch.tensor([token], device=self.device)


def mlx_teacher(answer: list[int], *args, **kwargs):
    """The mlx engine with the same replacement: the next token of the answer is the one
    after those already generated (forced ones included)."""
    import mlx.core as mx

    from pete_osc.engines.mlx_engine import MlxEngine, _PrefixCache

    class Taught(_PrefixCache):
        def _choose(self, logits, generated):
            mx.eval(super()._choose(logits, generated))
            at = len(generated)
            return mx.array([answer[at] if at < len(answer) else min(self.eos)])

    engine = MlxEngine(*args, **kwargs)
    engine.prefix.__class__ = Taught
    return engine


def measure(model: Path, director, answer: list[int], size: int, n: int, mode: str,
            engine_name: str = "torch") -> dict:
    constrained = mode.startswith("grammar")
    limit = {"free, 50": 50, "free, 64": 64}.get(mode, 200)
    if engine_name == "mlx":
        engine = mlx_teacher(answer, str(model), director.prompt, director.instruction,
                             GenerationSettings(limit, 0.0, size), jump_forward=mode == "grammar, jump")
    else:
        engine = Teacher(answer, str(model), director.prompt, director.instruction,
                         GenerationSettings(limit, 0.0, size), jump_forward=mode == "grammar, jump",
                         progress=lambda m: print("  " + m, file=sys.stderr, flush=True))
    if constrained:
        engine.constrain(director)
        engine.set_max_tokens(engine.constraint.longest)
    engine.warm_up()
    rng = np.random.default_rng(size)
    rows = []
    for i in range(n + 1):  # the first is a warm-up
        image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        parser = LineParser(director, FrameInfo(i, "bench", 0.0))
        first = None
        count = 0
        for token in engine.stream(image):
            count += token.finish is None
            if first is None and any(isinstance(r, Event) for r in parser.feed(token.text)):
                first = token.at - token.prefill.started
            last = token
        if i:
            rows.append({"tokens": count, "steps": last.steps, "first": first,
                         "frame": last.at - last.prefill.started, "finish": last.finish})
    out = {k: statistics.median(r[k] for r in rows) for k in ("tokens", "steps", "first", "frame")}
    out["finish"] = rows[-1]["finish"]
    out["limit"] = engine.settings.max_tokens
    if hasattr(engine, "close"):
        engine.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--tiny", action="store_true", help="the tiny test model (quick check)")
    parser.add_argument("--engine", default="torch", choices=("torch", "mlx"))
    parser.add_argument("--modes", default="free, 50;free, 64;grammar, steps;grammar, jump")
    parser.add_argument("--out")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()

    import torch
    from transformers import AutoTokenizer

    ranks = qwen_ranks()
    if ranks is None:
        print("Qwen's BPE ranks are not at hand (pip download dashscope failed)", file=sys.stderr)
        return 2
    shape = TINY if args.tiny else FULL
    print(f"building {'tiny' if args.tiny else 'FastVLM-0.5B'}-shaped random weights ...",
          file=sys.stderr, flush=True)
    build = build_fastvlm_mlx if args.engine == "mlx" else build_fastvlm_torch
    model = build(scratch("fastvlm-qwen-"), shape, qwen=ranks)
    tokenizer = AutoTokenizer.from_pretrained(model)
    answer = tokenizer(ANSWER, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    director = load_director(ROOT / "DIRECTOR.md")
    device = (torch.cuda.get_device_name() if torch.cuda.is_available() else cpu())
    if args.engine == "mlx":
        import mlx.core as mx

        device = f"{cpu()}; mlx engine, MLX {mx.__version__} on {mx.default_device()}"
    results = {}
    for mode in args.modes.split(";"):
        print(f"{mode} ...", file=sys.stderr, flush=True)
        results[mode] = measure(model, director, answer, args.size, args.frames, mode, args.engine)
        print(f"  {results[mode]}", file=sys.stderr, flush=True)
    base = results.get("free, 64")
    lines = [
        f"## Jump-forward decoding, the nine-key answer, {args.engine} engine ({datetime.date.today()})",
        "",
        f"{device}; torch {torch.__version__}; "
        f"{'tiny' if args.tiny else 'FastVLM-0.5B'} shapes, random weights, Qwen2's tokenizer "
        f"(151,643 tokens, from dashscope's qwen.tiktoken); {args.size} px; the answer "
        f"`{ANSWER.strip().replace(chr(10), ' / ')}` ({len(answer) - 1} tokens) written in "
        f"every mode; median of {args.frames} frames after one; commit {commit()}.",
        f"Command: `python bench/jump_forward.py --frames {args.frames} --size {args.size}"
        f"{' --tiny' if args.tiny else ''}{' --engine mlx' if args.engine == 'mlx' else ''}`",
        "",
        "| mode | token limit | tokens | ends | decode steps | steps / tokens | frame -> first event | time per frame | vs free, 64 |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for mode, r in results.items():
        vs = f"{r['frame'] / base['frame'] * 100 - 100:+.0f}%" if base else "-"
        lines.append(f"| {mode} | {r['limit']} | {r['tokens']:.0f} | {r['finish']} | "
                     f"{r['steps']:.0f} | {r['steps'] / r['tokens']:.0%} | "
                     f"{r['first'] * 1000:.1f} ms | {r['frame'] * 1000:.1f} ms | {vs} |")
    return report(lines, args.out, args.write)


if __name__ == "__main__":
    sys.exit(main())
