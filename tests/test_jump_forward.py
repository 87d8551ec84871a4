"""Answers that fit, decoded faster (Qwen2's real tokenizer): the grammar takes the keys in
DIRECTOR.md's order, each once; the longest answer it allows is known in tokens and sizes
the token limit; text the grammar forces runs through the model in one pass per run, and
greedy answers are the same as step by step."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from support.answers import answer

from pete_osc.director.grammar import answer_regex
from pete_osc.director.schema import load_director, parse_director
from pete_osc.engines.base import GenerationSettings

ROOT = Path(__file__).resolve().parent.parent
# The nine-key answer of the issue: 55 tokens in Qwen2's vocabulary.
NINE = ("color: amber\nmood: tense\nenergy: 0.7\ntempo: 120\nbrightness: 0.4\nmotion: 0.3\n"
        "scene: city street at night\nperson: two people\nobject: red car\n")


@pytest.fixture(scope="module")
def constraint(director, qwen_tokenizer):
    from pete_osc.engines.constrain import Constraint

    return Constraint(director, qwen_tokenizer, 151936)


def jump_through(constraint, ids: list[int]) -> tuple[int, list[int]]:
    """Feed an answer's tokens as the engines do with jump-forward: the start and every
    forced run come from the grammar; the rest is chosen. Returns (chosen, forced ids)."""
    constraint.reset()
    forced = constraint.forced()
    at, chosen = len(forced), 0
    assert ids[:at] == forced
    while at < len(ids):
        constraint.consume(ids[at])
        chosen, at = chosen + 1, at + 1
        run = constraint.forced()
        assert ids[at:at + len(run)] == run, (at, run)
        forced += run
        at += len(run)
    assert constraint.finished and not constraint.matcher.is_error()
    return chosen, forced


def test_the_nine_key_answer_fits_and_needs_few_steps(constraint, qwen_tokenizer):
    ids = qwen_tokenizer(NINE, add_special_tokens=False)["input_ids"]
    assert len(ids) == 55
    chosen, forced = jump_through(constraint, ids)
    # Each chosen token but the last takes one step (the first comes from the prefill;
    # after the last, only the end is allowed): at most 60% of the answer's tokens.
    steps = chosen - 1
    assert steps <= 0.6 * len(ids), (steps, len(ids))
    names = [qwen_tokenizer.decode([t]) for t in forced]
    assert names[:2] == ["color", ":"] and "m" in names and "ood" in names
    # The limit that holds any complete answer is above the old default of 50.
    assert constraint.longest > max(50, len(ids))


def test_no_answer_the_grammar_allows_is_longer_than_the_limit(constraint):
    """Random walks over the grammar's masks (any allowed token, however odd its
    spelling): every answer ends by itself within ``longest`` tokens, never stuck."""
    rng = np.random.default_rng(5)
    lengths = []
    for _ in range(40):
        constraint.reset()
        n = 0
        while not constraint.finished:
            allowed = np.flatnonzero(constraint.allowed())
            assert len(allowed) and not constraint.matcher.is_error()
            token = int(rng.choice(allowed))
            if token == constraint.eos:
                break
            constraint.consume(token)
            n += 1
            assert n < constraint.longest
        lengths.append(n)
    assert max(lengths) < constraint.longest
    assert constraint.longest == 84  # DIRECTOR.md's nine keys, Qwen2's tokenizer


def test_keys_come_in_order_once_and_optional_ones_may_be_skipped(director):
    text = (ROOT / "DIRECTOR.md").read_text()
    lines = NINE.splitlines(keepends=True)
    without_scene = "".join(lines[:6] + lines[7:])
    assert re.fullmatch(answer_regex(director), NINE)
    assert not re.fullmatch(answer_regex(director), without_scene)  # scene is required there
    optional = text.replace("    max_words: 4\n", "    max_words: 4\n    optional: true\n")
    edited = parse_director(optional)
    assert edited.model_keys["scene"].optional
    assert re.fullmatch(answer_regex(edited), without_scene)
    assert re.fullmatch(answer_regex(edited), NINE)
    # With max_lines 8, the optional scene counts: nine lines are one too many.
    counted = parse_director(optional.replace("instruction: Describe", "max_lines: 8\ninstruction: Describe"))
    assert re.fullmatch(answer_regex(counted), without_scene)
    assert not re.fullmatch(answer_regex(counted), NINE)


def test_refused_max_lines(director):
    from pete_osc.errors import PeteError

    text = (ROOT / "DIRECTOR.md").read_text()
    with pytest.raises(PeteError, match=r"DIRECTOR.md:\d+: max_lines is 8 but 9 keys"):
        parse_director(text.replace("instruction: Describe", "max_lines: 8\ninstruction: Describe"))


def test_counted_lines_in_the_lark_grammar(qwen_tokenizer):
    """The same counting in llguidance's grammar (optional keys and max_lines below them)."""
    from pete_osc.engines.constrain import Constraint

    text = (ROOT / "DIRECTOR.md").read_text()
    for key in ("scene", "person", "object"):
        text = text.replace(f"  {key}:\n    type: text\n", f"  {key}:\n    type: text\n    optional: true\n")
    text = text.replace("instruction: Describe", "max_lines: 7\ninstruction: Describe")
    d = parse_director(text)
    c = Constraint(d, qwen_tokenizer, 151936)
    lines = NINE.splitlines(keepends=True)

    def accepts(answer: str) -> bool:
        c.reset()
        ok = all(c.matcher.consume_token(t) for t in
                 qwen_tokenizer(answer, add_special_tokens=False)["input_ids"])
        return ok and c.matcher.is_accepting()

    assert accepts("".join(lines[:6]))  # the required six
    assert accepts("".join(lines[:6] + lines[8:]))  # and object
    assert not accepts("".join(lines[:6] + lines[7:]))  # eight lines: over 7
    assert not accepts("".join(lines[:5]))  # motion is required
    assert c.longest < 84  # two of the three text lines at most


