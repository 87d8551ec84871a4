"""Where a model comes from: a local folder or the Hugging Face cache, found before the
slow imports, so that a missing model is one line within a second, not a minute of
library retries after PyTorch has loaded.
"""

from __future__ import annotations

import platform
from pathlib import Path

from ..errors import PeteError

# Each local engine's model when --model is not given.
DEFAULT_MODELS = {
    # Apple's FastVLM-0.5B converted to MLX with mlx-vlm by the Hugging Face team.
    "mlx": "mlx-community/FastVLM-0.5B-bf16",
    # FastVLM-0.5B in transformers' own format (model type fast_vlm), as its docs load it.
    "torch": "KamilaMila/FastVLM-0.5B",
}


def is_apple_silicon() -> bool:
    return platform.system() == "Darwin" and platform.machine() == "arm64"


def engine_name(engine: str) -> str:
    """``auto`` made concrete: mlx on Apple Silicon, torch elsewhere."""
    if engine == "auto":
        return "mlx" if is_apple_silicon() else "torch"
    return engine


def default_model(engine: str) -> str:
    """The model an engine loads when --model is not given (mlx and torch only)."""
    return DEFAULT_MODELS.get(engine_name(engine), DEFAULT_MODELS["torch"])


def _fix(model: str) -> str:
    return (f"run `pete-osc download {model}` once while online, or pass --model with a "
            "local folder (config.json, *.safetensors, tokenizer files)")


def local_folder(model: str) -> Path | None:
    """``model`` as a local model folder, None if it is a Hugging Face id; a path-like
    name that is no model folder is refused in one line."""
    path = Path(model).expanduser()
    if not (model.startswith((".", "/", "~")) or path.exists()):
        return None
    if not path.is_dir():
        raise PeteError(f"--model {model}: no such folder (give a Hugging Face id such as "
                        f"{DEFAULT_MODELS['torch']} or a folder with config.json and *.safetensors)")
    if not (path / "config.json").is_file():
        raise PeteError(f"--model {model}: the folder has no config.json, so it is not a model "
                        "folder (config.json, *.safetensors, tokenizer files)")
    return path


def cached(model: str) -> Path | None:
    """The Hugging Face cache's folder of ``model`` (no network), or None."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(model, local_files_only=True))
    except LocalEntryNotFoundError:
        return None
    except Exception as exc:  # a malformed id, an unreadable cache
        raise PeteError(f"--model {model}: {type(exc).__name__}: {_first_line(exc)}") from None


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def locate(model: str) -> Path | None:
    """A folder to load ``model`` from without the network, or None when it must be
    downloaded first. Refused at once when it cannot be had offline."""
    folder = local_folder(model)
    if folder is not None:
        return folder
    folder = cached(model)
    if folder is None and offline():
        raise PeteError(f"model {model} is not in the Hugging Face cache and HF_HUB_OFFLINE "
                        f"is set: {_fix(model)}")
    return folder


def download(model: str, say=lambda message: None) -> Path:
    """Fetch ``model`` into the Hugging Face cache; one line if that fails."""
    from huggingface_hub import snapshot_download

    say(f"downloading {model} into the Hugging Face cache ...")
    try:
        return Path(snapshot_download(model))
    except Exception as exc:  # offline, unknown id, disk full
        raise _not_downloaded(model, exc) from None


def check_downloadable(model: str, timeout: float = 5.0) -> None:
    """Whether ``model`` could be downloaded now (the hub answers for it), without
    downloading it: for a start that fails for other reasons too, so that every problem
    is named in one go without first fetching a model the run cannot use yet."""
    from huggingface_hub import HfApi

    try:
        HfApi().model_info(model, timeout=timeout)
    except Exception as exc:  # offline, unknown id
        raise _not_downloaded(model, exc) from None


def _not_downloaded(model: str, exc: BaseException) -> PeteError:
    return PeteError(f"model {model} is not in the Hugging Face cache and could not be "
                     f"downloaded ({type(exc).__name__}: {_first_line(exc)[:160]}); "
                     f"{_fix(model)}")


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:  # huggingface_hub puts the network's own error on a "Got:" line
        if line.startswith("Got:"):
            return line[4:].strip()
    return lines[0] if lines else type(exc).__name__
