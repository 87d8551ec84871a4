"""One frame through the engine and the parser, as a stream of typed records.

:func:`frame_records` yields, in order: a :class:`Text` per streamed token (the raw
stream), each :class:`~pete_osc.events.Event` or :class:`~pete_osc.events.Rejection` the
moment its line completes, and last the frame's :class:`FrameReport`. It runs on the
calling (main) thread: MLX's streams are per thread, and a signal handler on the main
thread can stop generation between two tokens. The show (:mod:`pete_osc.show`) runs it
for every frame; a frame whose inference fails is reported, and the show goes on.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterator

from .capture import Frame
from .director import Director
from .engines import Engine, FrameTimes, Prompt, square_rgb
from .events import Event, FrameInfo, Rejection
from .parser import LineParser, Record

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrameStart:
    """A frame goes to the engine now (its pixels at capture size, for who wants them)."""

    frame: Frame


@dataclass(frozen=True)
class Text:
    """One streamed token's text; ``t`` is seconds since the engine began the frame."""

    frame_id: int
    source: str
    text: str
    t: float
    finish: str | None = None


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
    steps: int | None = None  # forward passes after the prefill (forced text rides along)
    error: str | None = None
    stopped: bool = False
    watchdog: str | None = None  # why the watchdog ended the frame, if it did
    source: str = ""
    started_at: float | None = None  # time.time() when inference began
    vision: float | None = None  # seconds in the vision encoder, where the engine tells
    token_times: list[float] = field(default_factory=list)  # seconds since start, per token
    first_event_at: float | None = None  # time.time() when the first event was parsed
    dropped: int = 0  # frames lost so far while the engine was busy (all sources)
    skipped: int = 0  # frames passed over so far between --fps ticks, by design
    first_sent_at: float | None = None  # time.time() when its first message left
    coalesced: int | None = None  # messages merged over a target's max_rate, run so far
    instruction: str | None = None  # the instruction as sent, where it changes per frame
    context: str | None = None  # the text before the image as sent, likewise
    # Seconds the engine spent on this frame's prompt before the frame was taken (its
    # context prefilled ahead, see Show._ahead); not part of its latency.
    ahead_s: float | None = None


# The summary's medians are over the last this many frames: a 4-hour show at 20 frames/s
# (288,000 frames) keeps the same few hundred kB as a 4-minute one.
SUMMARY_WINDOW = 4096


def _window() -> deque:
    return deque(maxlen=SUMMARY_WINDOW)


def step_times(report: "FrameReport") -> list[float]:
    """The seconds of each decode step: the gaps between tokens, less the zero gaps of text
    the grammar forced (it arrives with the token before it, in the same step)."""
    return [t for t in report.tbt if t > 0]


@dataclass
class SourceTotals:
    """One source's share of a run."""

    frames: int = 0
    to_event: deque = field(default_factory=_window)


@dataclass
class Summary:
    """Totals over a run, printed at exit. Counts are over the whole run; the medians over
    the last SUMMARY_WINDOW frames (TTFT and frame to first event one value a frame, TBT
    each frame's median decode step), so the summary's memory does not grow with the run.
    """

    frames: int = 0
    errors: int = 0
    watchdog: int = 0  # frames ended by the watchdog
    tokens: int = 0
    events: int = 0
    rejected: int = 0
    dropped: int = 0
    skipped: int = 0
    ttft: deque = field(default_factory=_window)
    tbt: deque = field(default_factory=_window)  # each frame's median decode step
    to_event: deque = field(default_factory=_window)  # capture -> first event, seconds
    sources: dict[str, SourceTotals] = field(default_factory=dict)
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
        self.errors += report.error is not None and report.watchdog is None
        self.watchdog += report.watchdog is not None
        self.tokens += report.tokens
        self.events += report.events
        self.rejected += report.rejected
        self.dropped = max(self.dropped, report.dropped)
        self.skipped = max(self.skipped, report.skipped)
        if report.ttft is not None:
            self.ttft.append(report.ttft)
        steps = step_times(report)
        if steps:
            self.tbt.append(statistics.median(steps))
        totals = self.sources.setdefault(report.source, SourceTotals())
        totals.frames += 1
        if report.first_event_at is not None:
            self.to_event.append(report.first_event_at - report.captured_at)
            totals.to_event.append(report.first_event_at - report.captured_at)

    def line(self) -> str:
        """The closing summary: every figure with its label."""
        took = (self.ended or time.monotonic()) - self.started if self.started else 0.0
        rate = f" ({self.frames / took:.1f} frames/s)" if took > 0 and self.frames > 1 else ""
        watchdog = f", ended by the watchdog: {self.watchdog}" if self.watchdog else ""
        text = (f"{self.frames} frames in {took:.1f} s from the first frame{rate}; "
                f"frames dropped: {self.dropped}{_skipped(self.skipped)}, "
                f"failed: {self.errors}{watchdog}; "
                f"tokens: {self.tokens}, events: {self.events}, lines rejected: {self.rejected}; "
                f"median TTFT: {_ms(self.ttft)}, TBT: {_ms(self.tbt)}, "
                f"frame to first event: {_ms(self.to_event)}")
        if len(self.sources) > 1:
            text += "; per source: " + ", ".join(
                f"{name} {t.frames} frames (frame to first event {_ms(t.to_event)})"
                for name, t in self.sources.items())
        return text


