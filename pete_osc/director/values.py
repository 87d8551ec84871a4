"""Turn the value half of a DIRECTOR line into a typed value, or say why not.

Pure functions: each takes the key's spec and the raw value text and returns the value,
or raises :class:`Invalid` with a reason a person can read.
"""

from __future__ import annotations

import re
from typing import Mapping

import webcolors

from ..records import Color, Value
from .schema import KeySpec


class Invalid(ValueError):
    """The value does not fit the key's schema; the message says how."""


_NUMBER = re.compile(r"^[+-]?(?:\d+(?:[.,]\d*)?|[.,]\d+)")
_HEX = re.compile(r"^#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})$")


def coerce(spec: KeySpec, text: str, extra_colors: Mapping[str, str]) -> Value:
    """The typed value of ``text`` for ``spec``; raises Invalid when it does not fit."""
    if not text:
        raise Invalid("empty value")
    if spec.type == "number":
        return _number(spec, text)
    if spec.type == "word":
        return _word(spec, text)
    if spec.type == "color":
        return _color(text, extra_colors)
    return _text(spec, text)


def _number(spec: KeySpec, text: str) -> float:
    lowered = text.lower()
    if lowered in spec.levels:
        return spec.levels[lowered]
    m = _NUMBER.match(lowered)
    if not m:
        # "quite high", "high energy": accept when exactly one level word appears.
        found = {w for w in spec.levels if re.search(rf"\b{re.escape(w)}\b", lowered)}
        if len(found) == 1:
            return spec.levels[found.pop()]
        choices = ", ".join(spec.levels) if spec.levels else "none"
        raise Invalid(f"{text!r} is not a number in {spec.min:g}..{spec.max:g} nor a level ({choices})")
    number = float(m.group(0).replace(",", "."))
    rest = lowered[m.end():].strip()
    if rest.startswith("%"):
        # A percentage means that fraction of the key's range: energy 70% -> 0.7.
        number = spec.min + number / 100.0 * (spec.max - spec.min)
    elif rest.startswith("/"):
        # "7/10" -> 0.7 of the range.
        m2 = _NUMBER.match(rest[1:].strip())
        if not m2 or float(m2.group(0).replace(",", ".")) == 0:
            raise Invalid(f"{text!r} is not a number")
        number = spec.min + number / float(m2.group(0).replace(",", ".")) * (spec.max - spec.min)
    if not spec.min <= number <= spec.max:
        raise Invalid(f"{number:g} is outside {spec.min:g}..{spec.max:g}")
    return number


def _word(spec: KeySpec, text: str) -> str:
    lowered = text.lower()
    for candidate in (lowered, *re.findall(r"[a-z][a-z'-]*", lowered)):
        if candidate in spec.values:
            return candidate
        if candidate in spec.aliases:
            return spec.aliases[candidate]
    raise Invalid(f"{text!r} is not one of {', '.join(spec.values)}")


def _color(text: str, extra: Mapping[str, str]) -> Color:
    lowered = " ".join(text.lower().split())
    m = _HEX.match(lowered)
    if m and (lowered.startswith("#") or re.search(r"\d", lowered)):
        hexcode = webcolors.normalize_hex("#" + m.group(1))
        return Color(hexcode, hexcode, tuple(webcolors.hex_to_rgb(hexcode)))
    # Whole phrase first ("warm white", "dark red" -> darkred), then each word from the
    # last ("light sky blue", "bright red" -> red), since colour heads come last in English.
    words = lowered.split()
    candidates = [lowered, lowered.replace(" ", "")]
    candidates += [" ".join(words[i:]) for i in range(1, len(words))]
    candidates += ["".join(words[i:]) for i in range(1, len(words))]
    for name in candidates:
        if name in extra:
            return Color(name, extra[name], tuple(webcolors.hex_to_rgb(extra[name])))
        try:
            hexcode = webcolors.name_to_hex(name)
        except ValueError:
            continue
        return Color(name, hexcode, tuple(webcolors.hex_to_rgb(hexcode)))
    raise Invalid(f"{text!r} is not a colour name or hex code")


def _text(spec: KeySpec, text: str) -> str:
    words = text.split()
    if len(words) > spec.max_words:
        raise Invalid(f"{len(words)} words, at most {spec.max_words} allowed")
    return " ".join(words)


def parse_color(text: str, extra: Mapping[str, str] | None = None) -> Color:
    """A colour name or hex code as a :class:`Color` (Invalid if it is neither)."""
    return _color(text, extra or {})
