"""The keys held down, per MIDI target and channel: the rule every note route keeps.

A synth has one voice per key and channel: a second note-on for a key that already sounds
either restarts it or stacks a voice that one note-off cannot end (a hung note). Several
routes may ask for the same key on one channel (a chord and a melody, two chords, a chord
whose voicing repeats a pitch), so the rule is kept here, over everything the router
sends, rather than in each route:

- a key sounds while at least one route holds it: the first hold sends the note-on, the
  others only count;
- the last release sends the note-off, so every note-on gets exactly one note-off;
- a note-off for a key nobody holds is not sent;
- :meth:`Keys.release_all` ends whatever still sounds (exit, reload, source end, signals).

Pure: messages in, messages out, no clock and no device.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable

import mido

from ..records import MidiMessage


class Keys:
    """Counts the holds on each (target, channel, key); see the module docstring."""

    def __init__(self) -> None:
        self._held: Counter = Counter()
        self.merged = 0  # note-ons and note-offs absorbed by another route's hold

    def filter(self, messages: Iterable) -> list:
        """``messages`` as they may go out: repeated note-ons and early note-offs left out,
        everything that is not a note passed through unchanged."""
        out = []
        for message in messages:
            keep = self._take(message) if isinstance(message, MidiMessage) else True
            if keep:
                out.append(message)
        return out

    def _take(self, message: MidiMessage) -> bool:
        msg = message.message
        if msg.type == "control_change" and msg.control in (120, 123):  # all sound/notes off
            for key in [k for k in self._held if k[:2] == (message.target, msg.channel)]:
                del self._held[key]
            return True
        if msg.type not in ("note_on", "note_off"):
            return True
        key = (message.target, msg.channel, msg.note)
        if msg.type == "note_on" and msg.velocity > 0:
            self._held[key] += 1
            if self._held[key] == 1:
                return True
        elif self._held[key] > 0:
            self._held[key] -= 1
            if self._held[key] == 0:
                del self._held[key]
                return True
        else:
            del self._held[key]  # (the Counter made it 0 by looking)
            return False
        self.merged += 1
        return False

    def sounding(self) -> list[tuple[str, int, int]]:
        """(target, channel 0-15, key) of every key that sounds now, in order."""
        return sorted(self._held)

    def release_all(self) -> list[MidiMessage]:
        """A note-off for every key still sounding; afterwards none is held."""
        out = [MidiMessage(target, mido.Message("note_off", channel=ch, note=note, velocity=0))
               for target, ch, note in self.sounding()]
        self._held.clear()
        return out
