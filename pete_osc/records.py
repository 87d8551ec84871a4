"""Every record that travels between the stages, in one place (as mido keeps its messages
in ``messages/``): small frozen dataclasses, no behaviour beyond a ``to_dict``.

The data's way, and the record on each arrow (docs/architecture.md draws it)::

    capture --Frame--> engine --Token--> run.frame --Text, Event, Rejection--> taps
                                                  \\--Event, FrameEnd--> outputs.Sender
    mapping.Router --OscMessage, MidiMessage--> outputs
    run.show --FrameStart, FrameReport (with its Sent), Notice--> taps
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import mido
import numpy as np

# ---- capture ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """One captured frame: BGR pixels at capture size, its number and capture time."""

    id: int
    image: np.ndarray
    captured_at: float  # time.time()
    source: str


# ---- engines ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prefill:
    """What one frame's prompt cost, as the engine tells it (each of its tokens carries it,
    as mlx-lm's ``GenerationResponse`` carries the prompt's speed)."""

    started: float  # time.perf_counter() when the engine began the frame
    prompt_len: int | None = None  # prompt positions in the KV cache, image tokens included
    # Positions this frame ran through the model before its first token: the image and
    # the instruction only, while the DIRECTOR prefix's cache (and the context's,
    # prefilled before the frame was taken) is reused.
    prefilled: int | None = None
    vision: float | None = None  # seconds in the vision encoder, where the engine tells
    prompt_s: float | None = None  # seconds making the frame's prompt current on its time


@dataclass(frozen=True)
class Token:
    """One streamed piece of text, as ``mlx_lm.stream_generate`` yields them.

    ``at`` is ``time.perf_counter()`` when the engine produced it; ``prefill`` is the
    frame's prompt cost and ``steps`` the forward passes after the prefill so far (one per
    chosen token, the grammar's forced text riding along; None where the engine does not
    count them). The last record of a frame has ``finish`` set ("stop": the model ended
    its answer; "length": the token limit cut it) and may carry no text.
    """

    text: str
    index: int
    at: float
    finish: str | None = None
    prefill: Prefill | None = None
    steps: int | None = None


# ---- the DIRECTOR language ----------------------------------------------------------------


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


Record = Union[Event, Rejection]


@dataclass(frozen=True)
class FrameEnd:
    """A frame's answer is complete (what outputs that bundle per frame wait for)."""

    frame_id: int


# ---- the run ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameStart:
    """A frame goes to the engine now: as captured, and as the model takes it (square RGB
    at --size, made once by the show; None where nobody made it)."""

    frame: Frame
    image: np.ndarray | None = None


@dataclass(frozen=True)
class Text:
    """One streamed token's text; ``t`` is seconds since the engine began the frame."""

    frame_id: int
    source: str
    text: str
    t: float
    finish: str | None = None


@dataclass(frozen=True)
class Sent:
    """The sender's part of a frame: when its first message left, and how many messages
    the run has merged so far over a target's max_rate."""

    first_at: float | None = None  # time.time()
    coalesced: int = 0


@dataclass(frozen=True)
class FrameReport:
    """What happened to one frame, for the status line, the summary and metrics; built
    once, when the frame is over."""

    frame_id: int
    captured_at: float
    tokens: int = 0
    ttft: float | None = None  # seconds from engine start to first token
    tbt: tuple[float, ...] = ()  # seconds between tokens
    events: int = 0
    rejected: int = 0
    truncated: bool = False
    finish: str | None = None
    prompt_len: int | None = None
    prefilled: int | None = None  # positions run through the model before the first token
    steps: int | None = None  # forward passes after the prefill (forced text rides along)
    error: str | None = None
    stopped: bool = False
    watchdog: str | None = None  # why the watchdog ended the frame, if it did
    source: str = ""
    started_at: float | None = None  # time.time() when inference began
    vision: float | None = None  # seconds in the vision encoder, where the engine tells
    token_times: tuple[float, ...] = ()  # seconds since start, per token
    first_event_at: float | None = None  # time.time() when the first event was parsed
    dropped: int = 0  # frames lost so far while the engine was busy (all sources)
    skipped: int = 0  # frames passed over so far between --fps ticks, by design
    sent: Sent | None = None  # None: the run has no mapping
    instruction: str | None = None  # the instruction as sent, where it changes per frame
    context: str | None = None  # the text before the image as sent, likewise
    # Seconds the engine spent on this frame's prompt before the frame was taken (its
    # context prefilled ahead, see Show._ahead); not part of its latency.
    ahead_s: float | None = None

    @property
    def first_sent_at(self) -> float | None:
        """When (Unix time) the frame's first message left."""
        return self.sent.first_at if self.sent is not None else None

    @property
    def coalesced(self) -> int | None:
        return self.sent.coalesced if self.sent is not None else None


@dataclass(frozen=True)
class Notice:
    """Something a person should hear of: a source lost, back or ended; a reload done or
    refused; a frame ended by the watchdog."""

    what: str  # lost | back | ended | reloaded | refused | watchdog
    text: str
    source: str = ""


# ---- the mapping's messages ---------------------------------------------------------------


@dataclass(frozen=True)
class OscMessage:
    """One OSC message for a named target."""

    target: str
    address: str
    args: tuple
    frame_id: int | None = None  # set for messages caused by an event (bundled per frame)
    captured_at: float | None = None


@dataclass(frozen=True)
class MidiMessage:
    """One MIDI message for a named target: a ``mido.Message`` (which checked every data
    byte when it was made)."""

    target: str
    message: mido.Message


Message = Union[OscMessage, MidiMessage]
