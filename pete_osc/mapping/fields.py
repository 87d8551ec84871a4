"""The mapping file's field readers: a number in range, a channel, a table, a shape, a
note name; each refuses a bad value with the file, the line and what was expected."""

from __future__ import annotations

import math
import re
from types import MappingProxyType
from typing import Any, Mapping

from ..director.located import Located
from .config import COLOR_PARTS, CURVES, FIELDS, Shape

_NOTE = re.compile(r"^([A-Ga-g])([#b]?)(-?\d)$")
_SEMITONE = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}


_GRID = re.compile(r"^(?:(\d+(?:\.\d+)?)\s+)?(beat|bar)s?$")


def _grid(doc: Located, where: tuple, raw: Any, quantum: float = 4.0) -> float:
    """``quantize: beat | bar | 2 bars | 8 beats`` as beats (bars of 4 beats are scaled to
    the clock's quantum when the route runs)."""
    m = _GRID.match(str(raw).strip().lower())
    if not m or (m.group(1) is not None and float(m.group(1)) <= 0):
        raise doc.error(where, f"quantize must be a number (a value step) or beat, bar, "
                        f"'2 bars', '8 beats' (changes wait for that boundary), got {raw!r}")
    count = float(m.group(1) or 1)
    return count * (1.0 if m.group(2) == "beat" else -1.0)  # negative: bars


