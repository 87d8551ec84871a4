"""Value shaping and gliding: pure functions and small state machines with explicit time.

Nothing here reads a clock or touches a device, so every behaviour is a table test.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field

from .config import Shape


def curve(x: float, kind: str, steepness: float = 4.0) -> float:
    """Bend ``x`` in 0..1 to 0..1.

    exponential: slow start, fast end (e^(kx)-1)/(e^k-1), the shape of a filter sweep that
    feels even to the ear; logarithmic: its mirror image, fast start, slow end.
    """
    if kind == "linear":
        return x
    k = steepness
    if kind == "exponential":
        return math.expm1(k * x) / math.expm1(k)
    if kind == "logarithmic":
        return math.log1p(math.expm1(k) * x) / k
    raise ValueError(f"unknown curve {kind!r}")


def shape(value: float, s: Shape) -> float:
    """``value`` from the input range to the output range through the route's shape.

    Order: normalise to 0..1, clamp (if on), invert, curve, scale, snap to the step. Without clamp
    a value outside the input range is extrapolated linearly, curve or not.
    """
    x = (value - s.lo) / (s.hi - s.lo)
    if s.clamp:
        x = min(1.0, max(0.0, x))
    if s.invert:
        x = 1.0 - x
    if 0.0 <= x <= 1.0:
        x = curve(x, s.curve, s.steepness)
    y = s.out_lo + x * (s.out_hi - s.out_lo)
    return snap(y, s.step)


def snap(y: float, step: float) -> float:
    """``y`` rounded to a multiple of ``step`` (0: unchanged)."""
    if step <= 0:
        return y
    return round(y / step) * step


@dataclass
class Glide:
    """Moves an output value toward each new target over time, sampled by ``at(now)``.

    linear: a straight ramp that arrives after ``time`` seconds (the default: with the
    model's ~2 updates a second, a 0.5 s ramp arrives as the next value comes).
    smooth: a one-pole low-pass, ``time`` being the time constant (63% of the way).
    """

    kind: str
    time: float
    value: float | None = None
    _start: float = 0.0
    _target: float = 0.0
    _since: float = 0.0

    def retarget(self, target: float, now: float) -> None:
        """Head for ``target`` from wherever the glide is now."""
        if self.value is None:  # the first value jumps: there is nothing to glide from
            self.value = self._start = self._target = target
            self._since = now
            return
        self.value = self.at(now)
        self._start, self._target, self._since = self.value, target, now

    def at(self, now: float) -> float:
        """The glide's value at ``now``."""
        if self.value is None:
            raise ValueError("glide has no value yet")
        elapsed = max(0.0, now - self._since)
        span = self._target - self._start
        if self.kind == "linear":
            if elapsed >= self.time:
                return self._target
            return self._start + span * (elapsed / self.time)
        return self._target - span * math.exp(-elapsed / self.time)

    def settled(self, now: float, tolerance: float) -> bool:
        """Whether the glide is within ``tolerance`` of its target (and so can stop ticking)."""
        return self.value is None or abs(self.at(now) - self._target) <= tolerance

    @property
    def target(self) -> float | None:
        return None if self.value is None else self._target


@dataclass
class Gate:
    """Send-on-change, a rate limit and a hold time, for one route.

    ``offer`` says whether a value may go now. A value held back by the rate limit or the
    hold is kept and ``due`` hands it over once allowed, so the last word always arrives:
    a limit thins the stream, it never loses where it ended.
    """

    change_only: bool = False
    min_interval: float = 0.0  # seconds, from max_rate
    hold: float = 0.0
    last: object = None
    last_at: float = -math.inf
    changed_at: float = -math.inf
    pending: object = None

    def offer(self, value: object, now: float) -> bool:
        if self.change_only and value == self.last:
            self.pending = None  # whatever was waiting is superseded by "no change"
            return False
        if self._wait(value, now) > 0:
            self.pending = value
            return False
        self._sent(value, now)
        return True

    def due(self, now: float) -> object | None:
        """A held-back value that may go now (None if there is none)."""
        if self.pending is None:
            return None
        value = self.pending
        if self.change_only and value == self.last:
            self.pending = None
            return None
        if self._wait(value, now) > 0:
            return None
        self._sent(value, now)
        return value

    def _wait(self, value: object, now: float) -> float:
        wait = self.last_at + self.min_interval - now
        if value != self.last:
            wait = max(wait, self.changed_at + self.hold - now)
        return wait

    def _sent(self, value: object, now: float) -> None:
        if value != self.last:
            self.changed_at = now
        self.last, self.last_at, self.pending = value, now, None


@dataclass
class Settle:
    """Labels that settle: a small model flips between neighbouring words from frame to
    frame; a new value goes on only once it wins the vote of the last ``frames`` values
    and has kept winning for ``time`` seconds. The first value goes at once (there is
    nothing to flicker from); a tie keeps the value standing.

    ``offer`` takes each frame's value and returns the value to send now, or None;
    ``due`` returns a winner whose ``time`` has passed between two frames (or None).
    Values are compared by equality (colours by their hex).
    """

    frames: int = 1
    time: float = 0.0
    current: object = None  # the value last let through
    candidate: object = None  # a new winner waiting out ``time``
    since: float = 0.0
    history: deque = field(default_factory=deque)

    def offer(self, value: object, now: float) -> object | None:
        self.history.append(value)
        while len(self.history) > self.frames:
            self.history.popleft()
        return self._consider(self._winner(), now)

    def due(self, now: float) -> object | None:
        if self.candidate is None:
            return None
        return self._consider(self.candidate, now)

    def _winner(self) -> object:
        counts = Counter(self.history)
        best = max(counts.values())
        if counts.get(self.current, 0) == best:
            return self.current
        return next(v for v in reversed(self.history) if counts[v] == best)

    def _consider(self, winner: object, now: float) -> object | None:
        if self.current is None:
            self.current = winner
            return winner
        if winner == self.current:
            self.candidate = None
            return None
        if winner != self.candidate:
            self.candidate, self.since = winner, now
        if now - self.since >= self.time:
            self.current, self.candidate = winner, None
            return winner
        return None
