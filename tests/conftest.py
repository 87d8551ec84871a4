"""Shared fixtures: a tiny random-weight FastVLM built once per session, the shared video."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_VIDEO = ROOT.parent / "shared" / "data" / "big_buck_bunny.mp4"


@pytest.fixture(autouse=True)
def _denormals_back():
    """The torch engine flushes denormal floats to zero on the CPU (for the whole process:
    pete-osc is its own process). A test that loads it in this process would leave that
    on for the tests after it, where hypothesis refuses to draw floats: set it back."""
    yield
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_flush_denormal(False)


@pytest.fixture(scope="session")
def tiny_mlx_model(tmp_path_factory) -> Path:
    """A FastVLM folder (config, safetensors, trained tokenizer, chat template,
    preprocessor config) with random weights and a 2-layer language model.
    Built here, never committed: the vision tower alone is ~250 MB."""
    pytest.importorskip("mlx_vlm", reason="the mlx engine is not installed (pip install '.[mlx]')")
    from support.models import build_fastvlm_mlx

    return build_fastvlm_mlx(tmp_path_factory.mktemp("tiny-fastvlm"))


@pytest.fixture(scope="session")
def scripted_mlx_model(tmp_path_factory) -> Path:
    """The tiny FastVLM with its language model set to write "energy: 0.7" lines over and
    over, whatever the image (see synthetic._script_weights): a known answer through the
    whole real engine, for end-to-end tests of what happens after the model."""
    pytest.importorskip("mlx_vlm", reason="the mlx engine is not installed (pip install '.[mlx]')")
    from support.models import build_fastvlm_mlx

    return build_fastvlm_mlx(tmp_path_factory.mktemp("scripted-fastvlm"), script="energy: 0.7\n")


def _need_torch():
    for module in ("torch", "torchvision", "timm"):
        pytest.importorskip(module, reason=f"the torch engine is not installed ({module} is "
                            "missing; pip install '.[torch]')")


@pytest.fixture(scope="session")
def tiny_torch_model(tmp_path_factory) -> Path:
    """The tiny FastVLM in transformers' own format, random weights (see tiny_mlx_model)."""
    _need_torch()
    from support.models import build_fastvlm_torch

    return build_fastvlm_torch(tmp_path_factory.mktemp("tiny-fastvlm-torch"))


@pytest.fixture(scope="session")
def scripted_torch_model(tmp_path_factory) -> Path:
    """The torch twin of scripted_mlx_model: writes "energy: 0.7" lines, whatever the image."""
    _need_torch()
    from support.models import build_fastvlm_torch

    return build_fastvlm_torch(tmp_path_factory.mktemp("scripted-fastvlm-torch"),
                               script="energy: 0.7\n")


@pytest.fixture(scope="session")
def shared_video() -> Path:
    if not SHARED_VIDEO.is_file():
        pytest.skip(f"{SHARED_VIDEO} is absent (it lives in ../shared beside the checkout)")
    return SHARED_VIDEO


@pytest.fixture(scope="session")
def director():
    from pete_osc.director.schema import load_director

    return load_director(ROOT / "DIRECTOR.md")


@pytest.fixture
def cli_env() -> dict:
    """Environment for running the CLI as a subprocess: unbuffered, offline."""
    env = dict(os.environ)
    env.update(PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
    return env


@pytest.fixture(scope="session")
def qwen_ranks_file() -> Path:
    """Qwen's BPE ranks (Qwen2's 151,643 tokens), from the dashscope wheel on PyPI."""
    from support.models import qwen_ranks

    ranks = qwen_ranks()
    if ranks is None:
        pytest.skip("Qwen's tokenizer ranks are not at hand (pip download dashscope failed)")
    return ranks


@pytest.fixture(scope="session")
def qwen_tokenizer(qwen_ranks_file, tmp_path_factory):
    """Qwen2's real tokenizer (as FastVLM ships it), built from the ranks."""
    from support.models import build_qwen_tokenizer
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("qwen-tokenizer")
    build_qwen_tokenizer(folder, qwen_ranks_file)
    return AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="session")
def qwen_torch_model(qwen_ranks_file, tmp_path_factory) -> Path:
    """The tiny random FastVLM (torch) with Qwen2's real tokenizer and vocabulary."""
    _need_torch()
    from support.models import build_fastvlm_torch

    return build_fastvlm_torch(tmp_path_factory.mktemp("qwen-fastvlm-torch"), qwen=qwen_ranks_file)


@pytest.fixture(scope="session")
def qwen_mlx_model(qwen_ranks_file, tmp_path_factory) -> Path:
    """The tiny random FastVLM (mlx) with Qwen2's real tokenizer and vocabulary."""
    pytest.importorskip("mlx_vlm", reason="the mlx engine is not installed (pip install '.[mlx]')")
    from support.models import build_fastvlm_mlx

    return build_fastvlm_mlx(tmp_path_factory.mktemp("qwen-fastvlm-mlx"), qwen=qwen_ranks_file)


@pytest.fixture(scope="session")
def seeing_torch_model(tmp_path_factory) -> Path:
    """A tiny FastVLM (torch) that reads the frame: it answers ``color: NAME`` with the
    picture's colour (see support.seeing)."""
    _need_torch()
    from support.seeing import build_seeing_torch

    return build_seeing_torch(tmp_path_factory.mktemp("seeing-fastvlm-torch"))


@pytest.fixture(scope="session")
def seeing_mlx_model(tmp_path_factory) -> Path:
    """The mlx twin of seeing_torch_model, loaded by mlx_vlm.load."""
    pytest.importorskip("mlx_vlm", reason="the mlx engine is not installed (pip install '.[mlx]')")
    from support.seeing import build_seeing_mlx

    return build_seeing_mlx(tmp_path_factory.mktemp("seeing-fastvlm-mlx"))


# ---- the fast subset: pytest -m "not slow" ----------------------------------------------------
# A test is slow when it builds or loads a model, starts a JACK server, a browser, a served
# model or a second Link peer, or plays the shared clip; the rest (tables of pure functions,
# the CLI with the replay engine) make the quick subset a developer runs between edits.
SLOW_FIXTURES = {"tiny_mlx_model", "scripted_mlx_model", "tiny_torch_model",
                 "scripted_torch_model", "qwen_torch_model", "qwen_mlx_model",
                 "qwen_tokenizer", "seeing_torch_model", "seeing_mlx_model", "jack",
                 "jack_env", "mlx_server", "shared_video"}
SLOW_MODULES = {"test_fused", "test_quantize", "test_seeing", "test_monitor", "test_midi_real",
                "test_beat", "test_grammar", "test_constrain", "test_jump_forward",
                "test_torch_engine", "test_mlx_engine", "test_bench_scratch", "test_install",
                "test_play", "test_vllm", "test_lyria"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if (SLOW_FIXTURES & set(getattr(item, "fixturenames", ()))
                or item.module.__name__ in SLOW_MODULES
                or "signal_at_any_stage" in item.name or "jack" in item.name):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="module")
def jack():
    """A JACK dummy server for this module, named in the environment for its clients."""
    from support.peers import Jack

    server = Jack()
    saved = {k: os.environ.get(k) for k in ("JACK_DEFAULT_SERVER", "JACK_NO_START_SERVER")}
    os.environ.update(JACK_DEFAULT_SERVER=server.name, JACK_NO_START_SERVER="1")
    yield server
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()
