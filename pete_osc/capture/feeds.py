"""Several sources for one engine: named, read on their own threads, served fairly.

Each source keeps only its newest frame (see :class:`~pete_osc.capture.LatestFrame`).
The engine takes one frame at a time, from the sources in turn: the next source after
the last one served that has a new frame ready. A source with nothing new (a stalled
camera, a lost stream, a file at its end) is passed over, so it never blocks the others.
Frame ids are numbered here, once for the whole run, so they are unique across sources.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

from ..errors import PeteError
from ..records import Frame
from .latest import EveryFrame, LatestFrame
from .sources import Source

# A source's name: what events carry and a mapping's routes name (``source:``).
SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_NAMED = re.compile(r"^(" + SOURCE_NAME.pattern[1:-1] + r")=(.+)$")


@dataclass(frozen=True)
class SourceSpec:
    """One ``--source``: the name events carry (``{source}`` in a mapping) and what to open."""

    name: str
    spec: str


def parse_sources(values: list[str]) -> list[SourceSpec]:
    """``--source`` values, each ``NAME=SPEC`` or ``SPEC`` (named after the camera, file,
    folder or stream); names made unique with -2, -3."""
    specs = []
    for value in values:
        named = _NAMED.match(value)
        if named and not Path(value).exists() and "://" not in named.group(1):
            specs.append(SourceSpec(named.group(1), named.group(2)))
        elif "=" in value.split("://")[0] and not Path(value).exists():
            raise PeteError(f"--source {value}: a name is letters, digits, - and _ "
                            "(as in --source stage=0)")
        else:
            specs.append(SourceSpec("", value))
    taken: set[str] = {s.name for s in specs if s.name}
    if len(taken) < sum(1 for s in specs if s.name):
        raise PeteError("--source: two sources have the same name; each needs its own")
    out = []
    for s in specs:
        if s.name:
            out.append(s)
            continue
        base = default_name(s.spec)
        name, n = base, 2
        while name in taken:
            name, n = f"{base}-{n}", n + 1
        taken.add(name)
        out.append(SourceSpec(name, s.spec))
    return out


def default_name(spec: str) -> str:
    """A name for a source given without one: cam0, the file's or folder's name, the
    stream's last path part or host; 'blank' for none."""
    if spec == "none":
        return "blank"
    if spec.isdigit():
        return f"cam{spec}"
    if "://" in spec:
        url = urlparse(spec)
        stem = Path(url.path).stem
        name = stem or url.hostname or "stream"
    else:
        name = Path(spec.rstrip("/\\")).stem or "source"
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-_") or "source"
    return name if SOURCE_NAME.match(name) else f"s-{name}"


# A paced tick waits for the next camera frame where frames come at least this often.
FRESH_WAIT = 0.05


class Feed:
    """One named source and what reads it: a grabber thread (newest frame wins) or, for a
    file with ``--every-frame``, every frame in order."""

    def __init__(self, name: str, source: Source, every_frame: bool, loop: bool, fps: float,
                 notify: Callable[[str, str, str], None], fresh: threading.Event,
                 measure: Callable[[str, object, float], None] | None = None):
        self.name = name
        self.source = source
        # --fps paces each live source; --every-frame files go as fast as the engine.
        every_frame = every_frame and not source.live
        self.period = 1.0 / fps if fps > 0 and not every_frame else 0.0
        self.next_at = 0.0
        self.taken = 0
        # Captured frames the engine never took, in two kinds: skipped (captured before
        # the --fps tick was due: a 24 fps file sampled at 2 fps skips 11 of 12, by
        # design) and dropped (captured while a due tick waited for a busy engine).
        self.skipped = 0
        self.dropped = 0
        self._last_id: int | None = None
        self.announced = False
        self.holding = False  # its tick waits for the frame captured after it
        say = lambda what, text: notify(name, what, text)  # noqa: E731
        self.measure = measure
        if every_frame:
            self.every: EveryFrame | None = EveryFrame(source, loop, name)
            self.latest: LatestFrame | None = None
        else:
            self.every = None
            on_image = (lambda image, at: measure(name, image, at)) if measure else None
            self.latest = LatestFrame(source, loop, name, notify=say, fresh=fresh,
                                      on_image=on_image)

    @property
    def end_reason(self) -> str | None:
        return (self.latest or self.every).end_reason

    @property
    def exhausted(self) -> bool:
        if self.latest is not None:
            return self.latest.exhausted
        return self.every.end_reason is not None

    def take(self, now: float) -> Frame | None:
        """Its next frame if one is ready and its pace allows one now."""
        if now < self.next_at:
            return None
        if self.latest is not None:
            self.holding = bool(self.period) and self._fresh_coming(now)
            if self.holding:
                return None
            frame = self.latest.newest(timeout=0)
            if frame is not None:
                self._count_untaken(frame.id, now)
        else:
            frame = next(self.every, None)
            if frame is not None and self.measure is not None:
                self.measure(self.name, frame.image, frame.captured_at)
        if frame is not None:
            self.taken += 1
            # The next frame is due a period after this one was due (not after it was
            # taken); a tick the engine was too busy for is not made up later.
            due = self.next_at + self.period if self.next_at else now + self.period
            self.next_at = max(due, now) if self.period else 0.0
        return frame

    def _count_untaken(self, frame_id: int, now: float) -> None:
        """Sort the frames captured since the last take into skipped and dropped (see
        __init__): those that came after the tick was due waited on the engine."""
        last, self._last_id = self._last_id, frame_id
        if last is None or not self.latest.source.counts_drops:
            return  # (before the first take nothing was due)
        untaken = max(0, frame_id - last - 1)
        if not self.period:
            late = untaken  # as fast as the engine goes: each one it missed is lost
        else:
            interval = self.latest.interval
            late = int((now - self.next_at) / interval) if interval > 0 else 0
        dropped = min(untaken, max(0, late))
        self.dropped += dropped
        self.skipped += untaken - dropped

    def _fresh_coming(self, now: float) -> bool:
        """A paced tick that finds the engine idle takes the first frame captured after
        it, not the one already waiting (up to a camera frame old): the music then follows
        the newest picture, at the cost of starting the tick at most one camera frame
        later. Only where frames come at least every FRESH_WAIT seconds, and only while the
        tick is not overdue (an engine that was busy takes what is there at once)."""
        interval = self.latest.interval
        late = now - self.next_at
        if not self.next_at or not 0 < interval <= FRESH_WAIT or late > 1.5 * interval:
            return False
        waiting = self.latest.waiting_since()
        return waiting is None or waiting < time.time() - late

    def close(self, timeout: float = 5.0) -> None:
        if self.latest is not None:
            self.latest.close(timeout)
        else:
            self.every.close()


