"""Taps: whatever only watches a show (the token echo, --json, --metrics, --record, the
status line). Each takes the show's records one by one; none is a reason for the show to
stop: a tap that fails is reported once and switched off, and the frames, events and
messages go on.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, TextIO

from ..errors import PeteError
from ..records import Event, FrameReport, FrameStart, Text

log = logging.getLogger(__name__)


class Tap:
    """Something that watches the records of a show (see :mod:`pete_osc.run.show`)."""

    name = "tap"

    def take(self, record) -> None:
        """One record: FrameStart, Text, Event, Rejection, FrameReport or Notice."""

    def close(self) -> None:
        """The show is over."""


class Taps:
    """The show's taps, each given every record; a tap that raises is switched off."""

    def __init__(self, taps: Iterable[Tap] = ()):
        self.taps: list[Tap] = [t for t in taps if t is not None]

    def take(self, record) -> None:
        for tap in list(self.taps):
            try:
                tap.take(record)
            except Exception as exc:
                self._drop(tap, exc)

    def _drop(self, tap: Tap, exc: Exception) -> None:
        log.warning("%s failed (%s: %s); it is off from now on, the show goes on",
                    tap.name, type(exc).__name__, exc)
        self.taps.remove(tap)
        try:
            tap.close()
        except Exception:
            pass

    def close(self) -> None:
        for tap in list(self.taps):
            try:
                tap.close()
            except Exception as exc:
                log.warning("%s could not finish: %s: %s", tap.name, type(exc).__name__, exc)
        self.taps = []


class TapFile:
    """A file that only watches the show (--metrics, --record): lines appended and flushed
    at once (readable while it runs). When a write fails (a full disk), that is said once
    and the file is switched off; the frames, events and messages go on."""

    def __init__(self, path: str | Path, option: str, mode: str = "a"):
        self.path = path
        self.option = option
        try:
            self._file = open(path, mode, encoding="utf-8")
        except OSError as exc:
            raise PeteError(f"{option} {path}: cannot write: {exc.strerror}") from None

    def write_line(self, line: str, flush: bool = True) -> None:
        """Append ``line`` (with its newline); flush it to the file unless told not to."""
        if self._file is None:
            return
        try:
            self._file.write(line)
            if flush:
                self._file.flush()
        except OSError as exc:
            log.warning("%s %s: cannot write (%s); it is off from now on, the show goes on",
                        self.option, self.path, exc.strerror or exc)
            self._drop()

    def flush(self) -> None:
        self.write_line("", flush=True)

    def close(self) -> None:
        if self._file is not None:
            self.flush()
            self._drop()

    def _drop(self) -> None:
        file, self._file = self._file, None
        try:
            file.close()
        except OSError:  # the buffer it could not write
            pass


class TokenEcho(Tap):
    """The raw token stream on stdout, flushed per token, with a ``--- frame N`` line
    before each frame's answer (``--- frame N from NAME`` when the run has several
    sources).

    Several sources answered together (a batch) stream at once: then each frame's text is
    written a whole line at a time, under its frame's line again whenever the frame
    changes, and never in the middle of another frame's line; with one frame open, token
    by token as before.

    When the reader goes away (``pete-osc run | head``), writing stops, ``on_closed`` is
    called once (the run then ends quietly) and ``closed`` is set. ``end_lines``: each
    frame's text ends its line when the frame ends (stdout shares a terminal with the
    status line, which must not land mid-answer); a pipe gets the stream unchanged."""

    name = "the token stream on stdout"

    def __init__(self, stream: TextIO, on_closed: Callable[[], None] = lambda: None,
                 tokens: bool = True, events: bool = False, sources: int = 1,
                 end_lines: bool = False):
        self.stream = stream
        self.on_closed = on_closed
        self.tokens = tokens  # the raw stream (default), or
        self.events = events  # the events as JSON lines (--json)
        self.named = sources > 1
        self.end_lines = end_lines
        self.closed = False
        self._at_line_start = True
        self._open: dict[int, str] = {}  # frames begun and not over -> their marker line
        self._markers: dict[int, str] = {}
        self._held: dict[int, str] = {}  # text not yet written, while several are open
        self._over: set[int] = set()
        self._last: int | None = None  # the frame whose text was written last
        self._partial: int | None = None  # the frame whose line is half written

    def take(self, record) -> None:
        if self.tokens and isinstance(record, FrameStart):
            frame = record.frame
            self._markers[frame.id] = (f"--- frame {frame.id}"
                                       + (f" from {frame.source}" if self.named else "") + "\n")
            self._open[frame.id] = self._markers[frame.id]
            if len(self._open) == 1 and not self._held:
                self._give(frame.id, "")  # its line now, before the answer begins
        elif self.tokens and isinstance(record, Text):
            if len(self._open) <= 1 and not self._held:
                self._give(record.frame_id, record.text)
            else:
                self._held[record.frame_id] = self._held.get(record.frame_id, "") + record.text
                self._flush()
        elif self.events and isinstance(record, Event):
            self._write(json.dumps(record.to_dict()) + "\n")
        elif isinstance(record, FrameReport):
            frame_id = record.frame_id
            self._open.pop(frame_id, None)
            self._over.add(frame_id)
            self._flush()  # all of its text
            if self._partial == frame_id:
                self._partial = None
                if self.end_lines and not self._at_line_start:
                    self._write("\n")
            if frame_id not in self._held:
                self._over.discard(frame_id)
                self._markers.pop(frame_id, None)
            self._flush()  # the other frames' lines it held back

    def _flush(self) -> None:
        """Every whole line held (all of an ended frame's text), frame by frame, while no
        frame's line is half written but its own."""
        progressed = True
        while progressed:  # (a line that ends lets the lines it held back out)
            progressed = False
            for frame_id in list(self._held):
                progressed |= self._flush_one(frame_id)

    def _flush_one(self, frame_id: int) -> bool:
        if self._partial is not None and self._partial != frame_id:
            return False
        text = self._held[frame_id]
        cut = len(text) if frame_id in self._over else text.rfind("\n") + 1
        if cut:
            self._give(frame_id, text[:cut])
            text = text[cut:]
        if text:
            self._held[frame_id] = text
        else:
            del self._held[frame_id]
        if frame_id in self._over and frame_id not in self._held:
            self._over.discard(frame_id)
            self._markers.pop(frame_id, None)
            if self._partial == frame_id:
                self._partial = None
        return bool(cut)

    def _give(self, frame_id: int, text: str) -> None:
        """Write ``text`` of ``frame_id``, under its frame's line where the last text
        written was another frame's."""
        if self._last != frame_id and frame_id in self._markers:
            self._write(("" if self._at_line_start else "\n") + self._markers[frame_id])
            self._last = frame_id
        self._write(text)
        if text:
            self._partial = None if text.endswith("\n") else frame_id

    def close(self) -> None:
        for frame_id in list(self._held):
            self._over.add(frame_id)
        self._partial = None
        self._flush()
        if not self._at_line_start:
            self._write("\n")

    def _write(self, text: str) -> None:
        if not text or self.closed:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except BrokenPipeError:
            self.closed = True
            silence_stdout()  # so that no later flush raises again
            self.on_closed()
            return
        self._at_line_start = text.endswith("\n")


def silence_stdout() -> None:
    """Point file descriptor 1 at /dev/null (its reader went away)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass


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
