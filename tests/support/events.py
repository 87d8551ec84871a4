"""Events as the parser makes them, for tables of router and prompt tests."""

from __future__ import annotations

from pete_osc.records import Color, Event


def ev(key: str, value, kind: str | None = None, frame: int = 1, source: str = "test",
       captured_at: float = 100.0, completed_at: float = 100.1) -> Event:
    """An accepted line ``key: value``; the kind from the value unless given (a float is a
    number, a Color a colour, other text a word)."""
    if kind is None:
        kind = ("number" if isinstance(value, (int, float)) else
                "color" if isinstance(value, Color) else "word")
    return Event(key, kind, value, f"{key}: {getattr(value, 'name', value)}", 1, frame, source,
                 captured_at, completed_at)


LINES = {"color": "amber", "mood": "tense", "energy": "0.7", "tempo": "120",
         "brightness": "0.4", "motion": "0.3", "scene": "city street at night",
         "person": "two people", "object": "red car"}


def answer(**changed) -> str:
    """DIRECTOR.md's complete nine-key answer with some values changed (None: the line left out)."""
    values = {**LINES, **changed}
    return "".join(f"{k}: {v}\n" for k, v in values.items() if v is not None)