def _skipped(skipped: int) -> str:
    return f" (and {skipped} skipped by --fps, as asked)" if skipped else ""


def _ms(values) -> str:
    return f"{statistics.median(values) * 1000:.0f} ms" if values else "-"


def frame_records(engine: Engine, director: Director, frame: Frame, size: int,
                  prompt: Prompt | None = None,
                  cancel: Callable[[], str | None] = lambda: None,
                  ) -> Iterator[Text | Record | FrameReport]:
    """Run one frame through the engine and the parser; see the module docstring.

    ``cancel`` is asked between tokens: "stop" ends the frame as stopped (Ctrl-C), any
    other reason as ended by the watchdog. An engine error ends the frame as failed.
    """
    report = FrameReport(frame.id, frame.captured_at, source=frame.source)
    parser = LineParser(director, FrameInfo(frame.id, frame.source, frame.captured_at))
    times = FrameTimes()
    last = None
    report.started_at = time.time()
    stream = None
    try:
        stream = engine.stream(square_rgb(frame.image, size), times, prompt)
        for token in stream:
            reason = cancel()
            if reason is not None:
                report.stopped = reason == "stop"
                report.watchdog = None if report.stopped else reason
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
            if token.text or token.finish:
                yield Text(frame.id, frame.source, token.text, token.at - times.started,
                           token.finish)
            if token.text:
                yield from _counted(parser.feed(token.text), report)
    except Exception as exc:  # one bad frame never ends the show
        reason = cancel()
        if reason is not None and reason != "stop":
            report.watchdog = reason  # the engine gave up because the watchdog ended it
        else:
            report.error = f"{type(exc).__name__}: {exc}"
    finally:
        close = getattr(stream, "close", None)
        if close:
            close()
    report.truncated = report.finish == "length"
    report.prompt_len = times.prompt_len
    report.prefilled = times.prefilled
    report.steps = times.steps
    report.vision = times.extra.get("vision_s")
    yield from _counted(parser.finish(truncated=report.truncated, cut=_cut(report)), report)
    yield report


def _cut(report: FrameReport) -> str | None:
    """What ended the answer before the model did, in words; None where the model ended
    it (or the token limit did: that is ``truncated``)."""
    if report.stopped:
        return "the run was stopped"
    if report.watchdog is not None:
        return f"the watchdog ended the frame ({report.watchdog})"
    if report.error is not None:
        return f"the answer failed ({report.error})"
    if report.finish not in ("stop", "length"):
        return f"the answer ended early ({report.finish or 'no finish from the engine'})"
    return None


def _counted(records: list[Record], report: FrameReport) -> Iterator[Record]:
    for record in records:
        if isinstance(record, Event):
            report.events += 1
            if report.first_event_at is None:
                report.first_event_at = record.completed_at
        elif isinstance(record, Rejection):
            report.rejected += 1
            log.debug("frame %d line %d rejected: %s (%r)", record.frame_id, record.line,
                      record.reason, record.raw)
        yield record


def run_frame(engine: Engine, director: Director, frame: Frame, size: int,
              on_text: Callable[[str], None], on_record: Callable[[Record], None],
              stop: threading.Event, prompt: Prompt | None = None) -> FrameReport:
    """:func:`frame_records` for one frame with a callback per record (for benchmarks
    and tests that look at a single frame); returns the report."""
    report = None
    for record in frame_records(engine, director, frame, size, prompt,
                                lambda: "stop" if stop.is_set() else None):
        if isinstance(record, Text):
            on_text(record.text)
        elif isinstance(record, FrameReport):
            report = record
        else:
            on_record(record)
    return report
