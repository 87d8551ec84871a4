"""Recordings: ``pete-osc run --record FILE`` writes every token with its time (the
:class:`~pete_osc.run.taps.Recording` tap), and :func:`load_recording` reads one back (or plain
DIRECTOR text) for the replay engine and for ``pete-osc export``.

A recording is JSON lines, one per token: ``{"frame", "t", "text"}``, with ``"s"`` (the
frame's start since the first frame's), ``"source"`` and, on a frame's last record,
``"finish"`` ("stop": the model ended its answer; "length": the token limit did; none: the
show cut it).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..director.parser import FRAME_MARK
from ..errors import PeteError

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
