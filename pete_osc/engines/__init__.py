"""Engines turn a frame into a stream of tokens; choose one by name."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import Callable

from ..errors import PeteError
from .base import Engine, FrameTimes, GenerationSettings, Token, check_size, square_rgb

ENGINES = ("auto", "mlx", "torch", "remote", "replay")

__all__ = ["Engine", "FrameTimes", "GenerationSettings", "Token", "check_size",
           "square_rgb", "open_engine", "EngineOptions", "ENGINES"]


@dataclass(frozen=True)
class EngineOptions:
    """What only some engines need (the server's URL, the recording to replay...)."""

    server: str | None = None
    timeout: float = 10.0
    replay: str | None = None
    replay_speed: float = 1.0
    device: str | None = None  # torch: cuda, mps or cpu (None: the best there is)
    compile: bool = True  # torch on CUDA: static cache + CUDA graphs
    progress: Callable[[str], None] = lambda message: None  # start-up steps, for stderr


def open_engine(name: str, model: str | None, system_prompt: str, instruction: str,
                settings: GenerationSettings, options: EngineOptions = EngineOptions()) -> Engine:
    """Load the engine ``name`` with ``model`` (None: the engine's default model)."""
    if name == "auto":
        name = "mlx" if is_apple_silicon() else "torch"
    if name == "mlx":
        from .mlx_engine import DEFAULT_MODEL, MlxEngine

        return MlxEngine(model or DEFAULT_MODEL, system_prompt, instruction, settings)
    if name == "torch":
        from .torch_engine import DEFAULT_MODEL as TORCH_MODEL
        from .torch_engine import TorchEngine

        return TorchEngine(model or TORCH_MODEL, system_prompt, instruction, settings,
                           device=options.device, compile=options.compile,
                           progress=options.progress)
    if name == "remote":
        from .remote import RemoteEngine

        if not options.server:
            raise PeteError("--engine remote needs --server URL (such as http://gpu-box:8000)")
        return RemoteEngine(options.server, model, system_prompt, instruction, settings,
                            read_timeout=options.timeout)
    if name == "replay":
        from .replay import ReplayEngine

        if not options.replay:
            raise PeteError("--engine replay needs --replay FILE (a --record file or DIRECTOR text)")
        return ReplayEngine(options.replay, options.replay_speed)
    raise PeteError(f"--engine {name}: unknown engine; choose one of {', '.join(ENGINES)}")


def default_model(engine: str) -> str:
    """The model an engine loads when --model is not given (mlx and torch only)."""
    if engine == "auto":
        engine = "mlx" if is_apple_silicon() else "torch"
    if engine == "mlx":
        from .mlx_engine import DEFAULT_MODEL

        return DEFAULT_MODEL
    from .torch_engine import DEFAULT_MODEL as TORCH_MODEL

    return TORCH_MODEL


def is_apple_silicon() -> bool:
    return platform.system() == "Darwin" and platform.machine() == "arm64"