class Feeds:
    """All the run's sources; :meth:`next` gives the next frame, fairly (see module).

    ``notify(source, what, text)`` hears of a source lost, back or ended (``what``), on
    the thread that noticed it; ``measure(source, image, captured_at)`` sees every
    captured image (for the pixel keys), on the capture thread."""

    def __init__(self, sources: list[tuple[str, Source]], every_frame: bool = False,
                 loop: bool = False, fps: float = 0.0,
                 notify: Callable[[str, str, str], None] = lambda source, what, text: None,
                 measure: Callable[[str, object, float], None] | None = None):
        self.notify = notify
        self._fresh = threading.Event()
        self.feeds: list[Feed] = []
        try:
            for name, source in sources:
                self.feeds.append(Feed(name, source, every_frame, loop, fps, notify, self._fresh,
                                       measure))
        except BaseException:
            self.close()
            raise
        self._turn = 0
        self._next_id = 0

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.feeds]

    @property
    def dropped(self) -> int:
        """Frames lost while the engine was busy (all sources); see Feed."""
        return sum(f.dropped for f in self.feeds)

    @property
    def skipped(self) -> int:
        """Frames passed over by design between two --fps ticks (all sources)."""
        return sum(f.skipped for f in self.feeds)

    @property
    def upcoming(self) -> str:
        """The source :meth:`next` looks at first (its turn is next), "" if none is left."""
        n = len(self.feeds)
        for k in range(n):
            feed = self.feeds[(self._turn + k) % n]
            if not feed.exhausted:
                return feed.name
        return ""

    @property
    def ended(self) -> bool:
        """Every source has ended (files at their end; live sources never end)."""
        return all(f.exhausted for f in self.feeds)

    def next(self, stop: threading.Event, timeout: float = 0.25,
             busy: frozenset[str] | set[str] = frozenset()) -> Frame | None:
        """The next frame, the sources taken in turn; None if none is ready within
        ``timeout`` (the caller looks after other things, then asks again) or all ended.
        Sources in ``busy`` (a frame of theirs is still being answered, in a batch) are
        passed over: a source's frames are answered in order, one at a time."""
        deadline = time.monotonic() + timeout
        while not stop.is_set():
            self._fresh.clear()  # before looking: a frame that lands after sets it again
            now = time.monotonic()
            n = len(self.feeds)
            for k in range(n):
                feed = self.feeds[(self._turn + k) % n]
                if feed.name in busy:
                    continue
                frame = feed.take(now)
                if frame is not None:
                    self._turn = (self._turn + k + 1) % n
                    self._next_id += 1
                    return replace(frame, id=self._next_id - 1)
                if feed.holding:
                    break  # its fresh frame is a few ms away: the turn stays its own
                if feed.exhausted and not feed.announced:
                    feed.announced = True
                    self.notify(feed.name, "ended", f"source {feed.name} {feed.end_reason}")
            if self.ended or now >= deadline:
                return None
            idle = [f for f in self.feeds if f.name not in busy]
            due = min((f.next_at for f in idle if f.next_at > now), default=deadline)
            if any(f.period and f.next_at <= now for f in idle):
                due = min(due, now + FRESH_WAIT)  # a tick waiting for its fresh frame
            self._fresh.wait(max(0.0, min(deadline, due) - now))
        return None

    def close(self, timeout: float = 5.0) -> None:
        """Stop every grabber and release every device."""
        for feed in self.feeds:
            feed.close(timeout)
