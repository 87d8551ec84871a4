"""What the model is told besides the image: its previous answers and the DAW's state.

DIRECTOR.md's ``instruction`` (the user message after the image) may hold
``{previous}`` (the last answers of the same source, one compact line each),
``{daw.tempo}``, ``{daw.playing}``, ``{daw.scene}``, ``{daw.track}`` (from AbletonOSC's
listeners) and ``{context.NAME}`` (any ``/pete/context/NAME value`` sent to pete-osc).
They are filled in for each frame; the DIRECTOR prefix before the image stays cached, so
only the instruction is prefilled again. Values from the network are cut to
:data:`MAX_VALUE` characters of plain text and only ever reach the prompt: OSC addresses
come from the mapping alone.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Iterable, Mapping

from ..records import Color, Event

MAX_VALUE = 64  # characters of one context value in the prompt
MAX_ANSWER = 200  # characters of one previous answer
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)\}")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]+")


def clean(value: object, limit: int = MAX_VALUE) -> str:
    """A value as one short line of plain text (control characters and newlines gone)."""
    if isinstance(value, float):
        text = f"{value:g}"
    else:
        text = str(value)
    text = " ".join(_UNPRINTABLE.sub(" ", text).split())
    return text[:limit]


def answer_line(events: Iterable[Event]) -> str:
    """One frame's accepted lines as one compact line: 'mood tense, energy 0.7'."""
    parts = []
    for ev in events:
        value = ev.value
        shown = value.name if isinstance(value, Color) else (
            f"{value:g}" if isinstance(value, float) else str(value))
        parts.append(f"{ev.key} {shown}")
    return clean(", ".join(parts), MAX_ANSWER)


def render(template: str, previous: Iterable[str], daw: Mapping[str, object],
           context: Mapping[str, object]) -> str:
    """The instruction with its placeholders filled in (unknown values: 'unknown')."""
    earlier = list(previous)

    def value(m: re.Match) -> str:
        name = m.group(1)
        if name == "previous":
            return " | ".join(earlier) if earlier else "none yet"
        if name.startswith("daw."):
            found = daw.get(name[4:])
        elif name.startswith("context."):
            found = context.get(name[8:])
        else:
            return m.group(0)
        return clean(found) if found is not None else "unknown"

    return _PLACEHOLDER.sub(value, template)


class Answers:
    """Each source's last answers (compact lines), newest last, for ``{previous}``."""

    def __init__(self, keep: int):
        self.keep = keep
        self._by_source: dict[str, deque] = {}

    def add(self, source: str, events: list[Event]) -> None:
        if self.keep and events:
            self._by_source.setdefault(source, deque(maxlen=self.keep)).append(answer_line(events))

    def of(self, source: str) -> list[str]:
        return list(self._by_source.get(source, ()))

    def resize(self, keep: int) -> None:
        self.keep = keep
        self._by_source = {s: deque(list(d)[-keep:], maxlen=keep) if keep else deque(maxlen=0)
                           for s, d in self._by_source.items()}
