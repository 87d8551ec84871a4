"""Engines turn a frame into a stream of tokens; choose one by name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import PeteError
from .base import BaseEngine, Engine, GenerationSettings, Prompt, check_size, square_rgb
from .models import default_model, engine_name, is_apple_silicon

ENGINES = ("auto", "mlx", "torch", "remote", "replay")

__all__ = ["BaseEngine", "Engine", "GenerationSettings", "Prompt", "check_size",
           "square_rgb", "open_engine", "EngineOptions", "ENGINES", "default_model",
           "engine_name", "is_apple_silicon"]


@dataclass(frozen=True)
class EngineOptions:
    """What only some engines need (the server's URL, the recording to replay...)."""

    server: str | None = None
    timeout: float = 10.0
    replay: str | None = None
    replay_speed: float = 1.0
    loop: bool = False  # replay: start the recording over at its end (--loop)
    device: str | None = None  # torch: cuda, mps or cpu (None: the best there is)
    compile: bool = True  # torch on CUDA: static cache + CUDA graphs
    weights: str = "auto"  # torch, --quantize: int8 weights (auto: on the CPU), see engines.int8
    kernels: str = "auto"  # torch: the fused decode step (auto: CUDA graphs), see engines.fused
    progress: Callable[[str], None] = lambda message: None  # start-up steps, for stderr
    path: str | None = None  # mlx, torch: the folder to load the model from (already found)
    concurrency: int = 0  # remote: requests in flight at once with several sources (0: one each)


def open_engine(name: str, model: str | None, system_prompt: str, instruction: str,
                settings: GenerationSettings, options: EngineOptions = EngineOptions()) -> Engine:
    """Load the engine ``name`` with ``model`` (None: the engine's default model)."""
    name = engine_name(name)
    if name == "mlx":
        from .mlx_engine import MlxEngine

        return MlxEngine(model or default_model(name), system_prompt, instruction, settings,
                         path=options.path)
    if name == "torch":
        from .torch_engine import TorchEngine

        return TorchEngine(model or default_model(name), system_prompt, instruction, settings,
                           device=options.device, compile=options.compile,
                           progress=options.progress, path=options.path,
                           weights=options.weights, kernels=options.kernels)
    if name == "remote":
        from .remote import RemoteEngine

        if not options.server:
            raise PeteError("--engine remote needs --server URL (such as http://gpu-box:8000)")
        return RemoteEngine(options.server, model, system_prompt, instruction, settings,
                            read_timeout=options.timeout, concurrency=options.concurrency)
    if name == "replay":
        from .replay import ReplayEngine

        if not options.replay:
            raise PeteError("--engine replay needs --replay FILE (a --record file or DIRECTOR text)")
        return ReplayEngine(options.replay, options.replay_speed, options.loop)
    raise PeteError(f"--engine {name}: unknown engine; choose one of {', '.join(ENGINES)}")