def note_number(value: Any) -> int | None:
    """A MIDI note from 0..127 or a name such as C3, F#2, Bb4 (C3 = 60, as in Ableton Live)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if 0 <= value <= 127 else None
    m = _NOTE.match(str(value).strip())
    if not m:
        return None
    letter, accidental, octave = m.groups()
    n = _SEMITONE[letter.lower()] + {"#": 1, "b": -1, "": 0}[accidental] + (int(octave) + 2) * 12
    return n if 0 <= n <= 127 else None


def _span(doc: Located, where: tuple, raw: Any, lo: int, hi: int) -> tuple[int, int]:
    if (not isinstance(raw, list) or len(raw) != 2 or
            not all(isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi for v in raw)):
        raise doc.error(where, f"expected [low, high], whole numbers {lo}..{hi}, got {raw!r}")
    return raw[0], raw[1]


def _when(doc: Located, where: tuple, when: Any) -> Mapping[str, object]:
    if not isinstance(when, dict) or not when:
        raise doc.error(where, "when: maps state names to values, such as {playing: true} "
                        "(the DAW's tempo, playing, scene, track, scene_name, track_name, or a "
                        "/pete/context/NAME)")
    for name, value in when.items():
        if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9_]{1,32}", name):
            raise doc.error(where + (name,), f"when: {name!r} is not a state name")
        if not isinstance(value, (bool, int, float, str)):
            raise doc.error(where + (name,), f"when: {name} must be one value, got {value!r}")
    return MappingProxyType(dict(when))


def _target(doc: Located, where: tuple, name: Any, kind: str, osc: dict, midi: dict) -> str:
    pool, label = (osc, "OSC") if kind == "osc" else (midi, "MIDI")
    if name is None:
        if len(pool) == 1:
            return next(iter(pool))
        raise doc.error(where, f"this {kind} route needs 'to:', one of the {label} targets "
                        f"({', '.join(pool) or 'none declared'})")
    if name not in pool:
        raise doc.error(where + ("to",), f"'to: {name}' is not one of the {label} targets "
                        f"({', '.join(pool) or 'none declared'})")
    return str(name)


def _table(doc: Located, where: tuple, table: Any, key, note: bool) -> Mapping[str, float]:
    if not isinstance(table, dict) or not table:
        raise doc.error(where, "a table maps words to numbers: {calm: 1, tense: 5}")
    out = {}
    for word, value in table.items():
        word_s = str(word).lower()
        if key.type == "word" and word_s not in key.values:
            raise doc.error(where + (word,), f"{word!r} is not a {key.name} in the DIRECTOR.md "
                            f"schema ({', '.join(key.values)})")
        if note:
            n = note_number(value)
            if n is None:
                raise doc.error(where + (word,), f"note for {word!r} must be 0..127 or a name "
                                f"like C3, got {value!r}")
            out[word_s] = float(n)
        else:
            out[word_s] = _number(doc, where + (word,), value)
    return MappingProxyType(out)


def _shape(doc: Located, where: tuple, spec: dict, key, kind: str, table, part) -> Shape:
    if "in" in spec:
        lo, hi = _pair(doc, where + ("in",), spec["in"])
    elif table is not None:
        numbers = list(table.values()) + ([float(spec["default"])] if "default" in spec else [])
        lo, hi = min(numbers), max(numbers)
    elif part is not None:
        lo, hi = (0.0, 255.0) if part in "rgb" else (0.0, 1.0)
    elif key.type == "number":
        lo, hi = key.min, key.max
    else:
        lo, hi = 0.0, 1.0
    if lo == hi:
        hi = lo + 1.0
    midi_range = {"cc": (0.0, 127.0), "note": (1.0, 127.0), "program": (0.0, 127.0)}
    # Table numbers are already in output units (CC values, notes, programs).
    default_out = (lo, hi) if table is not None else midi_range.get(kind, (lo, hi))
    out_lo, out_hi = _pair(doc, where + ("out",), spec["out"]) if "out" in spec else default_out
    if kind in midi_range:
        label = "out" if "out" in spec else ("table" if "table" in spec else kind)
        for v in (out_lo, out_hi):
            if not 0 <= v <= 127:
                raise doc.error(where + (label,), f"{kind} values are 0..127; "
                                f"{'out' if 'out' in spec else 'the table'} has {v:g}")
    curve = str(spec.get("curve", "linear")).lower()
    curve = {"exp": "exponential", "log": "logarithmic", "lin": "linear"}.get(curve, curve)
    if curve not in CURVES:
        raise doc.error(where + ("curve",), f"curve must be one of {', '.join(CURVES)}, got {curve!r}")
    return Shape(
        lo, hi, out_lo, out_hi, curve,
        steepness=_number(doc, where + ("steepness",), spec.get("steepness", 4.0), lo=0.1, hi=20),
        invert=_bool(doc, where + ("invert",), spec.get("invert", False)),
        clamp=_bool(doc, where + ("clamp",), spec.get("clamp", True)),
        step=_number(doc, where + ("quantize",), spec.get("quantize", 0), lo=0),
    )


def _args(doc: Located, where: tuple, args: Any, kind: str) -> tuple:
    if not isinstance(args, list):
        args = [args]
    out = []
    for i, arg in enumerate(args):
        if isinstance(arg, str) and arg.startswith("$"):
            name = arg[1:]
            if name not in FIELDS:
                raise doc.error(where + (i,), f"unknown field {arg!r}; fields are "
                                + ", ".join("$" + f for f in FIELDS))
            if name in COLOR_PARTS + ("hex",) and kind != "color":
                raise doc.error(where + (i,), f"{arg} only exists for colour events")
            if name == "index" and kind != "word":
                raise doc.error(where + (i,), "$index only exists for word events")
        elif not isinstance(arg, (int, float, str)) or isinstance(arg, bool):
            raise doc.error(where + (i,), f"an OSC argument is a number, a string or a $field, got {arg!r}")
        out.append(arg)
    return tuple(out)


def _known(doc: Located, where: tuple, spec: dict, allowed: set, what: str) -> None:
    for name in spec:
        if name not in allowed:
            hint = _closest(str(name), allowed)
            raise doc.error(where + (name,), f"unknown {what} {name!r}"
                            + (f" (did you mean {hint!r}?)" if hint else "")
                            + f"; expected one of {', '.join(sorted(allowed))}")


def _closest(word: str, options: set) -> str | None:
    import difflib

    found = difflib.get_close_matches(word, sorted(options), n=1, cutoff=0.6)
    return found[0] if found else None


def _settle(doc, where: tuple, raw) -> tuple[int, float]:
    """``settle: 3`` (a majority of the last 3 frames) or ``settle: {frames: 3, time: 1}``
    (and the new value kept winning for 1 s)."""
    if raw is None:
        return 1, 0.0
    if isinstance(raw, dict):
        for name in raw:
            if name not in ("frames", "time"):
                raise doc.error(where + ("settle", name), f"unknown settle setting {name!r}; "
                                "expected frames (a vote over that many frames) or time (seconds)")
        frames = raw.get("frames", 1)
        time = _number(doc, where + ("settle", "time"), raw.get("time", 0), lo=0, hi=600)
        at = where + ("settle", "frames")
    else:
        frames, time, at = raw, 0.0, where + ("settle",)
    if not isinstance(frames, int) or isinstance(frames, bool) or not 1 <= frames <= 100:
        raise doc.error(at, f"settle must be a number of frames 1..100 (a majority vote over "
                        f"them) or {{frames: N, time: SECONDS}}, got {frames!r}")
    return frames, float(time)


def _bool(doc: Located, where: tuple, value: Any) -> bool:
    if not isinstance(value, bool):
        raise doc.error(where, f"expected yes/no (true/false, on/off), got {value!r}")
    return value


def _number(doc: Located, where: tuple, value: Any, lo: float = -math.inf,
            hi: float = math.inf) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not lo <= value <= hi:
        span = "" if (lo, hi) == (-math.inf, math.inf) else (
            f" >= {lo:g}" if hi == math.inf else f" in {lo:g}..{hi:g}")
        raise doc.error(where, f"expected a number{span}, got {value!r}")
    return float(value)


def _pair(doc: Located, where: tuple, value: Any) -> tuple[float, float]:
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise doc.error(where, f"expected two numbers such as [0, 127], got {value!r}")
    return float(value[0]), float(value[1])


def _channel(doc: Located, where: tuple, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 16:
        raise doc.error(where, f"MIDI channel must be 1..16, got {value!r}")
    return value


def _midi_byte(doc: Located, where: tuple, value: Any, what: str, lo: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= 127:
        raise doc.error(where, f"{what} must be {lo}..127, got {value!r}")
    return value


def _int_or(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        return text
