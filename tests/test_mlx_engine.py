"""The mlx engine on a tiny random-weight FastVLM, loaded through mlx_vlm.load."""

from __future__ import annotations

import numpy as np
import pytest
from support.answers import answer

from pete_osc.engines import GenerationSettings
from pete_osc.errors import PeteError


def _engine(model, size, max_tokens=3):
    from pete_osc.engines.mlx_engine import MlxEngine

    return MlxEngine(str(model), "Answer in key: value lines.", "Describe this frame.",
                     GenerationSettings(max_tokens=max_tokens, size=size))


def _run(engine, size):
    image = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
    tokens = (times := answer(engine, image)).tokens
    return tokens, times


def test_image_tokens_follow_the_input_size(tiny_mlx_model):
    """FastViTHD gives (size/64)^2 image tokens, and mlx-vlm's processor would scale any
    frame to 1024 px (256 tokens): the prompt length in the KV cache proves the size
    reached the encoder."""
    lengths = {}
    for size in (64, 128):
        engine = _engine(tiny_mlx_model, size)
        assert engine.processor.image_processor.size == {"shortest_edge": size}
        _, times = _run(engine, size)
        lengths[size] = times.prompt_len
    assert lengths[128] - lengths[64] == (128 // 64) ** 2 - (64 // 64) ** 2


def test_tokens_stream_with_times_and_a_finish(tiny_mlx_model):
    engine = _engine(tiny_mlx_model, 64, max_tokens=5)
    tokens, times = _run(engine, 64)
    new = [t for t in tokens if t.finish is None]
    assert 1 <= len(new) <= 5
    assert tokens[-1].finish in ("stop", "length")
    assert [t.index for t in tokens] == list(range(len(tokens)))
    ats = [t.at for t in tokens]
    assert ats == sorted(ats) and ats[0] > times.started
    # the system prompt is really in the prompt, in the model's chat template
    assert "<|im_start|>system\nAnswer in key: value lines." in engine.prompt
    assert "<image>" in engine.prompt


def test_a_model_that_is_not_there_is_named(tmp_path):
    with pytest.raises(PeteError, match=r"--model ./nope: no such folder"):
        _engine("./nope", 64)
    empty = tmp_path / "empty-model"
    empty.mkdir()
    with pytest.raises(PeteError, match="the folder has no config.json"):
        _engine(empty, 64)
    (empty / "config.json").write_text('{"model_type": "no_such_model"}')
    with pytest.raises(PeteError) as err:
        _engine(empty, 64)
    assert f"model {empty} could not be loaded" in str(err.value)
    assert "mlx-community/FastVLM-0.5B-bf16" in str(err.value)
    assert "\n" not in str(err.value)


def test_prefix_cache_gives_the_same_tokens_as_mlx_vlm(tiny_mlx_model, director):
    """The DIRECTOR prefix prefilled once and reused must not change the answer: greedy
    tokens equal those of mlx_vlm.stream_generate on the whole prompt, frame after frame."""
    from pete_osc.engines.mlx_engine import MlxEngine

    settings = GenerationSettings(max_tokens=12, size=64)
    cached = MlxEngine(str(tiny_mlx_model), director.prompt, director.instruction, settings)
    plain = MlxEngine(str(tiny_mlx_model), director.prompt, director.instruction, settings,
                      prefix_cache=False)
    assert cached.prefix is not None and plain.prefix is None
    assert cached.prefix.length > 300  # the DIRECTOR text really is in the cached prefix
    rng = np.random.default_rng(7)
    frames = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(3)]
    answers = []
    for image in frames:  # several frames: the cache is trimmed back correctly each time
        got = (t1 := answer(cached, image)).text
        want = (t2 := answer(plain, image)).text
        assert got == want
        # mlx-vlm's loop has already queued the next step when the generic path reads the
        # cache length, hence one position more there.
        assert t1.prompt_len == t2.prompt_len - 1
        # The work done, not only the text: the cached engine ran only the image and the
        # instruction through the model (1 image token at 64 px), the plain one everything.
        assert t1.prefilled == t1.prompt_len - cached.prefix.length == len(cached.prefix.after[0])
        assert t2.prefilled == t2.prompt_len
        answers.append(got)
    assert len(set(answers[0])) > 3  # varied text, not one repeated token


def test_context_before_the_image_is_prefilled_ahead(tiny_mlx_model, director):
    """The context (the text before the image, where {previous} goes) is prefilled by
    use_prompt before the frame, on top of the kept system prompt: the frame runs only the
    image and the instruction, and answers as mlx_vlm.stream_generate does on the whole
    prompt. A context not given ahead is prefilled with the frame."""
    from pete_osc.engines import Prompt
    from pete_osc.engines.mlx_engine import MlxEngine

    settings = GenerationSettings(max_tokens=12, size=64)
    cached = MlxEngine(str(tiny_mlx_model), director.prompt, director.instruction, settings)
    plain = MlxEngine(str(tiny_mlx_model), director.prompt, director.instruction, settings,
                      prefix_cache=False)
    image = np.random.default_rng(8).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    base = cached.prefix.base
    for context in ("Your last answer: color red, mood calm", "Your last answer: mood tense",
                    "Your last answer: color red, mood calm"):
        prompt = Prompt(director.prompt, director.instruction, context)
        ran = cached.prompt_positions
        assert cached.use_prompt(prompt) > 0  # ahead, as the show does between frames
        added = cached.prompt_positions - ran
        assert added == len(cached.encode(context + "\n")) and cached.prefix.base == base
        got = (t1 := answer(cached, image, prompt)).text
        assert got == answer(plain, image, prompt).text
        assert context in plain.prompt and t1.prompt_s == 0
        assert t1.prefilled == len(cached.prefix.after[0])  # the image and the instruction
        assert t1.prompt_len == base + added + t1.prefilled
    late = Prompt(director.prompt, director.instruction, "Nothing before.")
    got = (t1 := answer(cached, image, late)).text
    assert got == answer(plain, image, late).text
    assert t1.prefilled == len(cached.encode("Nothing before.\n")) + len(cached.prefix.after[0])


def test_temperature_samples_other_answers_than_greedy(tiny_mlx_model, director):
    """--temperature above 0 really samples: the same frame gives varied answers, unlike
    greedy decoding, which repeats itself."""
    import mlx.core as mx

    from pete_osc.engines.mlx_engine import MlxEngine

    image = np.random.default_rng(5).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    greedy = MlxEngine(str(tiny_mlx_model), director.prompt, director.instruction,
                       GenerationSettings(max_tokens=10, size=64))
    hot = MlxEngine(str(tiny_mlx_model), director.prompt, director.instruction,
                    GenerationSettings(max_tokens=10, temperature=3.0, size=64))
    text = lambda engine: answer(engine, image).text  # noqa: E731
    plain = {text(greedy) for _ in range(2)}
    mx.random.seed(0)
    sampled = {text(hot) for _ in range(3)}
    assert len(plain) == 1
    assert len(sampled) >= 2 and plain.isdisjoint(sampled), (plain, sampled)
