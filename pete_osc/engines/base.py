"""What every engine is: load once, stream tokens per frame with their times, close.

The pipeline, the parser and the outputs only see :class:`Token` records, never which
engine made them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Protocol

import cv2
import numpy as np

from ..errors import PeteError


@dataclass(frozen=True)
class Token:
    """One streamed piece of text, as ``mlx_lm.stream_generate`` yields them.

    ``at`` is ``time.perf_counter()`` when the engine produced it. The last record of a
    frame has ``finish`` set ("stop": the model ended its answer; "length": the token
    limit cut it) and may carry no text.
    """

    text: str
    index: int
    at: float
    finish: str | None = None


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
        """DIRECTOR.md's prompt with no per-frame values filled in (see pete_osc.context)."""
        from ..context import render

        return cls(director.prompt, render(director.instruction, (), {}, {}),
                   render(director.context, (), {}, {}))


@dataclass(frozen=True)
class GenerationSettings:
    """Per-frame generation settings shared by all engines."""

    max_tokens: int = 50
    temperature: float = 0.0
    size: int = 128  # model input size in pixels, a multiple of 64


@dataclass
class FrameTimes:
    """Filled in by an engine during one frame, for the metrics."""

    started: float = 0.0  # perf_counter() when the engine began the frame
    prompt_len: int | None = None  # prompt positions in the KV cache, image tokens included
    # Positions this frame ran through the model before its first token: the image and
    # the instruction only, while the DIRECTOR prefix's cache (and the context's,
    # prefilled before the frame was taken) is reused.
    prefilled: int | None = None
    # Forward passes after the prefill: one per chosen token, the forced text riding along
    # (see pete_osc.constrain); None where the engine does not count them.
    steps: int | None = None
    extra: dict = field(default_factory=dict)


class Engine(Protocol):
    """A loaded model that turns one image into a stream of tokens."""

    name: str
    model_id: str
    # Why the engine has no more answers (a recording played to its end; the show then
    # ends), or None while it answers.
    ended: str | None

    def stream(self, image_rgb: np.ndarray, times: FrameTimes,
               prompt: Prompt | None = None) -> Iterator[Token]:
        """Tokens of the model's answer for a square RGB image of the input size, asked
        with ``prompt`` (None: the prompt the engine was opened with)."""
        ...

    def use_prompt(self, prompt: Prompt) -> float:
        """Make ``prompt`` current now (prefill its system prompt and context where the
        engine caches them); the seconds that took (0 where they were cached or nothing
        is cached)."""
        ...

    def close(self) -> None:
        """Free the model."""
        ...


def model_source(model: str) -> str:
    """What to load ``model`` from: a local folder (given, or the Hugging Face cache's),
    else the id itself, for the library to download; see :func:`pete_osc.models.locate`."""
    from ..models import locate

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


def arrived(decoder: "IncrementalDecoder", ids: list[int], index: int, now: float) -> Iterator[Token]:
    """Tokens for ``ids`` that arrived together at ``now`` (a chosen token and the text
    the grammar forced after it, see pete_osc.constrain), numbered from ``index``."""
    for offset, token_id in enumerate(ids):
        yield Token(decoder.add(token_id), index + offset, now)


class IncrementalDecoder:
    """Token ids to text, each token's text released as soon as it is whole.

    mlx-vlm's BPE streaming detokenizer holds text back until a token that starts with a
    space arrives, so a line's newline (and so its event) would wait for the next line's
    value. Here every token's text leaves at once, except the bytes of a character split
    across tokens (the decode then ends in U+FFFD and waits for the rest). Only the last
    few tokens are decoded each time (prefix and read offsets, as vLLM and TGI do).
    """

    def __init__(self, decode):
        self._decode = decode  # list[int] -> str
        self._ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def add(self, token_id: int) -> str:
        """Add one token id; return the text it completes ("" while a character is split)."""
        self._ids.append(int(token_id))
        before = self._decode(self._ids[self._prefix:self._read])
        now = self._decode(self._ids[self._prefix:])
        if len(now) > len(before) and not now.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._ids)
            return now[len(before):]
        return ""

    def flush(self) -> str:
        """Whatever is still held at the end of the answer."""
        before = self._decode(self._ids[self._prefix:self._read])
        rest = self._decode(self._ids[self._prefix:])[len(before):]
        self._prefix = self._read = len(self._ids)
        return rest
