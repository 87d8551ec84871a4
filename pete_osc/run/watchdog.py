"""The watchdog: a frame whose answer stalls or runs away is ended, and the show goes on."""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)


def overdue(now: float, started: float, last: float, stall: float, limit: float) -> str | None:
    """Why a frame begun at ``started`` whose last token came at ``last`` is to be ended
    ``now`` (no token for ``stall`` seconds, or longer than ``limit``); None: it goes on.
    A limit of 0 is none."""
    if stall and now - last > stall:
        return f"no token for {stall:g} s"
    if limit and now - started > limit:
        return f"the frame ran past {limit:g} s"
    return None


class Watchdog:
    """Ends a frame whose generation stalls (no token for ``stall`` seconds: a server that
    stops answering mid-stream, a wedged device) or runs away (longer than ``limit``).

    Its thread, started and joined by ``with``, looks every 50 ms; when a frame trips it,
    one line goes to stderr, ``tripped`` holds the reason (the frame loop ends the frame at
    its next token) and the engine's ``abort`` ends its answer (a blocked request at once).
    """

    def __init__(self, stall: float, limit: float, engine=None):
        self.stall = stall
        self.limit = limit
        self.engine = engine
        self.tripped: str | None = None
        self._lock = threading.Lock()
        self._frame: tuple[int, str] | None = None
        self._started = self._last = 0.0
        self._quit = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="watchdog")

    def begin(self, frame_id: int, source: str) -> None:
        with self._lock:
            self.tripped = None
            self._frame = (frame_id, source)
            self._started = self._last = time.monotonic()

    def token(self) -> None:
        self._last = time.monotonic()

    def end(self) -> None:
        with self._lock:
            self._frame = None

    def _watch(self) -> None:
        while not self._quit.wait(0.05):
            with self._lock:
                if self._frame is None or self.tripped is not None:
                    continue
                reason = overdue(time.monotonic(), self._started, self._last, self.stall,
                                 self.limit)
                if reason is None:
                    continue
                self.tripped = reason
                frame_id, source = self._frame
            log.warning("frame %d (%s): %s; ended by the watchdog, the show goes on with "
                        "the next frame", frame_id, source, reason)
            if self.engine is not None:
                try:
                    self.engine.abort()
                except Exception as exc:
                    log.debug("abort: %s", exc)

    def __enter__(self) -> "Watchdog":
        if self.stall or self.limit:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._quit.set()
        if self._thread.is_alive():
            self._thread.join()
