"""Engines turn a frame into a stream of tokens; choose one by name."""

from __future__ import annotations

import platform

from ..errors import PeteError
from .base import Engine, FrameTimes, GenerationSettings, Token, check_size, square_rgb

ENGINES = ("auto", "mlx")

__all__ = ["Engine", "FrameTimes", "GenerationSettings", "Token", "check_size",
           "square_rgb", "open_engine", "ENGINES"]


def open_engine(name: str, model: str | None, system_prompt: str, instruction: str,
                settings: GenerationSettings) -> Engine:
    """Load the engine ``name`` with ``model`` (None: the engine's default model)."""
    if name == "auto":
        name = "mlx"  # the only engine so far; torch becomes the default off Apple Silicon
    if name == "mlx":
        from .mlx_engine import DEFAULT_MODEL, MlxEngine

        return MlxEngine(model or DEFAULT_MODEL, system_prompt, instruction, settings)
    raise PeteError(f"--engine {name}: unknown engine; choose one of {', '.join(ENGINES)}")


def is_apple_silicon() -> bool:
    return platform.system() == "Darwin" and platform.machine() == "arm64"
