"""What every output shares, in mido's shape: the public ``send``/``close`` do the checks,
the lazy connect, the retry and the log-once; a transport fills in ``_connect``,
``_send`` and ``_check`` (and ``_packets`` where messages leave together)."""

from __future__ import annotations

import logging
import time
from typing import Callable

log = logging.getLogger("pete_osc.outputs")


class Unavailable(Exception):
    """The device or host cannot take messages right now (it may come back)."""


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
        self.reason: str | None = None  # why it is down, while it is
        self._down_since: float | None = None
        self._next_try = 0.0

    def get(self, quiet: bool = False):
        """The open connection, or None while the target is unavailable. ``quiet``: a
        failure is kept in ``reason`` for the caller to say (at start, in the line that
        names the output) instead of logged."""
        if self.conn is not None:
            return self.conn
        now = self.clock()
        if now < self._next_try:
            return None
        try:
            self.conn = self._connect()
        except Exception as exc:
            self.failed(exc, quiet)
            return None
        if self._down_since is not None:
            log.warning("%s is back (%d messages were lost)", self.label, self.failures)
            self._down_since = None
            self.reason = None
            self.failures = 0
        return self.conn

    def failed(self, exc: BaseException, quiet: bool = False) -> None:
        """Drop the connection; log the first failure only; try again after ``interval``."""
        if self._down_since is None:
            self._down_since = self.clock()
            self.reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if not quiet:
                log.warning("%s: %s; retrying every %g s, messages meanwhile are dropped",
                            self.label, self.reason, self.interval)
        self.close()
        self._next_try = self.clock() + self.interval

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass


class BaseOutput:
    """One named target. ``send(message)`` never raises into the show: it returns the
    messages that left now (none while the target is down, or while a bundle fills).

    A subclass sets ``label`` and ``target`` and fills in ``_connect()`` (an object with
    ``close()``) and ``_send(conn, packet)``; ``_check`` refuses a message of the wrong
    kind before anything is sent (a bug, not a dead host: it raises ``ValueError``);
    ``_packets`` turns a message into what leaves now (one packet each, by default).
    """

    retry_interval = 1.0
    label = "output"

    def __init__(self, target):
        self.target = target
        self.name = target.name
        self.sent = 0
        self._conn = Retrying(self.label, self._connect, self.retry_interval)

    @property
    def lost(self) -> int:
        """Messages dropped while the target is unavailable (since it last came back)."""
        return self._conn.failures

    def open(self, quiet: bool = False) -> None:
        """Connect now, so a dead host is reported at start (the run goes on); ``quiet``:
        not logged, but kept in :attr:`down` for the start-up line naming the output."""
        self._conn.get(quiet)

    @property
    def down(self) -> str | None:
        """Why the target takes no messages now, or None."""
        return self._conn.reason if self._conn.conn is None else None

    def send(self, message) -> list:
        """Send ``message``; the messages that left (``[]`` if none did)."""
        self._check(message)
        out = []
        for packet, messages in self._packets(message):
            out += self._deliver(packet, messages)
        return out

    def describe(self) -> str:
        """The output in words, for the start-up lines ("OSC udp -> host:port (name)")."""
        return self.label

    def configure(self, mapping) -> list:
        """A reloaded mapping's settings for this output; the messages that left."""
        return []

    def _deliver(self, packet, messages: list) -> list:
        conn = self._conn.get()
        if conn is None:
            self._conn.failures += len(messages)
            return []
        try:
            self._send(conn, packet)
        except Exception as exc:  # refused, reset, unreachable, a port that went away
            self._conn.failed(exc)
            self._conn.failures += len(messages)
            return []
        self.sent += len(messages)
        return messages

    def end_frame(self, frame_id: int) -> list:
        """The frame's answer is complete (outputs that collect per frame send now)."""
        return []

    def tick(self, now: float) -> None:
        """Called at the control rate (outputs that watch their device do it here)."""

    def same_target(self, target) -> bool:
        """Whether a reloaded mapping's ``target`` is this output's (so it stays open; a new
        max_rate is the sender's business, not the connection's)."""
        from dataclasses import replace

        return replace(target, max_rate=0) == replace(self.target, max_rate=0)

    def close(self) -> list:
        """Send what is held back, then close; the messages that left."""
        self._conn.close()
        return []

    # ---- filled in by each transport ---------------------------------------------------
    def _connect(self):
        raise NotImplementedError

    def _send(self, conn, packet) -> None:
        raise NotImplementedError

    def _check(self, message) -> None:
        pass

    def _packets(self, message) -> list[tuple[object, list]]:
        """(packet, the messages it carries) to send now for ``message``."""
        return [(message, [message])]
