"""What every engine is: load once, stream tokens per frame with their times, close.

The run, the parser and the outputs only see :class:`~pete_osc.records.Token` records,
never which engine made them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Iterator, Protocol

import cv2
import numpy as np

from ..errors import PeteError
from ..records import Token


@dataclass(frozen=True)
class Prompt:
    """What a request asks, besides the image: DIRECTOR.md's system prompt, the context
    (the user message's text before the image) and the instruction after the image. It
    travels with each request, so the show can change it between two frames (a reloaded
    DIRECTOR.md, the last answers); engines keep the system prompt's cache per prompt and
    the context's on top of it, so :meth:`Engine.use_prompt` with the next frame's prompt
    prefills the context before that frame is taken."""

    system: str
    instruction: str
    context: str = ""

    @classmethod
    def of(cls, director) -> "Prompt":
        """DIRECTOR.md's prompt with no per-frame values filled in (see pete_osc.director.prompt)."""
        from ..director.prompt import render

        return cls(director.prompt, render(director.instruction, (), {}, {}),
                   render(director.context, (), {}, {}))


@dataclass(frozen=True)
class GenerationSettings:
    """Per-frame generation settings shared by all engines."""

    max_tokens: int = 50
    temperature: float = 0.0
    size: int = 128  # model input size in pixels, a multiple of 64


class Engine(Protocol):
    """A loaded model that turns one image into a stream of tokens. Every ability the show
    uses is declared here (:class:`BaseEngine` gives the defaults), none is probed."""

    name: str
    model_id: str
    settings: GenerationSettings
    # Why the engine has no more answers (a recording played to its end; the show then
    # ends), or None while it answers.
    ended: str | None
    # Whether ``constrain`` can hold the answers to DIRECTOR.md's grammar, and the
    # pete_osc.engines.constrain.Constraint it made (None: not constrained here, or by a server).
    supports_constraint: bool
    constraint: object | None
    warms_up: bool  # whether warm_up has work to do (said on stderr while it runs)

    def stream(self, image_rgb: np.ndarray, prompt: Prompt | None = None) -> Iterator[Token]:
        """Tokens of the model's answer for a square RGB image of the input size, asked
        with ``prompt`` (None: the prompt the engine was opened with); each carries its
        time, and the frame's prompt cost (:class:`~pete_osc.records.Prefill`)."""
        ...

    def use_prompt(self, prompt: Prompt) -> float:
        """Make ``prompt`` current now (prefill its system prompt and context where the
        engine caches them); the seconds that took (0 where they were cached or nothing
        is cached)."""
        ...

    def constrain(self, director) -> None:
        """Decode only answers DIRECTOR.md's grammar allows (PeteError where it cannot)."""
        ...

    def set_max_tokens(self, max_tokens: int) -> None:
        """A new token limit per answer (sized from the grammar)."""
        ...

    def warm_up(self) -> float:
        """Throw-away work so the first frame is not the slow one: the seconds it took."""
        ...

    def batch(self, slots: int):
        """A :class:`~pete_osc.engines.batch.Batch` of up to ``slots`` rows decoded
        together (several sources' frames in one step), or None where this engine answers
        one frame at a time."""
        ...

    def abort(self) -> None:
        """From another thread (the watchdog): end the answer being streamed now; its
        stream stops at the next token, or its blocked read fails at once."""
        ...

    def close(self) -> None:
        """Free the model."""
        ...


class BaseEngine:
    """The defaults of :class:`Engine`: no constraint, nothing to warm, an abort that the
    decode loop (pete_osc.engines.decode) sees between two steps."""

    ended: str | None = None
    supports_constraint = False
    constraint = None
    warms_up = False
    settings: GenerationSettings

    def __init__(self) -> None:
        self.aborted = threading.Event()  # cleared when a frame starts, set by abort()

    def constrain(self, director) -> None:
        raise PeteError(f"the {self.name} engine cannot constrain decoding")

    def batch(self, slots: int):
        return None

    def set_max_tokens(self, max_tokens: int) -> None:
        from dataclasses import replace

        self.settings = replace(self.settings, max_tokens=max_tokens)

    def warm_up(self) -> float:
        return 0.0

    def abort(self) -> None:
        self.aborted.set()

    def close(self) -> None:
        pass


def require(engine: str, needs: str, install: str, *modules: str) -> list:
    """The ``modules`` an engine is made of, imported; a missing one is one line saying
    what the engine needs and how to install it."""
    import importlib

    try:
        return [importlib.import_module(m) for m in modules]
    except ImportError as exc:
        raise PeteError(f"the {engine} engine needs {needs} ({exc.name} is missing): "
                        f"{install}") from None


def model_source(model: str) -> str:
    """What to load ``model`` from: a local folder (given, or the Hugging Face cache's),
    else the id itself, for the library to download; see :func:`pete_osc.engines.models.locate`."""
    from .models import locate

    folder = locate(model)
    return str(folder) if folder is not None else model


def check_size(size: int) -> int:
    """Model input sizes are multiples of 64 up to 1024.

    FastViTHD downsamples by 64 in all, so each 64x64 patch becomes one image token:
    (size/64)^2 tokens. Other sizes would be cropped or padded by the encoder.
    """
    if size % 64 or not 64 <= size <= 1024:
        raise PeteError(f"--size {size}: the model input size must be a multiple of 64 "
                        "from 64 to 1024 (64 for the lowest latency, 128 by default)")
    return size


def square_rgb(image_bgr: np.ndarray, size: int) -> np.ndarray:
    """Pad a BGR frame to a square with black (as FastVLM's own processor does), scale it
    to size x size, and return it as RGB."""
    h, w = image_bgr.shape[:2]
    side = max(h, w)
    if h != w:
        top, left = (side - h) // 2, (side - w) // 2
        image_bgr = cv2.copyMakeBorder(image_bgr, top, side - h - top, left, side - w - left,
                                       cv2.BORDER_CONSTANT, value=(0, 0, 0))
    interp = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    if side != size:
        image_bgr = cv2.resize(image_bgr, (size, size), interpolation=interp)
    return cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
