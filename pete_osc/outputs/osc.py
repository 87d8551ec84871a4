"""OSC out through python-osc: UDP datagrams, or TCP with SLIP framing (OSC 1.1).

With ``bundle: yes`` in the mapping, the messages one frame's answer causes leave as one
bundle per target when the answer is complete (or when the next frame's first message
arrives), with the frame's capture time plus ``bundle_delay`` as the timetag.
"""

from __future__ import annotations

import socket

from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.tcp_client import TCPClient
from pythonosc.udp_client import UDPClient

from ..mapping.config import OscTarget
from ..records import OscMessage
from .base import BaseOutput, Unavailable

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


# Frames whose messages may be held at once (more: the oldest leaves).
HELD_FRAMES = 32


class OscOutput(BaseOutput):
    """One OSC target; ``send`` takes an :class:`OscMessage` and never raises."""

    def __init__(self, target: OscTarget, bundle: bool = False, bundle_delay: float = 0.0,
                 retry_interval: float = 1.0):
        self.retry_interval = retry_interval
        self.label = f"OSC target {target.name!r} ({target.protocol}://{target.host}:{target.port})"
        super().__init__(target)
        self.bundle = bundle
        self.bundle_delay = bundle_delay
        # Each frame's messages while bundling, by frame id (several sources' frames are
        # answered at once in a batch: each answer is its own bundle).
        self._held: dict[int, list[OscMessage]] = {}

    def describe(self) -> str:
        t = self.target
        return f"OSC {t.protocol} -> {t.host}:{t.port} ({self.name})"

    def configure(self, mapping) -> list:
        """A reloaded mapping's bundle settings; what was held leaves first."""
        bundle, bundle_delay = mapping.bundle, mapping.bundle_delay
        out = self._flush() if (bundle, bundle_delay) != (self.bundle, self.bundle_delay) else []
        self.bundle, self.bundle_delay = bundle, bundle_delay
        return out

    def _check(self, message) -> None:
        if not isinstance(message, OscMessage):
            raise ValueError(f"{self.label} takes OSC messages, not {type(message).__name__}")

    def _packets(self, message: OscMessage) -> list[tuple[object, list]]:
        if not (self.bundle and message.frame_id is not None):
            return [(build_message(message.address, message.args), [message])]
        out = []
        if message.frame_id not in self._held and len(self._held) >= HELD_FRAMES:
            out = self._bundle(next(iter(self._held)))  # (an answer whose end never came)
        self._held.setdefault(message.frame_id, []).append(message)
        return out

    def end_frame(self, frame_id: int) -> list:
        out = []
        for packet, messages in self._bundle(frame_id):
            out += self._deliver(packet, messages)
        return out

    def close(self) -> list:
        out = self._flush()
        super().close()
        return out

    def _flush(self) -> list:
        out = []
        for frame_id in list(self._held):
            out += self.end_frame(frame_id)
        return out

    def _bundle(self, frame_id: int) -> list[tuple[object, list]]:
        """Frame ``frame_id``'s held messages as one bundle (none where none are held)."""
        held = self._held.pop(frame_id, [])
        if not held:
            return []
        first = held[0]
        timetag = (first.captured_at + self.bundle_delay
                   if self.bundle_delay and first.captured_at else None)
        return [(build_bundle([build_message(m.address, m.args) for m in held], timetag), held)]

    def _connect(self):
        t = self.target
        try:
            if t.protocol == "tcp":
                return TCPClient(t.host, t.port, mode="1.1", timeout=TCP_TIMEOUT)
            return _Udp(UDPClient(t.host, t.port))
        except socket.gaierror as exc:  # a name no resolver knows (a typo, no network)
            raise Unavailable(f"host {t.host!r} is not known ({exc.strerror})") from None

    def _send(self, conn, packet) -> None:
        conn.send(packet)


class _Udp:
    """python-osc's UDP client with a close (its socket is otherwise left to the GC)."""

    def __init__(self, client: UDPClient):
        self.client = client

    def send(self, packet) -> None:
        self.client.send(packet)

    def close(self) -> None:
        self.client._sock.close()


class OscNotes(BaseOutput):
    """A MIDI target whose notes leave as OSC (``osc:`` in a ``midi:`` target): a note on
    as ``note_on NOTE``, a note off (or a note on at velocity 0) as ``note_off NOTE``,
    through the OSC target's own output (``osc()``: the sender's, now); other MIDI
    messages are not carried. The messages that left are the OSC ones."""

    def __init__(self, target, osc):
        self.label = f"notes as OSC {target.note_on} / {target.note_off} to {target.osc}"
        super().__init__(target)
        self.osc = osc

    def describe(self) -> str:
        return f"MIDI target {self.name}: its {self.label}"

    @property
    def down(self) -> str | None:
        return None  # (said by the OSC output)

    @property
    def lost(self) -> int:
        return 0  # (counted by the OSC output)

    def open(self, quiet: bool = False) -> None:
        pass  # (the OSC output opens itself)

    def send(self, message) -> list:
        msg, osc = getattr(message, "message", None), self.osc()
        if msg is None or osc is None or msg.type not in ("note_on", "note_off"):
            return []
        on = msg.type == "note_on" and msg.velocity > 0
        address = self.target.note_on if on else self.target.note_off
        return osc.send(OscMessage(osc.name, address, (msg.note,)))

    def close(self) -> list:
        return []  # (the OSC output closes itself)
