"""One frame through the engine and the parser, as a stream of typed records.

:func:`frame_records` yields, in order: the :class:`FrameStart` (the frame as the model
takes it: square RGB at --size, made once here), a :class:`Text` per streamed token (the raw
stream), each :class:`~pete_osc.records.Event` or :class:`~pete_osc.records.Rejection` the
moment its line completes, and last the frame's :class:`FrameReport`. It runs on the
calling (main) thread: MLX's streams are per thread, and a signal handler on the main
thread can stop generation between two tokens. The show (:mod:`pete_osc.run.show`) runs it
for every frame; a frame whose inference fails is reported, and the show goes on.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterator

from ..director.parser import LineParser
from ..director.schema import Director
from ..engines import Engine, Prompt, square_rgb
from ..records import (
    Event,
    Frame,
    FrameInfo,
    FrameReport,
    FrameStart,
    Record,
    Rejection,
    Text,
)

log = logging.getLogger(__name__)


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
    run = FrameRun(director, frame)
    stream = None
    try:
        yield run.start(size)
        stream = engine.stream(run.image, prompt)
        for token in stream:
            reason = cancel()
            if reason is not None:
                run.seen(token)  # the frame's prefill counts even if the frame ends here
                run.cancel(reason)
                break
            yield from run.take(token)
    except Exception as exc:  # one bad frame never ends the show
        reason = cancel()
        if reason is not None and reason != "stop":
            run.cancel(reason)  # the engine gave up because the watchdog ended it
        else:
            run.fail(exc)
    finally:
        close = getattr(stream, "close", None)
        if close:
            close()
    yield from run.finish(**settle())


class FrameRun:
    """One frame's way through the parser, pushed a token at a time: :func:`frame_records`
    drives it from the engine's stream, a batch (pete_osc.run.rows) from its rows' steps.
    ``start``, then ``take`` per token (``cancel`` or ``fail`` where the answer is cut),
    then ``finish``: the records each gives, in order."""

    def __init__(self, director: Director, frame: Frame):
        self.frame = frame
        self.tally = _Tally(frame)
        self.parser = LineParser(director, FrameInfo(frame.id, frame.source, frame.captured_at))
        self.started_at = time.time()
        self.image = None

    def start(self, size: int) -> FrameStart:
        """The frame as the model takes it (square RGB at ``size``), made once."""
        self.image = square_rgb(self.frame.image, size)
        return FrameStart(self.frame, self.image)

    def seen(self, token) -> None:
        self.tally.seen(token)

    def take(self, token) -> list[Text | Record]:
        """A token from the engine: its text, and the lines it completes."""
        tally, frame = self.tally, self.frame
        tally.seen(token)
        tally.take(token)
        out: list = []
        if token.text or token.finish:
            out.append(Text(frame.id, frame.source, token.text, token.at - tally.started,
                            token.finish))
        if token.text:
            out.extend(_counted(self.parser.feed(token.text), tally))
        return out

    def cancel(self, reason: str) -> None:
        """Ended before the model ended it: "stop" (Ctrl-C) or the watchdog's reason."""
        self.tally.stopped = reason == "stop"
        self.tally.watchdog = None if self.tally.stopped else reason

    def fail(self, exc: BaseException) -> None:
        self.tally.error = f"{type(exc).__name__}: {exc}"

    def finish(self, **settled) -> list[Record | FrameReport]:
        """The last line (cut where the answer was), then the frozen report."""
        truncated = self.tally.finish == "length"
        out: list = list(_counted(self.parser.finish(truncated=truncated, cut=_cut(self.tally)),
                                  self.tally))
        out.append(self.tally.report(self.started_at, truncated, **settled))
        return out


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

    def seen(self, token) -> None:
        if token.prefill is not None:
            self.prefill = token.prefill
            self.started = token.prefill.started
        self.steps = token.steps if token.steps is not None else self.steps

    def take(self, token) -> None:
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
