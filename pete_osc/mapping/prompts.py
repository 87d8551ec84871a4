"""Weighted prompts for live music models (Magenta RT 2's ``mrt2~``, Lyria RealTime): a
text made from several keys' latest words, and a change of text crossfaded across
slots, the old prompt's weight stepping down while the new one's steps up, instead of a
hard switch. Pure: time is passed in."""

from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass, field

from ..records import Color, OscMessage
from .config import PromptSpec


def template_keys(template: str) -> tuple[str, ...]:
    """The ``{key}`` names in ``template`` (ValueError for a broken one)."""
    names = [name for _, name, spec, conv in string.Formatter().parse(template)
             if name is not None]
    for name in names:
        if not name or not name.isidentifier():
            raise ValueError(f"'{{{name}}}' is not a key name")
    return tuple(dict.fromkeys(names))


def word_of(value: object) -> str:
    """An event's value as a prompt word: a colour by its name, numbers short."""
    if isinstance(value, Color):
        return value.name
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def prompt_text(template: str, words: dict[str, str]) -> str | None:
    """``template`` with each key's latest word (a key not yet seen: left out, the spaces
    around it closed up); None while no key has a word."""
    if not any(words.values()):
        return None
    text = template.format_map(_Words(words))
    return re.sub(r"\s+", " ", text).strip(" ,;") or None


class _Words(dict):
    def __missing__(self, key):
        return ""


@dataclass
class _Voice:
    text: str
    start: float  # weight at ``since``
    target: float  # weight it moves to
    since: float
    sent: float | None = None  # the weight last sent


@dataclass
class Crossfade:
    """The prompts a receiver holds, one per slot, and their weights over time.

    :meth:`set` brings in a new text: it takes a free slot (else the quietest) and
    its weight rises from 0 to ``weight`` over ``fade`` seconds while every other slot's
    falls to 0 (then the slot is cleared). The first text starts at full weight: there
    is nothing to fade from. A text that is still fading out when it comes back rises
    again from where it is. :meth:`due` gives the weight steps to send now: the slots
    that moved, together, every ``step`` seconds, and each fade's last step. Messages are
    ``(slot, text, weight)``, or ``(slot, None, 0.0)`` where a slot is cleared.
    """

    slots: tuple[int, ...] = (0, 1)
    weight: float = 1.0
    fade: float = 4.0
    step: float = 0.25
    voices: dict[int, _Voice] = field(default_factory=dict)
    _stepped: float = -math.inf  # when the last weight step went

    @classmethod
    def of(cls, spec: PromptSpec) -> "Crossfade":
        return cls(spec.slots, spec.weight, spec.fade, spec.step)

    @property
    def current(self) -> str | None:
        """The text rising or standing (None before the first)."""
        up = [v for v in self.voices.values() if v.target > 0]
        return up[0].text if up else None

    def set(self, text: str, now: float) -> list[tuple[int, str | None, float]]:
        """Fade to ``text`` from now; the messages to send now."""
        if text == self.current:
            return []
        first = not self.voices
        for voice in self.voices.values():
            voice.start, voice.target, voice.since = self._at(voice, now), 0.0, now
        slot = next((s for s, v in self.voices.items() if v.text == text), None)
        cleared: list[tuple[int, str | None, float]] = []
        if slot is None:
            free = [s for s in self.slots if s not in self.voices]
            if free:
                slot = free[0]
            else:  # every slot holds a prompt: the quietest makes way
                slot = min(self.slots, key=lambda s: (self._at(self.voices[s], now), s))
                cleared.append((slot, None, 0.0))
            self.voices[slot] = _Voice(text, 0.0, 0.0, now)
        voice = self.voices[slot]
        voice.target = self.weight
        if first or self.fade <= 0:
            voice.start = self.weight
        return cleared + self.due(now, force=True)

    def due(self, now: float, force: bool = False) -> list[tuple[int, str | None, float]]:
        """The weight steps due now: every slot whose weight moved, once every ``step``
        seconds (``force``: now), and each fade's last step when it ends."""
        stepping = force or now - self._stepped >= self.step
        out: list[tuple[int, str | None, float]] = []
        for slot in sorted(self.voices):
            voice = self.voices[slot]
            weight = round(self._at(voice, now), 3)
            done = weight == round(voice.target, 3)
            if done and weight == 0.0:  # faded out: the slot is cleared
                del self.voices[slot]
                out.append((slot, None, 0.0))
            elif weight != voice.sent and (stepping or done):
                voice.sent = weight
                out.append((slot, voice.text, weight))
        if out and stepping:
            self._stepped = now
        return out

    def finish(self) -> list[tuple[int, str | None, float]]:
        """Every fade ends now (the show stops): the last weights, the faded slots cleared;
        the standing prompt stays, so the receiver goes on playing it."""
        return self.due(math.inf, force=True)

    def busy(self, now: float) -> bool:
        return any(round(self._at(v, now), 3) != v.sent or v.sent != round(v.target, 3)
                   for v in self.voices.values())

    def weighted(self, now: float) -> list[tuple[str, float]]:
        """The prompts and their weights now, in slot order (for a receiver that takes
        them all at once, as Lyria RealTime does)."""
        return [(v.text, round(self._at(v, now), 3)) for _, v in sorted(self.voices.items())
                if self._at(v, now) > 0]

    def _at(self, voice: _Voice, now: float) -> float:
        if self.fade <= 0:
            return voice.target
        t = min(1.0, max(0.0, (now - voice.since) / self.fade))
        return voice.start + (voice.target - voice.start) * t


def route_keys(route) -> tuple[str, ...]:
    """The event keys a route listens to (a chord's, a prompt's several)."""
    if route.chord is not None:
        return route.chord.keys()
    if route.prompt is not None:
        return route.prompt.keys
    return (route.event,)


def frame_prompt(route, state, now: float) -> list[OscMessage]:
    """A prompt route at a frame's end (its router state: ``words``, ``settle``,
    ``fade``): its text from the latest words, settled where the route says, faded in."""
    text = prompt_text(route.prompt.template, state.words)
    if text is not None and state.settle is not None:
        text = state.settle.offer(text, now)
    return [] if text is None else prompt_messages(route, state, state.fade.set(text, now))


def prompt_messages(route, state, steps: list) -> list[OscMessage]:
    """A prompt route's slot changes as OSC: ADDRESS SLOT TEXT WEIGHT, or ADDRESS SLOT
    where a slot is cleared (Magenta RT 2's ``prompt SLOT TEXT WEIGHT`` / ``prompt SLOT``)."""
    address = route.address
    if route.per_source:
        address = address.replace("{source}", state.source)
    return [OscMessage(route.target, address, (slot,) if text is None else (slot, text, weight))
            for slot, text, weight in steps]
