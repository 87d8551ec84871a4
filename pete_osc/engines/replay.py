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

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import PeteError
from ..parser import FRAME_MARK
from ..taps import Tap, TapFile
from .base import FrameTimes, Prompt, Token

# Plain text has no timing: a first token after this, then one token per TBT.
TEXT_TTFT = 0.2
TEXT_TBT = 0.02
_PIECES = re.compile(r"\s*\S+|\s+")


@dataclass(frozen=True)
class RecordedToken:
    at: float  # seconds since the frame's start
    text: str
    finish: str | None = None
    start: float | None = None  # the frame's start, seconds since the recording's first
    source: str = ""


class ReplayEngine:
    """Plays back recorded frames; see the module docstring."""

    name = "replay"

    def __init__(self, path: str | Path, speed: float = 1.0, loop: bool = False):
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

    def stream(self, image_rgb: np.ndarray, times: FrameTimes,
               prompt: Prompt | None = None) -> Iterator[Token]:
        if self.ended is not None:
            raise PeteError(f"{self.model_id}: {self.ended}")
        frame = self.frames[self._next % len(self.frames)]
        self._next += 1
        if not self.loop and self._next >= len(self.frames):
            self.ended = f"the recording ended after {len(self.frames)} frames"
        times.started = start = time.perf_counter()
        times.extra["replayed_frame"] = self._next - 1
        index = 0
        previous = None
        for token in frame:
            delay = start + token.at / self.speed - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            # Tokens recorded at one time (a step's token and the text the grammar forced
            # after it) come at one time again, as from the engine that recorded them.
            at = previous[1] if previous and previous[0] == token.at else time.perf_counter()
            previous = (token.at, at)
            yield Token(token.text, index, at, token.finish)
            if token.finish is None:
                index += 1

    def close(self) -> None:
        self.frames = []


def load_recording(path: Path) -> list[list[RecordedToken]]:
    """The frames of a recording (JSON lines) or of DIRECTOR text; PeteError if none."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise PeteError(f"{path}: cannot read the recording: {exc.strerror}") from None
    first = text.lstrip()[:1]
    frames = _from_json(path, text) if first == "{" else _from_text(text)
    frames = [f for f in frames if f]
    if not frames:
        raise PeteError(f"{path}: nothing to replay (no tokens)")
    return frames


def _from_json(path: Path, text: str) -> list[list[RecordedToken]]:
    frames: dict[int, list[RecordedToken]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            start = record.get("s")
            token = RecordedToken(float(record["t"]), str(record.get("text", "")),
                                  record.get("finish"), None if start is None else float(start),
                                  str(record.get("source", "")))
            frames.setdefault(int(record["frame"]), []).append(token)
        except (ValueError, KeyError, TypeError) as exc:
            raise PeteError(f"{path}:{number}: not a recorded token "
                            f"(expected {{\"frame\", \"t\", \"text\"}}): {exc}") from None
    return [frames[k] for k in sorted(frames)]


def _from_text(text: str) -> list[list[RecordedToken]]:
    frames: list[list[RecordedToken]] = [[]]
    for line in text.splitlines(keepends=True):
        if FRAME_MARK.match(line):
            frames.append([])
            continue
        for piece in _PIECES.findall(line):
            frame = frames[-1]
            frame.append(RecordedToken(TEXT_TTFT + TEXT_TBT * len(frame), piece))
    for frame in frames:
        if frame:
            frame.append(RecordedToken(frame[-1].at, "", "stop"))
    return frames


class Recording(TapFile, Tap):
    """``--record FILE``: every token with its time since its frame's start, one JSON line
    each, so that ``--engine replay --replay FILE`` plays the session back with its
    timing. A tap: it watches the token stream and never holds the show up."""

    def __init__(self, path: str | Path):
        super().__init__(path, "--record", mode="w")
        self.name = f"--record {path}"
        self._first: float | None = None
        self._start = 0.0  # the current frame's, since the first frame's (for export)

    def take(self, record) -> None:
        from ..pipeline import FrameReport, FrameStart, Text

        if isinstance(record, FrameStart):
            now = time.perf_counter()
            self._first = now if self._first is None else self._first
            self._start = now - self._first
        elif isinstance(record, Text):
            line = {"frame": record.frame_id, "source": record.source, "t": round(record.t, 6),
                    "s": round(self._start, 6), "text": record.text}
            if record.finish:
                line["finish"] = record.finish
            self.write_line(json.dumps(line) + "\n", flush=False)
        elif isinstance(record, FrameReport):
            self.flush()
