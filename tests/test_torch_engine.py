"""The torch engine through transformers' FastVLM class on CPU torch, tiny real models."""

import json
import subprocess
import sys

import numpy as np
import pytest
from support.answers import answer

from pete_osc.engines import GenerationSettings


@pytest.fixture(scope="module")
def engine_at(tiny_torch_model, director):
    from pete_osc.engines.torch_engine import TorchEngine

    engines = {}

    def make(size, max_tokens=12, static=False):
        key = (size, max_tokens, static)
        if key not in engines:
            engines[key] = TorchEngine(str(tiny_torch_model), director.prompt, director.instruction,
                                       GenerationSettings(max_tokens, 0.0, size), static=static)
        return engines[key]

    yield make
    for e in engines.values():
        e.close()


def frame(size, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)


def test_input_size_sets_image_tokens(engine_at):
    lengths = {}
    for size in (64, 128, 256):
        times = answer(engine_at(size), frame(size))
        tokens = times.tokens
        assert tokens[-1].finish == "length" and len(tokens) == 13
        lengths[size] = times.prompt_len
    # FastViTHD gives (size/64)^2 image tokens: 1, 4, 16.
    assert lengths[128] - lengths[64] == 3
    assert lengths[256] - lengths[64] == 15


@pytest.mark.parametrize("static", [False, True], ids=["dynamic-cache", "static-cache"])
def test_cached_prefix_gives_the_same_tokens_as_a_full_prefill(engine_at, static, director):
    """Greedy tokens with the DIRECTOR prefix's KV cache reused, frame after frame, equal
    those of the model run on the whole prompt from scratch, without any cache. The static
    cache is the one CUDA runs with compiled decoding; here it runs eagerly on the CPU."""
    import torch

    engine = engine_at(64, static=static)
    image = frame(64, seed=3)
    # From scratch: the full prompt's embeddings, no cache, recomputed for every token.
    from pete_osc.engines.torch_setup import split_prompt

    prefix, _, suffix = split_prompt(engine.tokenizer, director.prompt, director.instruction)
    model = engine.model
    with torch.inference_mode():
        pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
        feats = model.model.get_image_features(pixel_values=pixels).pooler_output
        embed = model.get_input_embeddings()
        seq = torch.cat([embed(torch.tensor([prefix])), feats, embed(torch.tensor([suffix]))], 1)
        expected = []
        for _ in range(12):
            logits = model(inputs_embeds=seq, use_cache=False).logits[0, -1]
            token = int(logits.argmax())
            expected.append(token)
            seq = torch.cat([seq, embed(torch.tensor([[token]]))], 1)
    for _ in range(2):  # and again: the prefix cache was cut back correctly after frame 1
        answer(engine, frame(64, seed=9))  # another frame in between
        got = answer(engine, image).text
        assert got == engine.tokenizer.decode(expected, skip_special_tokens=True)
    assert len(set(expected)) > 1  # a real, varied answer, not one repeated token


def test_prefix_is_prefilled_once_not_per_frame(engine_at, tiny_torch_model, director):
    """The work done per frame, not only the text: with the DIRECTOR prefix cached, each
    frame runs only its image tokens and the instruction through the model."""
    from pete_osc.engines.torch_engine import TorchEngine

    engine = engine_at(64)
    plain = TorchEngine(str(tiny_torch_model), director.prompt, director.instruction,
                        GenerationSettings(12, 0.0, 64), prefix_cache=False)
    assert engine.prefix_len > 300  # DIRECTOR.md's text is in the prefix
    suffix = engine._suffix.shape[1]
    for seed in range(3):
        got = (cached_times := answer(engine, frame(64, seed))).text
        assert got == (plain_times := answer(plain, frame(64, seed))).text
        assert cached_times.prefilled == engine.image_tokens + suffix == 1 + suffix
        assert plain_times.prefilled == plain_times.prompt_len == cached_times.prompt_len


def test_temperature_samples_other_answers_than_greedy(engine_at, tiny_torch_model, director):
    """--temperature above 0 really samples: the same frame gives varied answers, unlike
    greedy decoding, which repeats itself."""
    import torch

    from pete_osc.engines.torch_engine import TorchEngine

    hot = TorchEngine(str(tiny_torch_model), director.prompt, director.instruction,
                      GenerationSettings(12, 3.0, 64))
    image = frame(64, seed=4)
    text = lambda engine: answer(engine, image).text  # noqa: E731
    plain = {text(engine_at(64)) for _ in range(2)}
    torch.manual_seed(0)
    sampled = {text(hot) for _ in range(3)}
    assert len(plain) == 1
    assert len(sampled) >= 2 and plain.isdisjoint(sampled), (plain, sampled)


def test_run_engine_torch_streams_tokens_and_events(scripted_torch_model, shared_video, cli_env):
    proc = subprocess.run(
        [sys.executable, "-m", "pete_osc", "run", "--engine", "torch", "--source", str(shared_video),
         "--model", str(scripted_torch_model), "--size", "64", "--max-frames", "2",
         "--max-tokens", "14", "--constrain", "off", "--every-frame", "--json"],
        capture_output=True, text=True, env=cli_env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(e["key"], e["value"], e["frame"]) for e in events] == [
        ("energy", 0.7, 0), ("energy", 0.7, 0), ("energy", 0.7, 1), ("energy", 0.7, 1)]
    assert "torch engine" in proc.stderr and "2 frames" in proc.stderr


