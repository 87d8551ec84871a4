"""What a route reads from an event: its value (a table, a colour's part), the fields of
an OSC argument, and whether its when: holds. Pure."""

from __future__ import annotations

import colorsys
from typing import Mapping

from ..records import Color, Event
from .config import Route


def holds(when: Mapping[str, object], state: Mapping[str, object]) -> bool:
    """Whether every ``when:`` condition matches the state (unknown state: no)."""
    for name, wanted in when.items():
        have = state.get(name)
        if have is None:
            return False
        if isinstance(wanted, bool):
            truthy = (have.lower() in ("1", "true", "yes", "on") if isinstance(have, str)
                      else bool(have))
            if truthy != wanted:
                return False
        elif isinstance(wanted, (int, float)) and isinstance(have, (int, float)):
            if float(have) != float(wanted):
                return False
        elif str(have).lower() != str(wanted).lower():
            return False
    return True


def route_value(route: Route, ev: Event) -> float | str | None:
    """The number a route works with (before shaping), the word for a word-valued OSC route,
    or None when the route has nothing to send for this event (a word not in its table)."""
    value = ev.value
    word = value.name if isinstance(value, Color) else value
    if route.table is not None:
        found = route.table.get(str(word).lower())
        if found is None and isinstance(value, Color):
            found = route.table.get(value.hex)
        return found if found is not None else route.default
    if route.part:
        return color_part(value, route.part)
    if isinstance(value, (int, float)):
        return float(value)
    return str(word)


def _label(value) -> object:
    """What ``settle:`` compares: the value, a colour by its hex."""
    return value.hex if isinstance(value, Color) else value


def color_part(color: Color, part: str) -> float:
    """r, g, b (0..255) or h, s, v (0..1) of ``color``."""
    r, g, b = color.rgb
    if part in "rgb":
        return float({"r": r, "g": g, "b": b}[part])
    h, s, v = colorsys.rgb_to_hsv(r / 255, g / 255, b / 255)
    return {"h": h, "s": s, "v": v}[part]


def osc_field(arg: object, value: object, ev: Event | None, route: Route,
              source: str = "") -> object:
    """One OSC argument: a literal, or a ``$field`` of the event (see config.FIELDS)."""
    if not isinstance(arg, str) or not arg.startswith("$"):
        return arg
    name = arg[1:]
    if name == "value":
        return value
    if name == "source":
        return source or (ev.source if ev is not None else "")
    if ev is None:  # an exit value: only $value is known
        return 0
    v = ev.value
    if name == "word":
        return v.name if isinstance(v, Color) else (f"{v:g}" if isinstance(v, float) else str(v))
    if name == "key":
        return ev.key
    if name == "frame":
        return ev.frame_id
    if name == "hex":
        return v.hex
    if name == "index":
        return _index(route, ev)
    if name in ("r", "g", "b"):
        return int(color_part(v, name))
    return round(color_part(v, name), 4)


def _index(route: Route, ev: Event) -> int:
    try:
        return route.vocabulary.index(ev.value) + 1
    except ValueError:
        return 0
