"""The typed records that flow from the parser to the outputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True)
class Color:
    """A colour value: the name the model wrote (or its hex), and its RGB."""

    name: str
    hex: str
    rgb: tuple[int, int, int]


Value = Union[float, str, Color]


@dataclass(frozen=True)
class FrameInfo:
    """Where the lines of one frame's answer came from."""

    frame_id: int
    source: str
    captured_at: float  # time.time() when the frame was read from the source


@dataclass(frozen=True)
class Event:
    """One accepted DIRECTOR line, emitted the moment its line completed."""

    key: str
    kind: str  # number | word | color | text
    value: Value
    raw: str  # the line as the model wrote it
    line: int  # 1-based line number within the frame's answer
    frame_id: int
    source: str
    captured_at: float
    completed_at: float  # time.time() when the line's newline arrived

    def to_dict(self) -> dict:
        """A JSON-ready dict; colours carry name, hex and RGB."""
        value = self.value
        if isinstance(value, Color):
            value = {"name": value.name, "hex": value.hex, "rgb": list(value.rgb)}
        return {
            "key": self.key,
            "kind": self.kind,
            "value": value,
            "raw": self.raw,
            "line": self.line,
            "frame": self.frame_id,
            "source": self.source,
            "captured_at": round(self.captured_at, 6),
            "completed_at": round(self.completed_at, 6),
        }


@dataclass(frozen=True)
class FrameEnd:
    """A frame's answer is complete (what outputs that bundle per frame wait for)."""

    frame_id: int


@dataclass(frozen=True)
class Rejection:
    """A line that was not accepted, with the reason; counted and logged, never sent."""

    raw: str
    reason: str
    line: int
    frame_id: int
    key: str | None = None
    truncated: bool = False  # cut off by the token limit before its newline

    def to_dict(self) -> dict:
        return {
            "rejected": self.raw,
            "reason": self.reason,
            "key": self.key,
            "line": self.line,
            "frame": self.frame_id,
            "truncated": self.truncated,
        }
