"""The show's loop when several sources' frames are answered together (one batch; see
pete_osc.engines.batch).

Each source has at most one frame in the batch, so its frames are answered in order;
a source whose answer is over takes its next frame at the next step while the others go
on (continuous batching). Each frame is pushed through its own
:class:`~pete_osc.run.frame.FrameRun`, so its records (the raw stream, the events the
moment their line completes, the report) are exactly those of a frame answered alone,
and go to the sender and the taps the same way. The watchdog's rules hold per frame: a
frame that goes ``stall`` seconds without a token or runs past ``frame_limit`` is ended,
the others go on; a frame whose own part fails (its grammar, its prompt) ends alone.
Saved edits of DIRECTOR.md and the mapping are applied once the frames in the batch are
answered (no new frame joins meanwhile). Ctrl-C ends every frame at the next step.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from ..engines.base import Prompt
from ..engines.batch import Batch, Ended
from ..records import Event, Frame, FrameReport
from .frame import FrameRun
from .watchdog import overdue

log = logging.getLogger(__name__)


@dataclass
class _Active:
    frame: Frame
    run: FrameRun
    prompt: Prompt
    started: float  # time.monotonic() when it joined
    last: float  # ... and at its last token
    said: list[Event] = field(default_factory=list)


def open_batch(show) -> Batch | None:
    """Where several sources run and the engine can, a batch for their frames (said on
    stderr); None: one frame at a time (one source, ``--no-batch``, an engine that
    cannot)."""
    sources = len(show.feeds.feeds)
    if sources < 2 or not show.config.batch:
        return None
    try:
        batch = show.engine.batch(sources)
    except Exception as exc:
        log.warning("the sources' frames cannot be answered together here (%s: %s); "
                    "they take turns", type(exc).__name__, exc)
        return None
    if batch is not None:
        show.say(f"{sources} sources answered together, in one batch (--no-batch: in turn)")
    return batch


class Batched:
    """See the module docstring; the show owns it for one ``run``."""

    def __init__(self, show, batch: Batch, clock=time.monotonic):
        self.show = show
        self.batch = batch
        self.clock = clock
        self.active: dict[str, _Active] = {}  # source -> the frame it has in the batch
        self.taken = 0
        self.reload_due = False

    def run(self) -> None:
        show, c = self.show, self.show.config
        try:
            while not show.stop.is_set():
                show._drain()
                self.reload_due = self.reload_due or show.watch.due()
                if self.reload_due and not self.active:
                    self.reload_due = False
                    show._reload()
                if not self.reload_due:
                    self._admit(wait=not self.active)
                if not self.active:
                    if show.feeds.ended or (c.max_frames and self.taken >= c.max_frames):
                        show._boundary()
                        break
                    continue
                self._step()
                self._watch(self.clock())
        finally:
            for source in list(self.active):
                self._cut(source, "stop")
            self.batch.close()

    def _admit(self, wait: bool) -> None:
        """Frames of the sources with none in the batch join it (waiting up to 0.25 s for
        the first when the batch is empty)."""
        show, c = self.show, self.show.config
        timeout = 0.25 if wait else 0.0
        while self.batch.free > 0 and not (c.max_frames and self.taken >= c.max_frames):
            frame = show.feeds.next(show.stop, timeout=timeout, busy=set(self.active))
            if frame is None:
                return
            timeout = 0.0
            self.taken += 1
            self._join(frame)

    def _join(self, frame: Frame) -> None:
        show = self.show
        show.summary.begin()
        director = show.files.director
        run = FrameRun(director, frame)
        prompt = show._prompt_for(director, frame.source)
        now = self.clock()
        active = self.active[frame.source] = _Active(frame, run, prompt, now, now)
        try:
            show._pass(run.start(show.config.size), active.said)
            self.batch.join(frame.source, run.image, prompt)
        except Exception as exc:  # (a frame that cannot be made square, a full batch)
            run.fail(exc)
            self._end(frame.source)

    def _step(self) -> None:
        try:
            results = self.batch.step()
        except Exception as exc:  # the model call failed: every frame in it ends, failed
            log.debug("batch step failed", exc_info=True)
            for source in list(self.active):
                self.batch.drop(source)
                self.active[source].run.fail(exc)
                self._end(source)
            return
        now = self.clock()
        for result in results:
            if isinstance(result, Ended):
                self.active[result.key].run.fail(result.error)
                self._end(result.key)
                continue
            source, tokens = result
            active = self.active[source]
            active.last = now
            for token in tokens:
                for record in active.run.take(token):
                    self.show._pass(record, active.said)
            if tokens and tokens[-1].finish is not None:
                self._end(source)

    def _watch(self, now: float) -> None:
        """The watchdog's rules, per frame (time passed in)."""
        c = self.show.config
        for source, active in list(self.active.items()):
            reason = overdue(now, active.started, active.last, c.stall, c.frame_limit)
            if reason is None:
                continue
            log.warning("frame %d (%s): %s; ended by the watchdog, the show goes on with "
                        "the next frame", active.frame.id, source, reason)
            self._cut(source, reason)

    def _cut(self, source: str, reason: str) -> None:
        """End ``source``'s frame before its answer is over: "stop" or the watchdog's reason."""
        self.batch.drop(source)
        self.active[source].run.cancel(reason)
        self._end(source)

    def _end(self, source: str) -> None:
        show = self.show
        active = self.active.pop(source)
        records = active.run.finish(**show._settle(active.frame, active.prompt))
        report = records[-1]
        assert isinstance(report, FrameReport)
        for record in records[:-1]:
            show._pass(record, active.said)
        show._ended(active.frame, active.said, report)
