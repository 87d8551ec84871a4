"""The incremental DIRECTOR parser: text chunks in, typed events out, line by line.

An event leaves the moment its newline arrives, not when the frame's answer ends, so the
first value of a frame reaches the music while the model is still writing the rest.
Nothing here raises on any input text: a line that does not fit becomes a Rejection.
"""

from __future__ import annotations

import re
import time
from typing import Callable, Iterable, Iterator

from ..records import Event, FrameEnd, FrameInfo, Record, Rejection
from .schema import Director
from .values import Invalid, coerce

# Markdown and list decorations a small model puts around its lines.
_BULLET = re.compile(r"^\s*(?:[-*+\u2022\u2013>]+|\d{1,2}[.)])\s*")
_SEP = re.compile(r"\s*(?::|=|\s-\s|\u2192|->)\s*")
_QUOTES = "\"'`*_\u201c\u201d\u2018\u2019"
_TRAILING = " .,;!\t" + _QUOTES
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0 and C1 controls, not tab
# The separator `pete-osc run` writes between frames on stdout: "--- frame 12"
# "--- frame 12", or "--- frame 12 from stage" when a run has several sources.
FRAME_MARK = re.compile(r"^--- frame (\d+)(?: from ([A-Za-z0-9][A-Za-z0-9_-]*))?\b")


def split_line(line: str) -> tuple[str, str] | None:
    """Split a model line into (key, value) text, normalised; None if it has no key.

    Tolerates bullets, numbering, quotes, bold markers, `=` or `:` and case.
    """
    line = _BULLET.sub("", line.strip())
    parts = _SEP.split(line, maxsplit=1)
    if len(parts) != 2:
        return None
    key = parts[0].strip(_QUOTES + " ").lower()
    key = re.sub(r"[\s-]+", "_", key)
    value = parts[1].strip().rstrip(_TRAILING).lstrip(_QUOTES + " ")
    if not key:
        return None
    return key, value


def parse_line(director: Director, line: str, number: int, frame: FrameInfo,
               completed_at: float) -> Record | None:
    """One complete line to an Event, a Rejection, or None for a blank line."""
    if not line.strip():
        return None
    if _CONTROL.search(line):
        # A model does not write escape codes or NULs in a healthy answer: a line with them
        # is garbled, and its value (``0.\x00\x1b[2J7``) is not guessed at.
        return Rejection(line, "control characters in the line", number, frame.frame_id)
    split = split_line(line)
    if split is None:
        return Rejection(line, "no 'key: value' in the line", number, frame.frame_id)
    key, text = split
    spec = director.keys.get(key)
    if spec is None:
        return Rejection(line, f"unknown key {key!r}", number, frame.frame_id, key=key)
    if spec.measure:
        return Rejection(line, f"{key!r} is measured from the pixels, not asked of the model",
                         number, frame.frame_id, key=key)
    try:
        value = coerce(spec, text, director.colors)
    except Invalid as exc:
        return Rejection(line, str(exc), number, frame.frame_id, key=key)
    return Event(key, spec.type, value, line.strip(), number, frame.frame_id,
                 frame.source, frame.captured_at, completed_at)


class LineParser:
    """Feed text as it streams; get records for the lines it completed.

    One parser per frame's answer. ``finish`` handles the last, unterminated line: when
    the model itself ended its answer it is parsed as a complete line; when anything else
    ended it (the token limit, the watchdog, a dropped connection, an engine error, a
    stop) it is refused as cut, never emitted as a value: ``energy: 0.`` cut mid-number
    would otherwise be sent as 0.0.
    """

    def __init__(self, director: Director, frame: FrameInfo,
                 clock: Callable[[], float] = time.time):
        self.director = director
        self.frame = frame
        self.clock = clock
        self._pending = ""
        self._lines = 0

    def feed(self, text: str) -> list[Record]:
        """Add a chunk of text; return the records of the lines it completed."""
        if not text:
            return []
        self._pending += text
        if "\n" not in text and "\r" not in text:
            return []
        *complete, self._pending = re.split(r"\r\n|\r|\n", self._pending)
        now = self.clock()
        return [r for line in complete if (r := self._line(line, now)) is not None]

    @property
    def lines(self) -> int:
        """Non-empty lines seen so far."""
        return self._lines

    def finish(self, truncated: bool = False, cut: str | None = None) -> list[Record]:
        """End of the answer: settle the last line (see the class docstring).
        ``truncated``: the token limit cut it; ``cut``: what else cut it, in words."""
        line, self._pending = self._pending, ""
        if not line.strip():
            return []
        if truncated or cut:
            self._lines += 1
            split = split_line(line)
            why = "truncated by the token limit" if truncated else f"cut: {cut}"
            return [Rejection(line, why, self._lines, self.frame.frame_id,
                              key=split[0] if split else None, truncated=True)]
        record = self._line(line, self.clock())
        return [record] if record is not None else []

    def _line(self, line: str, now: float) -> Record | None:
        if not line.strip():
            return None
        self._lines += 1
        return parse_line(self.director, line, self._lines, self.frame, now)


def parse_text_stream(director: Director, chunks: Iterable[str], source: str = "stdin",
                      clock: Callable[[], float] = time.time,
                      frame_ends: bool = False) -> Iterator[Record | FrameEnd]:
    """Parse DIRECTOR text that may hold many frames (``--- frame N`` lines between them).

    Used by ``pete-osc parse`` and ``pete-osc send`` on a file or stdin: lines are yielded
    as they complete, so ``pete-osc run | pete-osc parse`` stays live. With ``frame_ends``
    a :class:`FrameEnd` follows each frame's last record.
    """
    frame_id = 0
    parser = LineParser(director, FrameInfo(frame_id, source, clock()), clock)
    buffer = ""
    for chunk in chunks:
        buffer += chunk
        if "\n" not in buffer:
            continue
        *lines, buffer = buffer.split("\n")
        for line in lines:
            mark = FRAME_MARK.match(line)
            if mark:
                yield from parser.finish(truncated=False)
                if frame_ends and parser.lines:
                    yield FrameEnd(frame_id)
                frame_id = int(mark.group(1))
                parser = LineParser(director, FrameInfo(frame_id, mark.group(2) or source,
                                                        clock()), clock)
                continue
            yield from parser.feed(line + "\n")
    if buffer:
        yield from parser.feed(buffer)
    yield from parser.finish(truncated=False)
    if frame_ends and parser.lines:
        yield FrameEnd(frame_id)
