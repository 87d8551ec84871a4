"""What every output shares: a send that never raises into the live loop, and retries."""

from __future__ import annotations

import logging
import time
from typing import Callable, Protocol

log = logging.getLogger("pete_osc.outputs")


class Unavailable(Exception):
    """The device or host cannot take messages right now (it may come back)."""


class Output(Protocol):
    name: str

    def send(self, packet) -> bool: ...

    def close(self) -> None: ...


class Retrying:
    """Opens a connection lazily and again after it fails, at most once per ``interval``.

    A failure is logged once (not once per message) and its recovery once, so a dead host
    on stage gives two lines on stderr, not a flood, and never stops the loop.
    """

    def __init__(self, label: str, connect: Callable[[], object], interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        self.label = label
        self._connect = connect
        self.interval = interval
        self.clock = clock
        self.conn = None
        self.failures = 0  # messages lost while unavailable (counted by the output)
        self._down_since: float | None = None
        self._next_try = 0.0

    def get(self):
        """The open connection, or None while the target is unavailable."""
        if self.conn is not None:
            return self.conn
        now = self.clock()
        if now < self._next_try:
            return None
        try:
            self.conn = self._connect()
        except Exception as exc:
            self.failed(exc)
            return None
        if self._down_since is not None:
            log.warning("%s is back (%d messages were lost)", self.label, self.failures)
            self._down_since = None
            self.failures = 0
        return self.conn

    def failed(self, exc: BaseException) -> None:
        """Drop the connection; log the first failure only; try again after ``interval``."""
        if self._down_since is None:
            self._down_since = self.clock()
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.warning("%s: %s; retrying every %g s, messages meanwhile are dropped",
                        self.label, reason, self.interval)
        self.close()
        self._next_try = self.clock() + self.interval

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass
