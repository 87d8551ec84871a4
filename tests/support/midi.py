"""MIDI messages in test tables, written as a MIDI monitor shows them (status byte first);
mido reads them, so a bad byte fails the table, not the code under test."""

from __future__ import annotations

import mido

from pete_osc.records import MidiMessage


def midi(target: str, *data: int) -> MidiMessage:
    """``midi("synth", 0xB1, 74, 64)``: CC 74 = 64 on channel 2 for ``synth``."""
    return MidiMessage(target, mido.Message.from_bytes(list(data)))


def data(message: MidiMessage) -> tuple[int, ...]:
    """A message's bytes, status first."""
    return tuple(message.message.bytes())