# ---- the engines --------------------------------------------------------------------------

def frames(n=3):
    rng = np.random.default_rng(3)
    return [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(n)]


def run_frames(engine, images):
    out = []
    for image in images:
        times = answer(engine, image)
        tokens = times.tokens
        out.append(("".join(t.text for t in tokens), tokens[-1].finish,
                    sum(t.finish is None for t in tokens), times))
    return out


@pytest.mark.parametrize("static", [False, True], ids=["dynamic-cache", "static-padded"])
def test_torch_jump_forward_matches_step_by_step(qwen_torch_model, director, static):
    from pete_osc.engines.torch_engine import FORCED_WIDTH, TorchEngine

    results, calls = {}, {}
    for jump in (False, True):
        engine = TorchEngine(str(qwen_torch_model), director.prompt, director.instruction,
                             GenerationSettings(100, 0.0, 64), static=static, jump_forward=jump)
        engine.constrain(director)
        engine.set_max_tokens(engine.constraint.longest)
        seen: list[int] = []  # positions fed to the language model, per forward pass

        def count(module, args, kwargs, seen=seen):
            x = kwargs.get("input_ids")
            x = kwargs.get("inputs_embeds") if x is None else x
            seen.append(x.shape[1])

        engine.model.model.language_model.register_forward_pre_hook(count, with_kwargs=True)
        heads: list[int] = []  # positions the output layer made logits for, per pass
        engine.model.lm_head.register_forward_pre_hook(lambda m, args: heads.append(args[0].shape[1]))
        results[jump], calls[jump] = [], []
        for image in frames():
            seen.clear()
            results[jump] += run_frames(engine, [image])
            calls[jump].append(list(seen))
    for (text_a, finish_a, n_a, _), (text_b, finish_b, n_b, times) in zip(results[False], results[True]):
        assert text_a == text_b and finish_a == finish_b == "stop" and n_a == n_b
        assert text_b.startswith("color: ") and "\nobject: " in text_b
        assert times.steps <= 0.6 * n_b, (times.steps, n_b)
    # The work done: one prefill and one pass per step; forced text rode along (passes
    # wider than one token, padded on the static cache); step by step every pass is one.
    # Only the last position's logits are made, a forced run's too (where padded: on CUDA).
    assert heads and set(heads) == ({1} if not static else {1, FORCED_WIDTH}), heads
    for (_, _, n, times), passes in zip(results[True], calls[True]):
        assert len(passes) == 1 + times.steps
        wide = [p for p in passes[1:] if p > 1]
        assert wide and (set(wide) == {FORCED_WIDTH} if static else max(wide) <= FORCED_WIDTH)
    for (_, _, n, times), passes in zip(results[False], calls[False]):
        assert passes[1:] == [1] * times.steps and times.steps >= n
    assert sum(r[3].steps for r in results[False]) > 1.6 * sum(r[3].steps for r in results[True])


