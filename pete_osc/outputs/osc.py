"""OSC out through python-osc: UDP datagrams, or TCP with SLIP framing (OSC 1.1)."""

from __future__ import annotations

import time

from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.tcp_client import TCPClient
from pythonosc.udp_client import UDPClient

from ..mapping.config import OscTarget
from .base import Retrying

# Past this, a connect or send to a stalled TCP peer gives up so the sender thread moves on.
TCP_TIMEOUT = 0.5


def build_message(address: str, args: tuple):
    """A python-osc message: ints as i, floats as f, strings as s."""
    builder = OscMessageBuilder(address)
    for arg in args:
        builder.add_arg(arg)
    return builder.build()


def build_bundle(messages: list, timetag: float | None = None):
    """One bundle of already built messages; ``timetag`` is Unix time, None = immediately."""
    builder = OscBundleBuilder(IMMEDIATELY if timetag is None else timetag)
    for message in messages:
        builder.add_content(message)
    return builder.build()


class OscOutput:
    """One OSC target. ``send`` takes a built message or bundle and never raises."""

    def __init__(self, target: OscTarget, retry_interval: float = 1.0):
        self.target = target
        self.name = target.name
        where = f"OSC target {target.name!r} ({target.protocol}://{target.host}:{target.port})"
        self._conn = Retrying(where, self._connect, retry_interval)
        self.sent = 0

    def _connect(self):
        t = self.target
        if t.protocol == "tcp":
            return TCPClient(t.host, t.port, mode="1.1", timeout=TCP_TIMEOUT)
        return _Udp(UDPClient(t.host, t.port))

    def open(self) -> None:
        """Try to connect now, so a dead host is reported at start (the run goes on)."""
        self._conn.get()

    def send(self, packet) -> bool:
        client = self._conn.get()
        if client is None:
            self._conn.failures += 1
            return False
        try:
            client.send(packet)
        except OSError as exc:  # refused, reset, unreachable, timed out
            self._conn.failed(exc)
            self._conn.failures += 1
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        self._conn.close()


class _Udp:
    """python-osc's UDP client with a close (its socket is otherwise left to the GC)."""

    def __init__(self, client: UDPClient):
        self.client = client

    def send(self, packet) -> None:
        self.client.send(packet)

    def close(self) -> None:
        self.client._sock.close()


def unix_time(monotonic_at: float) -> float:
    """A time.monotonic() instant as Unix time, for bundle timetags."""
    return time.time() - (time.monotonic() - monotonic_at)
