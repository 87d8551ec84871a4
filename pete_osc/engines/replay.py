"""The replay engine: a recorded session's tokens, with their original timing, per frame.

For rehearsing a DAW set without a camera or a model, and for tests. Two inputs work:
- a recording made with ``pete-osc run --record FILE`` (JSON lines, one per token, with
  the time since the frame's start), replayed at its own pace (``speed`` scales it);
- plain DIRECTOR text (any model's output, ``--- frame N`` lines between frames), cut
  into word-sized tokens at a steady rate.
Frames are replayed in order, one per ``stream`` call; after the last one the engine has
``ended`` (the show then ends, announced, with its summary), or with ``loop`` it starts
over. The image is ignored.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import PeteError
from ..records import Prefill, Token
from ..run.recording import load_recording
from .base import BaseEngine, Prompt


class ReplayEngine(BaseEngine):
    """Plays back recorded frames; see the module docstring."""

    name = "replay"

    def __init__(self, path: str | Path, speed: float = 1.0, loop: bool = False):
        super().__init__()
        self.model_id = str(path)
        if speed <= 0:
            raise PeteError(f"--replay-speed {speed}: must be above 0")
        self.speed = speed
        self.loop = loop
        self.frames = load_recording(Path(path))
        self._next = 0
        self.ended: str | None = None  # see Engine.ended

    def use_prompt(self, prompt: Prompt) -> float:
        return 0.0  # a recording answers what it answered

    def stream(self, image_rgb: np.ndarray, prompt: Prompt | None = None) -> Iterator[Token]:
        if self.ended is not None:
            raise PeteError(f"{self.model_id}: {self.ended}")
        frame = self.frames[self._next % len(self.frames)]
        self._next += 1
        if not self.loop and self._next >= len(self.frames):
            self.ended = f"the recording ended after {len(self.frames)} frames"
        self.aborted.clear()
        start = time.perf_counter()
        prefill = Prefill(start)
        index = 0
        previous = None
        for token in frame:
            delay = start + token.at / self.speed - time.perf_counter()
            if delay > 0 and self.aborted.wait(delay):
                yield Token("", index, time.perf_counter(), "abort", prefill)
                return
            # Tokens recorded at one time (a step's token and the text the grammar forced
            # after it) come at one time again, as from the engine that recorded them.
            at = previous[1] if previous and previous[0] == token.at else time.perf_counter()
            previous = (token.at, at)
            yield Token(token.text, index, at, token.finish, prefill)
            if token.finish is None:
                index += 1

    def close(self) -> None:
        self.frames = []
