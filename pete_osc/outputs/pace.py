"""A per-target message-rate cap that coalesces: pure, with the time passed in.

CoreMIDI's IAC bus and many hardware ports drop messages when flooded, silently. A
target's ``max_rate`` caps the messages per second it gets; what is over the cap waits,
and while it waits a newer message for the same control replaces the older one (the
newest value of each control wins, in the place of the first), so a flood of CC
steps arrives as fewer, current values instead of a late backlog. Notes and other
messages that are not a control's value are never merged: they wait their turn in order.

A control: a MIDI CC (channel, controller), a program change or pitch bend (channel);
an OSC address with every argument but the last (``/live/device/set/parameter/value
0 0 1`` and ``... 0 0 2`` are two controls).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from itertools import count

from ..records import Message, MidiMessage, OscMessage

_ONE = 1.0 - 1e-9  # a whole message's budget (times summed in floating point)


def control_of(message: Message) -> tuple | None:
    """The control ``message`` sets (messages for the same one may be merged), or None."""
    if isinstance(message, MidiMessage):
        msg = message.message
        if msg.type == "control_change":
            return ("cc", msg.channel, msg.control)
        if msg.type in ("program_change", "pitchwheel", "aftertouch"):
            return (msg.type, msg.channel)
        return None
    if isinstance(message, OscMessage):
        return ("osc", message.address, tuple(message.args[:-1]))
    return None


@dataclass
class Pace:
    """``offer`` a message: the ones that may leave now; ``due``: the waiting ones whose
    turn has come. ``rate`` messages a second, ``burst`` at once after a quiet spell."""

    rate: float
    burst: int = 1
    coalesced: int = 0  # messages replaced by a newer one for the same control
    _tokens: float = field(default=-1.0)
    _at: float = 0.0
    _waiting: OrderedDict = field(default_factory=OrderedDict)
    _serial: count = field(default_factory=count)

    def offer(self, message: Message, now: float) -> list[Message]:
        self._refill(now)
        if not self._waiting and self._tokens >= _ONE:
            self._tokens -= 1
            return [message]
        key = control_of(message)
        if key is not None and key in self._waiting:
            self._waiting[key] = message  # the newest value, in the first one's place
            self.coalesced += 1
        else:
            self._waiting[key if key is not None else ("once", next(self._serial))] = message
        return self.due(now)

    def due(self, now: float) -> list[Message]:
        self._refill(now)
        out = []
        while self._waiting and self._tokens >= _ONE:
            self._tokens -= 1
            out.append(self._waiting.popitem(last=False)[1])
        return out

    def drain(self) -> list[Message]:
        """Everything waiting, at once (the show is stopping or the mapping changed)."""
        out = list(self._waiting.values())
        self._waiting.clear()
        return out

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def _refill(self, now: float) -> None:
        if self._tokens < 0:  # the first call: a full bucket
            self._tokens, self._at = float(self.burst), now
            return
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
        self._at = now


def paces_for(mapping) -> dict[str, Pace]:
    """A rate cap for each target with a max_rate, allowing one control period's burst."""
    targets = list(mapping.osc.values()) + list(mapping.midi.values())
    return {t.name: Pace(t.max_rate, max(1, int(t.max_rate / mapping.control_rate)))
            for t in targets if t.max_rate > 0}
