"""Constrained decoding on both local engines: the tiny random models, whose free answers
are gibberish, write only lines the parser accepts once the DIRECTOR grammar holds them."""

import numpy as np

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
