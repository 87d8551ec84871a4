"""What the mapping sends: an OSC message or a MIDI message, each for a named target."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True)
class OscMessage:
    """One OSC message for a named target."""

    target: str
    address: str
    args: tuple
    frame_id: int | None = None  # set for messages caused by an event (bundled per frame)
    captured_at: float | None = None


@dataclass(frozen=True)
class MidiMessage:
    """One MIDI message for a named target, as its bytes (status first)."""

    target: str
    data: tuple[int, ...]


Message = Union[OscMessage, MidiMessage]
