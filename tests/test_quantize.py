"""Int8 weights for the torch engine's language model on the CPU (the default there):
the logits stay close to fp32's, the scripted model still writes its script, and
--quantize off keeps fp32."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pete_osc.engines.base import GenerationSettings

ROOT = Path(__file__).resolve().parent.parent


def open_engine(model, director, quantize):
    from pete_osc.engines.torch_engine import TorchEngine

    return TorchEngine(str(model), director.prompt, director.instruction,
                       GenerationSettings(8, 0.0, 64), weights=quantize)


def linears(engine):
    import torch

    kinds = {}
    for _, module in engine.model.named_modules():
        name = type(module).__name__
        if isinstance(module, torch.nn.Linear) or name == "Int8Linear":
            kinds[name] = kinds.get(name, 0) + 1
    return kinds


def prefill_logits(engine, image):
    import torch

    with torch.inference_mode():
        engine._rewind()
        pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
        embeds = torch.cat([engine._vision(pixels), engine._embed(engine._suffix)], dim=1)
        logits = engine._forward(embeds=embeds, pos=engine._positions(engine.prefix_len, embeds.shape[1]))
        steps = [logits]
        token = logits.argmax(-1)
        for i in range(4):  # and a few decode steps after it
            logits = engine._decode_step(token.view(1, 1), torch.tensor([engine.prefix_len + embeds.shape[1] + i]))
            steps.append(logits)
            token = logits.argmax(-1)
        engine._rewind()
    return [s.float().flatten() for s in steps]


def test_int8_logits_stay_close_to_fp32(tiny_torch_model, director):
    import torch

    fp32 = open_engine(tiny_torch_model, director, "off")
    int8 = open_engine(tiny_torch_model, director, "auto")  # the CPU default
    assert int8.int8 and not fp32.int8
    # Every projection of the language model's layers but the first, and the output
    # layer, is int8; the first layer's and the vision tower's are not.
    before, after = linears(fp32), linears(int8)
    language = 1 * 7 + 1  # layer 1's q, k, v, o, gate, up, down + lm_head
    assert after["Int8Linear"] == language
    assert after.get("Linear", 0) == before["Linear"] - language
    rng = np.random.default_rng(0)
    cosines = []
    for _ in range(3):
        image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
        for a, b in zip(prefill_logits(fp32, image), prefill_logits(int8, image)):
            cosines.append(torch.nn.functional.cosine_similarity(a, b, dim=0).item())
            assert a.argmax() == b.argmax()
    assert min(cosines) >= 0.999, cosines


def test_the_scripted_model_still_writes_its_script_in_int8(scripted_torch_model, shared_video, cli_env):
    def run(*extra):
        return subprocess.run(
            [sys.executable, "-m", "pete_osc", "run", "--engine", "torch", "--model",
             str(scripted_torch_model), "--source", str(shared_video), "--size", "64",
             "--max-frames", "2", "--max-tokens", "14", "--constrain", "off", "--every-frame",
             "--no-warmup", *extra], capture_output=True, text=True, env=cli_env, timeout=300, cwd=ROOT)

    default = run()
    assert default.returncode == 0, default.stderr
    assert "language model in int8 on the CPU (8 weight matrices" in default.stderr
    lines = [l for l in default.stdout.splitlines() if not l.startswith("---")]
    assert lines.count("energy: 0.7") == 4  # two frames of two whole lines (then cut)
    assert all("energy: 0.7".startswith(l) for l in lines)
    off = run("--quantize", "off")
    assert off.returncode == 0 and "int8" not in off.stderr
    assert [l for l in off.stdout.splitlines()] == default.stdout.splitlines()


def test_int8_is_refused_off_the_cpu(tiny_torch_model, director):
    from pete_osc.engines.torch_setup import int8_language_model
    from pete_osc.errors import PeteError

    engine = open_engine(tiny_torch_model, director, "off")
    engine.device = type(engine.device)("meta")  # as if on a GPU: the kernel is CPU-only
    with pytest.raises(PeteError, match="--quantize int8: the int8 kernel is for the CPU"):
        int8_language_model(engine, "int8")
    assert int8_language_model(engine, "auto") is False


@pytest.mark.parametrize("bits", [4, 8])
def test_quantized_mlx_conversions_run_with_the_prefix_cache_and_the_grammar(
        tiny_mlx_model, director, tmp_path, bits):
    """An mlx-vlm 4- or 8-bit conversion (as mlx-community publishes FastVLM) loads in the
    mlx engine, keeps the DIRECTOR prefix cached and decodes within the grammar."""
    pytest.importorskip("mlx_vlm")
    import mlx.nn as nn
    from mlx_vlm import convert
    from support.answers import answer

    from pete_osc.engines.mlx_engine import MlxEngine

    folder = tmp_path / f"{bits}bit"
    convert(str(tiny_mlx_model), str(folder), quantize=True, q_bits=bits, q_group_size=64)
    engine = MlxEngine(str(folder), director.prompt, director.instruction,
                       GenerationSettings(400, 0.0, 64))
    layers = [m for _, m in engine.model.language_model.named_modules() if isinstance(m, nn.QuantizedLinear)]
    assert layers and all(m.bits == bits for m in layers)
    assert engine.prefix is not None
    engine.constrain(director)
    for image in (np.zeros((64, 64, 3), np.uint8), np.full((64, 64, 3), 200, np.uint8)):
        times = answer(engine, image)
        tokens = times.tokens
        text = "".join(t.text for t in tokens)
        assert tokens[-1].finish == "stop"
        assert [line.split(":")[0] for line in text.splitlines()] == list(director.model_keys)
        # Only the image, the instruction and the answer's forced first key ran through
        # the model before the answer; the DIRECTOR prefix stayed cached.
        after_prefix = times.prompt_len - engine.prefix.length
        assert 0 < times.prefilled - after_prefix <= 4 < engine.prefix.length


def test_each_output_row_has_its_own_scale():
    """Rows of very different size (a LayerNorm-folded projection has them) keep their
    precision: a scale per row, not one for the whole tensor."""
    torch = pytest.importorskip("torch", reason="the torch engine is not installed")
    from pete_osc.engines.int8 import available, int8_linear_class

    if not available(torch):
        pytest.skip("this PyTorch has no int8 weight kernel")
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 32, bias=False)
    with torch.no_grad():
        linear.weight[:16] *= 1000.0  # half the rows a thousand times larger
    x = torch.randn(4, 64)
    exact = linear(x)
    got = int8_linear_class(torch)(linear)(x)
    small = slice(16, 32)
    error = (got[:, small] - exact[:, small]).norm() / exact[:, small].norm()
    assert error < 0.05, float(error)


def test_the_output_layer_reads_only_the_rows_the_grammar_allows(qwen_torch_model, director,
                                                                  monkeypatch):
    """Where the grammar allows a few tokens next, the int8 output layer reads only their
    rows: their logits are the whole layer's numbers, every other token's is minus
    infinity, and the answers are the ones the whole layer gives; a free-text word's
    step (tens of thousands allowed) reads every row."""
    import torch

    from pete_osc.engines.torch_setup import SparseHead

    engine = TorchEngine_with_grammar(qwen_torch_model, director)
    head = engine.model.lm_head
    assert isinstance(engine._sparse, SparseHead)
    x = torch.randn(1, 3, head.in_features)
    whole = head(x)
    allowed = torch.tensor([0, 7, 198, 1000, head.out_features - 1])
    head.only = allowed
    try:
        part = head(x)
    finally:
        head.only = None
    assert torch.equal(part[..., allowed], whole[..., allowed])
    rest = torch.ones(whole.shape[-1], dtype=torch.bool)
    rest[allowed] = False
    assert torch.isneginf(part[..., rest]).all()

    frames = [np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8) for i in range(3)]

    def answers(engine):
        passes = []  # rows the output layer computed, per pass
        hook = engine.model.lm_head.register_forward_hook(
            lambda module, args, out: passes.append(
                module.out_features if module.only is None else len(module.only)))
        texts = ["".join(t.text for t in engine.stream(f)) for f in frames]
        hook.remove()
        return texts, passes

    sparse, passes = answers(engine)
    assert all(t.startswith("color: ") and "\nobject: " in t for t in sparse), sparse
    few = [n for n in passes if n <= SparseHead.LIMIT]
    # at least the first token of each value that is not free text (six keys of nine)
    assert engine._sparse.steps == len(few) and len(few) >= 6 * len(frames), passes
    assert max(passes) == head.out_features  # the free-text words: every row
    monkeypatch.setattr(SparseHead, "LIMIT", 0)  # every pass reads every row
    whole_answers, passes = answers(TorchEngine_with_grammar(qwen_torch_model, director))
    assert set(passes) == {head.out_features}
    assert whole_answers == sparse


def TorchEngine_with_grammar(model, director):
    from pete_osc.engines.torch_engine import TorchEngine

    engine = TorchEngine(str(model), director.prompt, director.instruction,
                         GenerationSettings(100, 0.0, 64))
    engine.constrain(director)
    engine.set_max_tokens(engine.constraint.longest)
    return engine
