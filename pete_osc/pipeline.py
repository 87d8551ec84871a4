"""The live loop: newest frame -> engine -> token stream -> parser -> events.

One frame at a time, on the calling (main) thread: MLX's streams are per thread, and a
signal handler on the main thread can stop generation between two tokens. A frame whose
inference fails is logged and skipped; the loop goes on.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from .capture import Frame, LatestFrame
from .director import Director
from .engines import Engine, FrameTimes, square_rgb
from .events import Event, FrameInfo, Rejection
from .parser import LineParser, Record

log = logging.getLogger(__name__)


@dataclass
class FrameReport:
    """What happened to one frame, for the status line, the summary and metrics."""

    frame_id: int
    captured_at: float
    tokens: int = 0
    ttft: float | None = None  # seconds from engine start to first token
    tbt: list[float] = field(default_factory=list)  # seconds between tokens
    events: int = 0
    rejected: int = 0
    truncated: bool = False
    finish: str | None = None
    prompt_len: int | None = None
    prefilled: int | None = None  # positions run through the model before the first token
    error: str | None = None
    stopped: bool = False
    source: str = ""
    started_at: float | None = None  # time.time() when inference began
    vision: float | None = None  # seconds in the vision encoder, where the engine tells
    token_times: list[float] = field(default_factory=list)  # seconds since start, per token
    first_event_at: float | None = None  # time.time() when the first event was parsed


@dataclass
class Summary:
    """Totals over a run, printed at exit."""

    frames: int = 0
    errors: int = 0
    tokens: int = 0
    events: int = 0
    rejected: int = 0
    dropped: int = 0
    ttft: list[float] = field(default_factory=list)
    tbt: list[float] = field(default_factory=list)
    to_event: list[float] = field(default_factory=list)  # capture -> first event, seconds
    started: float | None = None  # time.monotonic() when the first frame began
    ended: float | None = None  # when the last frame finished

    def begin(self) -> None:
        """The first frame starts now: the run's time counts from here (not from loading
        the model or warming it up)."""
        if self.started is None:
            self.started = time.monotonic()

    def add(self, report: FrameReport) -> None:
        self.ended = time.monotonic()
        self.frames += 1
        self.errors += report.error is not None
        self.tokens += report.tokens
        self.events += report.events
        self.rejected += report.rejected
        if report.ttft is not None:
            self.ttft.append(report.ttft)
        self.tbt.extend(report.tbt)
        if report.first_event_at is not None:
            self.to_event.append(report.first_event_at - report.captured_at)

    def line(self) -> str:
        """The closing summary: every figure with its label."""
        took = (self.ended or time.monotonic()) - self.started if self.started else 0.0
        rate = f" ({self.frames / took:.1f} frames/s)" if took > 0 and self.frames > 1 else ""
        return (f"{self.frames} frames in {took:.1f} s from the first frame{rate}; "
                f"frames dropped: {self.dropped}, failed: {self.errors}; "
                f"tokens: {self.tokens}, events: {self.events}, lines rejected: {self.rejected}; "
                f"median TTFT: {_ms(self.ttft)}, TBT: {_ms(self.tbt)}, "
                f"frame to first event: {_ms(self.to_event)}")


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f} ms" if values else "-"


def run_frame(engine: Engine, director: Director, frame: Frame, size: int,
              on_text: Callable[[str], None], on_record: Callable[[Record], None],
              stop: threading.Event) -> FrameReport:
    """Run one frame through the engine and the parser.

    ``on_text`` gets each token's text as it arrives (the raw stream); ``on_record`` each
    Event or Rejection the moment its line completes.
    """
    report = FrameReport(frame.id, frame.captured_at, source=frame.source)
    parser = LineParser(director, FrameInfo(frame.id, frame.source, frame.captured_at))
    times = FrameTimes()
    last = None
    report.started_at = time.time()
    stream = engine.stream(square_rgb(frame.image, size), times)
    try:
        for token in stream:
            if stop.is_set():
                report.stopped = True
                break
            if token.finish is None:  # a new token (the closing record only flushes text)
                if last is None:
                    report.ttft = token.at - times.started
                else:
                    report.tbt.append(token.at - last)
                last = token.at
                report.tokens += 1
                report.token_times.append(token.at - times.started)
            report.finish = token.finish or report.finish
            if token.text:
                on_text(token.text)
                _deliver(parser.feed(token.text), report, on_record)
    finally:
        close = getattr(stream, "close", None)
        if close:
            close()
    report.truncated = report.finish == "length"
    report.prompt_len = times.prompt_len
    report.prefilled = times.prefilled
    report.vision = times.extra.get("vision_s")
    if not report.stopped:
        _deliver(parser.finish(truncated=report.truncated), report, on_record)
    return report


def _deliver(records: list[Record], report: FrameReport, on_record) -> None:
    for record in records:
        if isinstance(record, Event):
            report.events += 1
            if report.first_event_at is None:
                report.first_event_at = record.completed_at
        elif isinstance(record, Rejection):
            report.rejected += 1
            log.debug("frame %d line %d rejected: %s (%r)", record.frame_id, record.line,
                      record.reason, record.raw)
        on_record(record)


def paced(grabber: LatestFrame, fps: float, stop: threading.Event) -> Iterator[Frame]:
    """The newest frame at most ``fps`` times a second (0: as fast as the engine goes).

    A tick that finds inference still busy is not made up later: the next frame simply
    starts as soon as the engine is free, on the newest frame.
    """
    period = 1.0 / fps if fps > 0 else 0.0
    next_at = time.monotonic()
    while not stop.is_set():
        delay = next_at - time.monotonic()
        if delay > 0 and stop.wait(delay):
            return
        frame = grabber.newest(timeout=0.25)
        if frame is None:
            if grabber.ended.is_set():
                return
            continue
        next_at = max(next_at + period, time.monotonic()) if period else 0.0
        yield frame


def run(frames: Iterable[Frame], engine: Engine, director: Director, size: int,
        on_text: Callable[[str], None], on_record: Callable[[Record], None],
        on_frame: Callable[[Frame], None], on_report: Callable[[FrameReport], None],
        stop: threading.Event, max_frames: int | None = None,
        drops: Callable[[], int] = lambda: 0, summary: Summary | None = None) -> Summary:
    """The main loop over ``frames``; returns the summary when the frames end or ``stop``.

    ``summary`` (made by the caller, so that it can report a run it had to cut short) is
    filled in frame by frame."""
    summary = summary if summary is not None else Summary()
    for frame in frames:
        if stop.is_set():
            break
        summary.begin()
        on_frame(frame)
        try:
            report = run_frame(engine, director, frame, size, on_text, on_record, stop)
        except Exception as exc:  # one bad frame never ends the show
            report = FrameReport(frame.id, frame.captured_at, error=f"{type(exc).__name__}: {exc}")
            log.error("frame %d failed: %s", frame.id, report.error)
        summary.dropped = drops()
        summary.add(report)
        on_report(report)
        if report.stopped or (max_frames and summary.frames >= max_frames):
            break
    summary.dropped = drops()
    return summary
