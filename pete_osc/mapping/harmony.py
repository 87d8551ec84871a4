"""Harmony from the picture: a chord route's notes from colour, mood, energy and
brightness. Pure: values in, MIDI note numbers out, no clock and no device.

- colour (its hue) picks the root: the hue circle is cut into as many equal parts as the
  route's ``notes`` list has names (by default the circle of fifths, red = C, so
  neighbouring colours are neighbouring keys); a colour with little saturation (white,
  grey, black) keeps the root standing;
- mood picks the chord quality (``maj``, ``min7``, ``sus2``, ... see QUALITIES);
- energy picks how many voices sound (the chord's tones stacked upward) and how hard;
- brightness picks the register (the octave the root sits in).

Voice leading: after the first chord, each chord is the inversion (and octave, within
one of the register's) whose notes move least from the notes sounding, so a change of
root walks instead of jumping; notes both chords share keep sounding.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

from ..records import Color

QUALITIES: dict[str, tuple[int, ...]] = {
    "maj": (0, 4, 7), "min": (0, 3, 7), "dim": (0, 3, 6), "aug": (0, 4, 8),
    "sus2": (0, 2, 7), "sus4": (0, 5, 7), "5": (0, 7),
    "6": (0, 4, 7, 9), "min6": (0, 3, 7, 9), "7": (0, 4, 7, 10), "maj7": (0, 4, 7, 11),
    "min7": (0, 3, 7, 10), "m7b5": (0, 3, 6, 10), "dim7": (0, 3, 6, 9),
    "add9": (0, 4, 7, 14), "madd9": (0, 3, 7, 14), "maj9": (0, 4, 7, 11, 14),
    "min9": (0, 3, 7, 10, 14), "9": (0, 4, 7, 10, 14),
}
PITCH_CLASSES = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
# Colours less saturated than this have no hue to speak of: the root stays.
GREY = 0.15
LOWEST, HIGHEST = 12, 115


def pitch_class(name: str) -> int | None:
    """'C' -> 0, 'F#' -> 6, 'Bb' -> 10; None if it is not a note name."""
    name = name.strip().lower()
    if not name or name[0] not in PITCH_CLASSES or len(name) > 2:
        return None
    pc = PITCH_CLASSES[name[0]]
    if len(name) == 2:
        if name[1] not in "#b":
            return None
        pc += 1 if name[1] == "#" else -1
    return pc % 12


def root_of(rgb: tuple[int, int, int], roots: tuple[int, ...]) -> int | None:
    """The root a colour picks (None for a grey: keep the root standing)."""
    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
    if s < GREY or v < GREY:
        return None
    part = 1.0 / len(roots)
    return roots[int(((h + part / 2) % 1.0) / part) % len(roots)]


def stack(intervals: tuple[int, ...], voices: int) -> list[int]:
    """``voices`` semitone offsets from the root: the chord's tones, then again an octave
    up (and so on) for more voices than tones."""
    return [intervals[i % len(intervals)] + 12 * (i // len(intervals)) for i in range(voices)]


def voicing(root: int, intervals: tuple[int, ...], voices: int, octave: int,
            previous: tuple[int, ...] = ()) -> tuple[int, ...]:
    """The chord's MIDI notes: root position with the root in ``octave`` (C3 = 60), or,
    after ``previous``, the inversion and octave that moves least from it."""
    base = 12 * (octave + 2) + root
    close = sorted(base + offset for offset in stack(intervals, voices))
    if not previous:
        return tuple(_within(close))
    best, best_cost = None, None
    for k in range(voices):
        inverted = sorted(close[k:] + [n + 12 for n in close[:k]])
        if len(set(inverted)) < len(inverted):
            # More voices than tones: raising a low voice an octave can land it on its
            # own octave double already there. One key cannot sound twice; skip it.
            continue
        for shift in (-24, -12, 0, 12):
            candidate = tuple(_within([n + shift for n in inverted]))
            cost = (_movement(candidate, previous), abs(candidate[0] - base))
            if best_cost is None or cost < best_cost:
                best, best_cost = candidate, cost
    return best if best is not None else tuple(sorted(set(_within(close))))


def _movement(notes, previous) -> int:
    """Semitones each voice moves to the nearest voice of the other chord, both ways."""
    return (sum(min(abs(n - p) for p in previous) for n in notes)
            + sum(min(abs(p - n) for n in notes) for p in previous))


def _within(notes: list[int]) -> list[int]:
    while notes[0] < LOWEST:
        notes = [n + 12 for n in notes]
    while notes[-1] > HIGHEST:
        notes = [n - 12 for n in notes]
    return notes


@dataclass
class Harmony:
    """A chord route's state: the latest inputs, and the notes sounding.

    ``chord()`` is what the inputs ask for now: (notes, velocity), or None until a root
    and a quality are known.
    """

    roots: tuple[int, ...]
    qualities: dict
    voices: tuple[int, int] = (3, 3)
    velocity: tuple[int, int] = (90, 90)
    octaves: tuple[int, int] = (3, 3)
    root: int | None = None
    quality: tuple[int, ...] | None = None
    energy: float = 0.5  # 0..1 across the energy key's range
    brightness: float = 0.5  # 0..1 across the register key's range
    sounding: tuple[int, ...] = ()

    def chord(self) -> tuple[tuple[int, ...], int] | None:
        if self.root is None or self.quality is None:
            return None
        voices = round(_between(self.voices, self.energy))
        octave = round(_between(self.octaves, self.brightness))
        velocity = max(1, min(127, round(_between(self.velocity, self.energy))))
        return voicing(self.root, self.quality, voices, octave, self.sounding), velocity


def _between(span: tuple[float, float], x: float) -> float:
    x = min(1.0, max(0.0, x))
    return span[0] + (span[1] - span[0]) * x


def take_input(chord, harmony: Harmony, ev) -> None:
    """Take one of a chord route's inputs (the chord is worked out at the frame's end)."""
    if ev.key == chord.root_key and isinstance(ev.value, Color):
        root = root_of(ev.value.rgb, chord.roots)
        if root is not None:
            harmony.root = root
    if ev.key == chord.quality_key and isinstance(ev.value, str):
        harmony.quality = chord.qualities.get(ev.value, harmony.quality)
    if ev.key == chord.energy_key and isinstance(ev.value, (int, float)):
        lo, hi = chord.energy_range
        harmony.energy = (float(ev.value) - lo) / (hi - lo)
    if ev.key == chord.register_key and isinstance(ev.value, (int, float)):
        lo, hi = chord.register_range
        harmony.brightness = (float(ev.value) - lo) / (hi - lo)