def test_mlx_jump_forward_matches_step_by_step(qwen_mlx_model, director):
    from pete_osc.engines.mlx_engine import MlxEngine

    results, fed = {}, {}
    for jump in (False, True):
        engine = MlxEngine(str(qwen_mlx_model), director.prompt, director.instruction,
                           GenerationSettings(100, 0.0, 64), jump_forward=jump)
        engine.constrain(director)
        engine.set_max_tokens(engine.constraint.longest)
        results[jump] = run_frames(engine, frames(2))
        times = results[jump][-1][3]
        # Positions in the KV cache after the last frame: the prompt, then every token
        # run through the model (all but the last chosen one).
        fed[jump] = engine.prefix.cache[0].offset - times.prompt_len
    for (text_a, finish_a, n_a, _), (text_b, finish_b, n_b, times) in zip(results[False], results[True]):
        assert text_a == text_b and finish_a == finish_b == "stop" and n_a == n_b
        assert times.steps <= 0.6 * n_b, (times.steps, n_b)
    n = results[True][-1][2]
    # Every token but the last run (the last chosen token, and a newline the grammar may
    # force after it), forced ones included: not only one token per step.
    assert fed[True] in (n - 1, n - 2) and fed[True] > 2 * results[True][-1][3].steps
    assert results[False][-1][3].steps > results[True][-1][3].steps


def test_the_token_limit_is_sized_from_the_schema_or_warned(qwen_torch_model, shared_video, cli_env):
    """The user's path: without --max-tokens the limit is the longest complete answer
    (84 with Qwen2's tokenizer) and answers end by themselves; a smaller one is warned."""
    import subprocess
    import sys

    def run(*extra):
        return subprocess.run([sys.executable, "-m", "pete_osc", "run", "--model", str(qwen_torch_model),
                               "--source", str(shared_video), "--size", "64", "--max-frames", "1",
                               "--fps", "0", "--no-warmup", *extra],
                              capture_output=True, text=True, env=cli_env, timeout=300, cwd=ROOT)

    sized = run()
    assert sized.returncode == 0, sized.stderr
    assert "token limit 84: the longest complete answer DIRECTOR.md allows" in sized.stderr
    assert "cannot hold" not in sized.stderr
    lines = [l for l in sized.stdout.splitlines() if l and not l.startswith("---")]
    assert [l.split(":")[0] for l in lines] == list(load_director(ROOT / "DIRECTOR.md").model_keys)
    small = run("--max-tokens", "20")
    assert small.returncode == 0, small.stderr
    assert ("--max-tokens 20 cannot hold a complete answer: the longest DIRECTOR.md allows is 84 "
            "tokens") in small.stderr.replace(str(ROOT) + "/", "")
    assert "token limit 84" not in small.stderr


def test_forced_text_never_runs_past_the_room_left(constraint, qwen_tokenizer):
    """A chosen token whose forced text is longer than the tokens left under the limit
    brings only as many as fit: the limit holds with jump-forward too."""
    ids = qwen_tokenizer(NINE, add_special_tokens=False)["input_ids"]

    def walk_to(stop_at):  # the engines' way: each chosen token, then its forced run
        constraint.reset()
        at = len(constraint.forced())
        while at < stop_at:
            constraint.consume(ids[at])
            at += 1 + len(constraint.forced())
        return at

    at, runs = walk_to(0), {}
    while at < len(ids) and not runs:  # the first chosen token followed by 2+ forced ones
        constraint.consume(ids[at])
        run = constraint.forced()
        if len(run) >= 2:
            runs[at] = run
        at += 1 + len(run)
    (where, run), = runs.items()
    assert walk_to(where) == where
    forced, _ = constraint.follow(ids[where], room=1, jump=True)
    assert forced == run[:1]
