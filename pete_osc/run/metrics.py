"""Latency you can see: per-frame records for ``--metrics FILE`` and the live status line.

A record (one JSON line per frame) has the frame's capture time, when inference began,
the vision-encode time where the engine tells it, the time to first token and every
token's time, when the first event was parsed and when its first message left the
socket, tokens, events, rejected lines and frames dropped so far. Times are seconds;
``*_at`` are Unix times, the rest are offsets from the start of inference.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from collections import deque
from pathlib import Path
from typing import Callable, TextIO

from ..records import FrameReport
from .summary import step_times
from .taps import Tap, TapFile


def frame_record(report: FrameReport) -> dict:
    """The JSON-ready metrics of one frame."""
    r = report
    first_sent_at = r.first_sent_at

    def rounded(v):
        return None if v is None else round(v, 6)

    return {
        "frame": r.frame_id,
        "source": r.source,
        "captured_at": rounded(r.captured_at),
        "started_at": rounded(r.started_at),
        "queued": rounded(r.started_at - r.captured_at) if r.started_at else None,
        "vision": rounded(r.vision),
        "ttft": rounded(r.ttft),
        "token_times": [round(t, 6) for t in r.token_times],
        "tokens": r.tokens,
        "prompt_len": r.prompt_len,
        "prefilled": r.prefilled,
        "steps": r.steps,
        "first_event_at": rounded(r.first_event_at),
        "capture_to_event": rounded(r.first_event_at - r.captured_at) if r.first_event_at else None,
        "first_sent_at": rounded(first_sent_at),
        "capture_to_sent": rounded(first_sent_at - r.captured_at) if first_sent_at else None,
        "events": r.events,
        "rejected": r.rejected,
        "finish": r.finish,
        "dropped": r.dropped,
        "skipped": r.skipped,
        "error": r.error,
        "watchdog": r.watchdog,
        "coalesced": r.coalesced,
        "instruction": r.instruction,
        "context": r.context,
        "ahead_ms": round(r.ahead_s * 1000, 1) if r.ahead_s is not None else None,
    }


class MetricsFile(TapFile, Tap):
    """Appends one JSON line per frame (see :class:`TapFile`)."""

    def __init__(self, path: str | Path):
        super().__init__(path, "--metrics")
        self.name = f"--metrics {path}"

    def take(self, record) -> None:
        if isinstance(record, FrameReport):
            self.write(frame_record(record))

    def write(self, record: dict) -> None:
        self.write_line(json.dumps(record) + "\n")


class Status(Tap):
    """A line per frame on stderr: rewritten in place on a terminal (:class:`StatusLine`),
    one plain line per frame otherwise; nothing with ``-q``. ``shared``: the token stream
    writes to the same terminal, so the status line may not be rewritten in place (it
    would land in the middle of the tokens): each one then ends its line."""

    name = "the status line"

    def __init__(self, sent: Callable[[], int] | None = None, stream: TextIO = sys.stderr,
                 shared: bool = False):
        self.sent = sent  # messages sent so far, where there is a mapping
        self.stream = stream
        self.line = StatusLine(stream, own_lines=shared) if StatusLine.wanted(stream) else None

    def take(self, record) -> None:
        if not isinstance(record, FrameReport):
            return
        sent = self.sent() if self.sent is not None else None
        if self.line is not None:
            self.line.update(frame_record(record), sent)
        elif record.error is None and record.watchdog is None:  # failures have their line
            print(f"pete-osc: {plain_status(record)}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.line is not None:
            self.line.end()


def plain_status(report: FrameReport) -> str:
    """One frame in one line, for a log."""
    steps = sorted(step_times(report))  # per decode step (forced text's zero gaps left out)
    tbt = f"{steps[len(steps) // 2] * 1000:.0f} ms" if steps else "-"
    ttft = f"{report.ttft * 1000:.0f} ms" if report.ttft is not None else "-"
    cut = " (cut at token limit)" if report.truncated else ""
    return (f"frame {report.frame_id} ({report.source}): TTFT {ttft}, TBT {tbt}, "
            f"{report.tokens} tokens, {report.events} events, {report.rejected} rejected{cut}; "
            f"{report.dropped} frames dropped" + (f", {report.skipped} skipped by --fps"
                                                   if report.skipped else ""))


class StatusLine:
    """One line on stderr, rewritten in place, with rolling medians over recent frames.

    Only on a terminal: when stderr is a file or a pipe, a plain line per frame is more
    useful, and the caller writes that instead."""

    def __init__(self, stream: TextIO = sys.stderr, window: int = 20, own_lines: bool = False):
        self.stream = stream
        self.own_lines = own_lines  # a whole line each time (the terminal is shared)
        self.frames: deque[dict] = deque(maxlen=window)

    @staticmethod
    def wanted(stream: TextIO = sys.stderr) -> bool:
        return hasattr(stream, "isatty") and stream.isatty()

    def update(self, record: dict, sent: int | None = None) -> str:
        self.frames.append(record)
        line = self.text(sent)
        self.stream.write(f"pete-osc: {line}\n" if self.own_lines else "\r\x1b[2K" + line)
        self.stream.flush()
        return line

    def text(self, sent: int | None = None) -> str:
        frames = list(self.frames)

        def med(key):
            values = [f[key] for f in frames if f.get(key) is not None]
            return statistics.median(values) * 1000 if values else None

        # per decode step: forced text arrives with the token before it (a zero gap)
        tbts = [b - a for f in frames for a, b in zip(f["token_times"], f["token_times"][1:])
                if b > a]
        tbt = statistics.median(tbts) * 1000 if tbts else None
        span = (frames[-1]["captured_at"] - frames[0]["captured_at"]) if len(frames) > 1 else 0
        fps = (len(frames) - 1) / span if span > 0 else 0.0
        source = frames[-1].get("source")
        parts = [f"frame {frames[-1]['frame']}" + (f" ({source})" if source else ""), _ms("TTFT", med("ttft")), _ms("TBT", tbt),
                 _ms("frame->event", med("capture_to_event")), f"{fps:.1f} fps",
                 f"dropped {frames[-1]['dropped']}"]
        if frames[-1].get("skipped"):
            parts.append(f"skipped {frames[-1]['skipped']}")
        if sent is not None:
            parts.append(f"sent {sent}")
        errors = sum(1 for f in frames if f.get("error"))
        if errors:
            parts.append(f"{errors} failed")
        return " | ".join(parts)

    def end(self) -> None:
        if self.frames and not self.own_lines:
            self.stream.write("\n")
            self.stream.flush()


def same_terminal(a: TextIO, b: TextIO) -> bool:
    """Whether two streams write to one terminal (stdout and stderr in a shell)."""
    try:
        return a.isatty() and b.isatty() and os.path.samestat(os.fstat(a.fileno()),
                                                             os.fstat(b.fileno()))
    except (OSError, ValueError, AttributeError):
        return False


def _ms(label: str, value: float | None) -> str:
    return f"{label} {value:.0f} ms" if value is not None and value >= 10 else (
        f"{label} {value:.1f} ms" if value is not None else f"{label} -")
