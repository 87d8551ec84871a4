"""What a run adds up to: the closing summary's totals and medians, and the failed frames
said once (a server that stays down is one line, its return another)."""

from __future__ import annotations

import logging
import re
import statistics
import time
from collections import deque
from dataclasses import dataclass, field

from ..records import FrameReport

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


class Failures:
    """A failed frame is one line; the same failure again is counted, not said, until a
    frame is answered (one line: back). For a remote server, whatever fails until it
    answers again is one failure: a server that goes down fails in several ways in turn
    (vLLM killed: its engine gone, then connections refused, then time-outs while it
    starts again), and that is one outage to a musician."""

    def __init__(self) -> None:
        self.failing: list | None = None  # [the failure in words, frames failed so]

    def add(self, report: FrameReport) -> None:
        """A failed frame is one line; the same failure again (a server that stays down)
        is counted, not said again, until a frame is answered (one line: back)."""
        if report.error is None:
            if self.failing is not None and report.watchdog is None:
                log.warning("frames are answered again (%d failed meanwhile: %s)",
                            self.failing[1], self.failing[0])
                self.failing = None
            return
        reason = _outage(report.error)
        if self.failing is not None and self.failing[0] == reason:
            self.failing[1] += 1
            log.debug("frame %d (%s) failed: %s", report.frame_id, report.source, report.error)
            return
        self.failing = [reason, 1]
        log.error("frame %d (%s) failed: %s; the show goes on with the next frame",
                  report.frame_id, report.source, report.error)


def _outage(text: str) -> str:
    """What tells one failure from another: the server, for a remote server's errors;
    otherwise the error without its counts and times."""
    server = re.match(r"RemoteError: (\S+?): ", text)
    return f"RemoteError: {server.group(1)}" if server else _without_numbers(text)


def _without_numbers(text: str) -> str:
    """A failure without its counts and times ("after 3 tokens"), to tell the same one."""
    return re.sub(r"\d+(\.\d+)?", "N", text)
