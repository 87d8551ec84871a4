"""The replay engine: a recorded session's tokens, with their original timing, per frame.

For rehearsing a DAW set without a camera or a model, and for tests. Two inputs work:
- a recording made with ``pete-osc run --record FILE`` (JSON lines, one per token, with
  the time since the frame's start), replayed at its own pace (``speed`` scales it);
- plain DIRECTOR text (any model's output, ``--- frame N`` lines between frames), cut
  into word-sized tokens at a steady rate.
Frames are replayed in order, one per ``stream`` call, starting over at the end. The
image is ignored.
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
from ..taps import TapFile
from .base import FrameTimes, Token

# Plain text has no timing: a first token after this, then one token per TBT.
TEXT_TTFT = 0.2
TEXT_TBT = 0.02
_PIECES = re.compile(r"\s*\S+|\s+")


@dataclass(frozen=True)
class RecordedToken:
    at: float  # seconds since the frame's start
    text: str
    finish: str | None = None


class ReplayEngine:
    """Plays back recorded frames; see the module docstring."""

    name = "replay"

    def __init__(self, path: str | Path, speed: float = 1.0):
        self.model_id = str(path)
        if speed <= 0:
            raise PeteError(f"--replay-speed {speed}: must be above 0")
        self.speed = speed
        self.frames = load_recording(Path(path))
        self._next = 0

    def stream(self, image_rgb: np.ndarray, times: FrameTimes) -> Iterator[Token]:
        frame = self.frames[self._next % len(self.frames)]
        self._next += 1
        times.started = start = time.perf_counter()
        times.extra["replayed_frame"] = self._next - 1
        index = 0
        for token in frame:
            delay = start + token.at / self.speed - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            yield Token(token.text, index, time.perf_counter(), token.finish)
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
            token = RecordedToken(float(record["t"]), str(record.get("text", "")),
                                  record.get("finish"))
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


class Recording:
    """Wraps any engine and writes each token it streams as a JSON line, so that
    ``--engine replay --replay FILE`` can play the session back with its timing."""

    def __init__(self, engine, path: str | Path):
        self.engine = engine
        self.name = engine.name
        self.model_id = engine.model_id
        self._file = TapFile(path, "--record", mode="w")
        self._frames = 0

    def warm_up(self) -> float:
        warm = getattr(self.engine, "warm_up", None)
        return warm() if warm else 0.0

    def stream(self, image_rgb: np.ndarray, times: FrameTimes) -> Iterator[Token]:
        frame = self._frames
        self._frames += 1
        for token in self.engine.stream(image_rgb, times):
            record = {"frame": frame, "t": round(token.at - times.started, 6), "text": token.text}
            if token.finish:
                record["finish"] = token.finish
            self._file.write_line(json.dumps(record) + "\n", flush=False)
            yield token
        self._file.flush()

    def close(self) -> None:
        self._file.close()
        self.engine.close()