@pytest.mark.parametrize("static", [False, True], ids=["dynamic cache", "static cache"])
def test_a_new_prompt_answers_as_an_engine_opened_with_it(tiny_torch_model, director, static):
    """A reloaded DIRECTOR.md: the request's prompt is made current (its prefix prefilled
    once), the answer is what an engine opened with that prompt gives, the work per frame
    stays the image and the instruction, and going back to the first prompt works (a
    dynamic cache keeps it: nothing to prefill)."""
    from pete_osc.engines import Prompt
    from pete_osc.engines.torch_engine import TorchEngine

    settings = GenerationSettings(12, 0.0, 64)
    first = Prompt.of(director)
    second = Prompt(director.prompt + "\nThe stage is lit in warm colours.", "Describe it.")
    engine = TorchEngine(str(tiny_torch_model), first.system, first.instruction, settings,
                         static=static)
    fresh = TorchEngine(str(tiny_torch_model), second.system, second.instruction, settings,
                        static=static)
    image = frame(64, seed=5)
    text = lambda e, prompt=None: answer(e, image, prompt).text  # noqa: E731
    before = text(engine)
    assert (times := answer(engine, image, second)).text == text(fresh)
    assert times.prompt_s > 0 and engine.prefix_len == fresh.prefix_len
    # Given with the frame, the new prefix ran on the frame's time (the show gives a
    # reloaded prompt ahead, with use_prompt); the next frame runs the image and the
    # instruction only.
    assert times.prefilled == fresh.prefix_len + 1 + fresh._suffix.shape[1]
    assert (again := answer(engine, image, second)).text == text(fresh) and again.prompt_s == 0
    assert again.prefilled == 1 + fresh._suffix.shape[1]  # the image and the instruction
    prefills = engine.prefix_prefills
    assert (back := answer(engine, image, first)).text == before
    # A dynamic cache is kept per prompt (nothing prefilled); the static one is refilled.
    assert engine.prefix_prefills == prefills + (1 if static else 0)
    assert (back.prompt_s == 0) != static
    # Only the instruction changes (as {previous} makes it do every frame): no prefix
    # prefill, and the answer is a fresh engine's with that instruction.
    third = Prompt(first.system, "Describe it again, briefly.")
    fresh3 = TorchEngine(str(tiny_torch_model), third.system, third.instruction, settings,
                         static=static)
    prefills = engine.prefix_prefills
    assert text(engine, third) == text(fresh3)
    assert engine.prefix_prefills == prefills


def _from_scratch(engine, image, prompt, steps=12):
    """Greedy token ids for ``prompt`` and ``image`` with no cache at all: the whole
    sequence (prefix, context, image, instruction) recomputed for every token."""
    import torch

    from pete_osc.engines.torch_setup import split_prompt

    prefix, context, suffix = split_prompt(engine.tokenizer, prompt.system, prompt.instruction,
                                           prompt.context)
    model = engine.model
    with torch.inference_mode():
        pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
        feats = model.model.get_image_features(pixel_values=pixels).pooler_output
        embed = model.get_input_embeddings()
        seq = torch.cat([embed(torch.tensor([prefix + context])), feats,
                         embed(torch.tensor([suffix]))], 1)
        ids = []
        for _ in range(steps):
            token = int(model(inputs_embeds=seq, use_cache=False).logits[0, -1].argmax())
            ids.append(token)
            seq = torch.cat([seq, embed(torch.tensor([[token]]))], 1)
    return ids


@pytest.mark.parametrize("static", [False, True], ids=["dynamic-cache", "static-cache"])
def test_context_before_the_image_is_prefilled_ahead(tiny_torch_model, director, static):
    """The context (the user turn's text before the image, where {previous} goes) is
    prefilled by use_prompt, before the frame: the frame then runs only the image and the
    instruction, and its answer is the one of the whole prompt computed from scratch. A
    context the engine was not given ahead is prefilled with the frame, on its time."""
    from pete_osc.engines import Prompt
    from pete_osc.engines.torch_engine import TorchEngine
    from pete_osc.engines.torch_setup import split_prompt

    engine = TorchEngine(str(tiny_torch_model), director.prompt, director.instruction,
                         GenerationSettings(12, 0.0, 64), static=static)
    image = frame(64, seed=5)
    contexts = ["Your last answer: color red, mood calm, energy 0.2",
                "Your last answer: color blue, mood tense, energy 0.9, tempo 150",
                "Your last answer: color red, mood calm, energy 0.2"]  # back to the first
    suffix = engine._suffix.shape[1]
    for context in contexts:
        prompt = Prompt(director.prompt, director.instruction, context)
        _, ctx_ids, _ = split_prompt(engine.tokenizer, prompt.system, prompt.instruction,
                                     context)
        ran, prefixes = engine.prompt_positions, engine.prefix_prefills
        took = engine.use_prompt(prompt)  # ahead, as the show does between frames
        assert took > 0 and engine.prompt_positions - ran == len(ctx_ids)
        assert engine.prefix_prefills == prefixes  # the system prompt's cache is kept
        times = answer(engine, image, prompt)
        ids = times.tokens
        assert times.prompt_s == 0
        assert times.prefilled == 1 + suffix  # the image and the instruction alone
        assert times.prompt_len == engine.system_len + len(ctx_ids) + 1 + suffix
        text = "".join(t.text for t in ids)
        expected = _from_scratch(engine, image, prompt)
        assert text == engine.tokenizer.decode(expected, skip_special_tokens=True)
        assert len(set(expected)) > 1
    # Not given ahead: prefilled with the frame, counted in its prefill and its time.
    late = Prompt(director.prompt, director.instruction, "Nothing seen before.")
    _, ctx_ids, _ = split_prompt(engine.tokenizer, late.system, late.instruction, late.context)
    text = (times := answer(engine, image, late)).text
    assert times.prefilled == len(ctx_ids) + 1 + suffix and times.prompt_s > 0
    assert text == engine.tokenizer.decode(_from_scratch(engine, image, late),
                                           skip_special_tokens=True)
    engine.close()
