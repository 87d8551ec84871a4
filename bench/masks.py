"""The grammar's masks for a batch of answers, on the CPU alone (issue 25): what the
masks of one answer cost, three ways in one run, over the same answers token for token:

- ``landed``: llguidance's matcher with its default slices, every mask computed (the
  engines up to session 13);
- ``word slices``: the tokenizer's word tokens grouped (grammar.word_slices);
- ``slices + kept``: the engines' Constraint: word slices and the masks kept by grammar
  state, shared by the rows (pete_osc.engines.constrain).

Two kinds of answers, each ``--rows`` rows decoding together (a batch's masks, a row after
another, as the engines do), ``--answers`` answers a row, jump-forward on (forced text is
not masked):
- ``random``: every chosen token drawn at random from those the grammar allows (what a
  random-weight model under the grammar writes, as in every GPU benchmark here);
- ``scene``: answers a trained model could give for the shipped clip, drawn at random from
  ``SCENES`` (the same answers recur, as a camera's do while the scene holds), each
  spelled with the longest token the grammar allows at each step.

    python bench/masks.py [--rows 8] [--answers 20] [--write]

Needs Qwen's BPE ranks (the dashscope wheel on PyPI, or $PETE_QWEN_TIKTOKEN).
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
sys.path.insert(0, str(ROOT / "tests"))  # the tokenizer builder (tests/support)

import numpy as np  # noqa: E402
from common import commit, cpu, report, scratch  # noqa: E402
from support.models import build_qwen_tokenizer, qwen_ranks  # noqa: E402

from pete_osc.director.schema import load_director  # noqa: E402
from pete_osc.engines import constrain  # noqa: E402

VOCAB = 151936
SCENES = [
    "color: green\nmood: happy\nenergy: 0.6\ntempo: 110\nbrightness: bright\nmotion: low\n"
    "scene: a green meadow\nperson: a big rabbit\nobject: a tree\n",
    "color: green\nmood: calm\nenergy: low\ntempo: 90\nbrightness: bright\nmotion: still\n"
    "scene: a green meadow\nperson: none\nobject: a tree\n",
    "color: brown\nmood: playful\nenergy: 0.7\ntempo: 120\nbrightness: 0.7\nmotion: medium\n"
    "scene: a forest clearing\nperson: a rabbit\nobject: a log\n",
    "color: skyblue\nmood: dreamy\nenergy: 0.3\ntempo: 80\nbrightness: bright\nmotion: low\n"
    "scene: a blue sky\nperson: a bird\nobject: a cloud\n",
    "color: darkgreen\nmood: tense\nenergy: high\ntempo: 140\nbrightness: dim\nmotion: high\n"
    "scene: a dark forest\nperson: three rodents\nobject: a rock\n",
    "color: orange\nmood: angry\nenergy: 0.8\ntempo: 150\nbrightness: 0.6\nmotion: 0.7\n"
    "scene: a forest clearing\nperson: a squirrel\nobject: an apple\n",
]


def paths(base, kind: str, rows: int, answers: int, seed: int = 5) -> list[list[list]]:
    """Per row, its answers, each a list of steps ``(chosen token, forced tokens)``."""
    rng = np.random.default_rng(seed)
    words = base.words
    mask = np.empty(words, np.int32)
    decode = base.tokenizer.decode_bytes
    out = []
    for _ in range(rows):
        mine = []
        for _ in range(answers):
            row = base.fork()
            text = SCENES[rng.integers(len(SCENES))].encode() if kind == "scene" else None
            done = b"".join(decode([t]) for t in row.forced())  # (the answer's forced start)
            steps = []
            while not row.finished:
                row.fill(mask.ctypes.data, mask.nbytes)
                allowed = np.flatnonzero(np.unpackbits(mask.view(np.uint8), bitorder="little"))
                if text is None:
                    token = int(rng.choice(allowed))
                else:
                    rest = text[len(done):]
                    fits = [t for t in allowed if t != base.eos and rest.startswith(decode([t]))]
                    token = max(fits, key=lambda t: len(decode([t])))
                if token == base.eos:
                    break
                forced, _ = row.follow(token, 99, True)
                done += b"".join(decode([t]) for t in [token, *forced])
                steps.append((token, forced))
            mine.append(steps)
        out.append(mine)
    return out


def replay(way: str, base, plain, walks) -> dict:
    """The masks of every step of every row's answers, rows interleaved as in a batch."""
    rows = len(walks)
    buf = np.empty((rows, base.words), np.int32)
    nbytes = base.words * 4
    if way == "slices + kept":
        base.masks = constrain.Masks(base.words)
    per_answer, masks, computed = [], 0, 0
    for a in range(len(walks[0])):
        if way == "slices + kept":
            live = [base.fork() for _ in range(rows)]
            for c in live:
                c.forced()
        else:
            live = [plain[way]() for _ in range(rows)]
            for m in live:
                m.consume_tokens(m.compute_ff_tokens())
        spent = 0.0
        for s in range(max(len(w[a]) for w in walks)):
            group = [(i, live[i]) for i in range(rows) if s < len(walks[i][a])]
            t0 = time.perf_counter()
            if way == "slices + kept":
                constrain.fill_rows([c for _, c in group], buf.ctypes.data, nbytes)
            else:
                for j, (_, m) in enumerate(group):
                    m.unsafe_compute_mask_ptr(buf.ctypes.data + j * nbytes, nbytes)
            spent += time.perf_counter() - t0
            masks += len(group)
            for i, c in group:
                token, forced = walks[i][a][s]
                if way == "slices + kept":
                    c.consume(token)
                    if forced:
                        c.matcher.consume_tokens(forced)
                        c._moved(forced)
                else:
                    c.consume_token(token)
                    if forced:
                        c.consume_tokens(forced)
        per_answer.append(spent / rows)
    if way == "slices + kept":
        computed = base.masks.computed
    else:
        computed = masks
    return {"ms": statistics.mean(per_answer[1:]) * 1e3, "masks": masks / rows / len(walks[0]),
            "computed": computed / rows / len(walks[0])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--answers", type=int, default=20)
    parser.add_argument("--write", action="store_true", help="append to docs/benchmarks.md")
    args = parser.parse_args()
    import llguidance
    import llguidance.hf
    from transformers import AutoTokenizer

    ranks = qwen_ranks()
    if ranks is None:
        print("Qwen's tokenizer ranks are not at hand (pip download dashscope failed)",
              file=sys.stderr)
        return 2
    folder = scratch("pete-masks-")
    build_qwen_tokenizer(folder, ranks)
    tok = AutoTokenizer.from_pretrained(folder)
    director = load_director(ROOT / "DIRECTOR.md")
    base = constrain.Constraint(director, tok, VOCAB)
    compiled = llguidance.LLMatcher.grammar_from_lark(base.grammar)
    plain = {}
    for way, slices in (("landed", None), ("word slices", base.tokenizer)):
        lltok = slices or llguidance.hf.from_tokenizer(tok, n_vocab=VOCAB)
        plain[way] = lambda t=lltok: llguidance.LLMatcher(t, compiled, log_level=0)
    lines = [f"### The grammar's masks for {args.rows} rows (`python bench/masks.py --rows "
             f"{args.rows} --answers {args.answers}`)", "",
             f"{cpu()}, commit {commit()}, {datetime.date.today()}. Qwen2's tokenizer, "
             "DIRECTOR.md, jump-forward on; masks a row after another (the engines' default). "
             "Per answer: ms of masks, masks needed, masks computed.", "",
             "| answers | way | ms of masks an answer | masks | computed |",
             "| --- | --- | ---: | ---: | ---: |"]
    for kind in ("random", "scene"):
        walks = paths(base, kind, args.rows, args.answers)
        for way in ("landed", "word slices", "slices + kept"):
            r = replay(way, base, plain, walks)
            lines.append(f"| {kind} | {way} | {r['ms']:.2f} | {r['masks']:.1f} | "
                         f"{r['computed']:.1f} |")
            print(lines[-1], file=sys.stderr)
    return report(lines, write=args.write)


if __name__ == "__main__":
    sys.exit(main())
