"""Constrained decoding on both local engines: the tiny random models, whose free answers
are gibberish, write only lines the parser accepts once the DIRECTOR grammar holds them."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pete_osc.engines import GenerationSettings
from pete_osc.records import Event, Frame, FrameReport, Rejection
from pete_osc.run.frame import frame_records

FRAMES = 6
MAX_TOKENS = 400  # room for 9 lines of the longest values: no answer is cut off


def answers(engine, director, frames=FRAMES):
    records, finishes = [], []
    rng = np.random.default_rng(11)
    for i in range(frames):
        image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
        frame = Frame(i, image, 0.0, "test")
        for record in frame_records(engine, director, frame, 64):
            if isinstance(record, FrameReport):
                finishes.append(record.finish)
            elif isinstance(record, (Event, Rejection)):
                records.append(record)
    return records, finishes


def check(engine, director):
    free, _ = answers(engine, director, frames=2)
    # Without the constraint the random model's lines are refused (gibberish)...
    assert sum(isinstance(r, Rejection) for r in free) > 0
    engine.constrain(director)
    records, finishes = answers(engine, director)
    events = [r for r in records if isinstance(r, Event)]
    rejected = [r for r in records if isinstance(r, Rejection)]
    # ...with it, every line of every frame parses, and every answer ends by itself.
    assert rejected == []
    assert len(events) >= FRAMES and finishes == ["stop"] * FRAMES
    return events


def test_torch_engine_writes_only_valid_lines(tiny_torch_model, director):
    from pete_osc.engines.torch_engine import TorchEngine

    engine = TorchEngine(str(tiny_torch_model), director.prompt, director.instruction,
                         GenerationSettings(MAX_TOKENS, 0.0, 64))
    check(engine, director)


def test_mlx_engine_writes_only_valid_lines(tiny_mlx_model, director):
    from pete_osc.engines.mlx_engine import MlxEngine

    engine = MlxEngine(str(tiny_mlx_model), director.prompt, director.instruction,
                       GenerationSettings(MAX_TOKENS, 0.0, 64))
    check(engine, director)


def test_sampling_with_temperature_stays_valid(tiny_torch_model, director):
    from pete_osc.engines.torch_engine import TorchEngine

    engine = TorchEngine(str(tiny_torch_model), director.prompt, director.instruction,
                         GenerationSettings(MAX_TOKENS, 1.0, 64))
    engine.constrain(director)
    records, _ = answers(engine, director, frames=3)
    assert records and all(isinstance(r, Event) for r in records)


def test_a_batchs_masks_are_the_same_on_llguidances_threads(tiny_torch_model, director):
    """fill_rows one row after another (the default) and on the parallel executor
    (constrain.THREADS, a benchmark's knob) write the same masks, each row its own."""
    import numpy as np
    from transformers import AutoTokenizer

    from pete_osc.engines import constrain

    tok = AutoTokenizer.from_pretrained(str(tiny_torch_model))
    base = constrain.Constraint(director, tok, len(tok))
    rows = [base.fork() for _ in range(4)]
    text = tok("color: red\nmood: tense\nenergy: 0.5", add_special_tokens=False)["input_ids"]
    for i, row in enumerate(rows):  # each row somewhere else in its answer
        for token in text[: 2 + 3 * i]:
            row.consume(token)
        assert not row.matcher.is_error(), row.matcher.get_error()
    masks = {}
    for threads in (0, 2):
        constrain.THREADS = threads
        try:
            buf = np.full((5, base.words), -1, np.int32)
            constrain.fill_rows(rows + [None], buf.ctypes.data, base.words * 4)
        finally:
            constrain.THREADS = 0
        masks[threads] = buf
    assert (masks[0] == masks[2]).all()
    assert (masks[0][4] == -1).all()  # (the row without a constraint is left as it was)
    assert len({m.tobytes() for m in masks[0][:4]}) > 1  # rows in different states


@pytest.fixture(scope="module")
def qwen_grammar(qwen_tokenizer, director):
    """The DIRECTOR grammar over Qwen2's real vocabulary: the engines' Constraint (word
    slices, masks kept by state) and llguidance's own matcher without either."""
    import llguidance
    import llguidance.hf

    from pete_osc.engines import constrain

    vocab = 151936
    base = constrain.Constraint(director, qwen_tokenizer, vocab)
    plain = llguidance.hf.from_tokenizer(qwen_tokenizer, n_vocab=vocab, slices=[])
    compiled = llguidance.LLMatcher.grammar_from_lark(base.grammar)
    lines = [t for t in range(len(qwen_tokenizer))
             if b"\n" in base.tokenizer.decode_bytes([t])]
    return base, lambda: llguidance.LLMatcher(plain, compiled, log_level=0), lines


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seeds=st.lists(st.integers(0, 2**32 - 1), min_size=2, max_size=4),
       jump=st.booleans())
def test_kept_masks_are_llguidances_own_for_any_answer(qwen_grammar, seeds, jump):
    """Property: rows walking any answers the grammar allows (random allowed tokens, now
    and then one that ends a line, which may run into the next key; with or without the
    forced text), each step's mask from the engines' Constraint (word slices, masks kept
    by state and shared by the rows) is bit for bit the mask llguidance computes afresh
    without either. And masks are reused (a value's start recurs in every answer)."""
    from pete_osc.engines import constrain

    base, plain, lines = qwen_grammar
    rows = [(base.fork(), plain(), np.random.default_rng(seed)) for seed in seeds]
    before = base.masks.copied
    words = base.words
    got, want = np.empty((len(rows), words), np.int32), np.empty(words, np.int32)
    for _ in range(80):
        live = [r for r in rows if not r[0].finished]
        if not live:
            break
        constrain.fill_rows([r[0] for r in live], got.ctypes.data, words * 4)
        for i, (row, ref, rng) in enumerate(live):
            ref.unsafe_compute_mask_ptr(want.ctypes.data, words * 4)
            assert (got[i] == want).all(), (row.state, b"".join(row.state[1]))
            allowed = np.flatnonzero(np.unpackbits(want.view(np.uint8), bitorder="little"))
            ending = np.intersect1d(allowed, lines)
            pick = ending if len(ending) and rng.random() < 0.3 else allowed
            token = int(rng.choice(pick))
            if token == base.eos:
                row.matcher.consume_token(token)
                continue
            forced = row.follow(token, 99, jump)[0]
            assert ref.consume_token(token) and (not forced or ref.consume_tokens(forced))
    assert base.masks.copied > before
