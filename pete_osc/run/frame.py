"""One frame through the engine and the parser, as a stream of typed records.

:func:`frame_records` yields, in order: a :class:`Text` per streamed token (the raw
stream), each :class:`~pete_osc.records.Event` or :class:`~pete_osc.records.Rejection` the
moment its line completes, and last the frame's :class:`FrameReport`. It runs on the
calling (main) thread: MLX's streams are per thread, and a signal handler on the main
thread can stop generation between two tokens. The show (:mod:`pete_osc.run.show`) runs it
for every frame; a frame whose inference fails is reported, and the show goes on.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterator

from ..director.parser import LineParser
from ..director.schema import Director
from ..engines import Engine, Prompt, square_rgb
from ..records import Event, Frame, FrameInfo, FrameReport, Record, Rejection, Text

log = logging.getLogger(__name__)


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
                  settle: Callable[[], dict] = dict,
                  ) -> Iterator[Text | Record | FrameReport]:
    """Run one frame through the engine and the parser; see the module docstring.

    ``cancel`` is asked between tokens: "stop" ends the frame as stopped (Ctrl-C), any
    other reason as ended by the watchdog. An engine error ends the frame as failed.
    ``settle`` is called once the answer is over (the caller's part of the report: the
    sender's timing, the drops) and its fields go into the report, made once, frozen.
    """
    tally = _Tally(frame)
    parser = LineParser(director, FrameInfo(frame.id, frame.source, frame.captured_at))
    started_at = time.time()
    stream = None
    try:
        stream = engine.stream(square_rgb(frame.image, size), prompt)
        for token in stream:
            reason = cancel()
            if reason is not None:
                tally.stopped = reason == "stop"
                tally.watchdog = None if tally.stopped else reason
                break
            tally.take(token)
            if token.text or token.finish:
                yield Text(frame.id, frame.source, token.text, token.at - tally.started,
                           token.finish)
            if token.text:
                yield from _counted(parser.feed(token.text), tally)
    except Exception as exc:  # one bad frame never ends the show
        reason = cancel()
        if reason is not None and reason != "stop":
            tally.watchdog = reason  # the engine gave up because the watchdog ended it
        else:
            tally.error = f"{type(exc).__name__}: {exc}"
    finally:
        close = getattr(stream, "close", None)
        if close:
            close()
    truncated = tally.finish == "length"
    yield from _counted(parser.finish(truncated=truncated, cut=_cut(tally)), tally)
    yield tally.report(started_at, truncated, **settle())


class _Tally:
    """One frame's counts while its tokens and lines arrive; :meth:`report` makes the
    frozen :class:`FrameReport` from them at the end."""

    def __init__(self, frame: Frame):
        self.frame = frame
        self.tokens = self.events = self.rejected = 0
        self.tbt: list[float] = []
        self.token_times: list[float] = []
        self.ttft = self.first_event_at = self.last = None
        self.started = 0.0
        self.prefill = None
        self.steps = self.finish = self.error = self.watchdog = None
        self.stopped = False

    def take(self, token) -> None:
        if token.prefill is not None:
            self.prefill = token.prefill
            self.started = token.prefill.started
        self.steps = token.steps if token.steps is not None else self.steps
        if token.finish is None:  # a new token (the closing record only flushes text)
            if self.last is None:
                self.ttft = token.at - self.started
            else:
                self.tbt.append(token.at - self.last)
            self.last = token.at
            self.tokens += 1
            self.token_times.append(token.at - self.started)
        self.finish = token.finish or self.finish

    def report(self, started_at: float, truncated: bool, **settled) -> FrameReport:
        f, p = self.frame, self.prefill
        return FrameReport(
            f.id, f.captured_at, tokens=self.tokens, ttft=self.ttft, tbt=tuple(self.tbt),
            events=self.events, rejected=self.rejected, truncated=truncated,
            finish=self.finish, prompt_len=p.prompt_len if p else None,
            prefilled=p.prefilled if p else None, steps=self.steps, error=self.error,
            stopped=self.stopped, watchdog=self.watchdog, source=f.source,
            started_at=started_at, vision=p.vision if p else None,
            token_times=tuple(self.token_times), first_event_at=self.first_event_at, **settled)


def _cut(report: "_Tally") -> str | None:
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


def _counted(records: list[Record], report: "_Tally") -> Iterator[Record]:
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
