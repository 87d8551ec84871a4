"""The musical clock that quantised routes wait for: Ableton Link (LinkPython-extern).

A clock answers two questions: which beat is the next boundary of so many beats (a beat,
a bar of ``quantum`` beats, two bars) after a time, and when does a beat fall, on the
sender's own time base (``time.monotonic()``). None means there is no beat to wait for
(then a quantised change goes out at once, rather than never). A waiting change keeps
its beat, not a time: the time is asked again as it nears, so a tempo change or the
peers' clock sync on the way is followed.

Why LinkPython-extern rather than aalink (both on PyPI, both wrap Ableton's Link),
measured on this project's 2-core Linux machine: both are accurate (aalink's ``await
link.sync(1)`` returned 0.4-1.4 ms after the beat; our sender, waiting on
LinkPython-extern's ``timeAtBeat``, sends 0.3-2 ms after it, as a second peer measures)
and both are cheap (0.15 µs per ``link.beat`` read in aalink, 0.65 µs per session-state
read here). The difference is the shape: the sender is a plain thread that waits on its
queue and must know *when* a beat falls to wait exactly that long. LinkPython-extern
gives Link's session state synchronously (``beatAtTime``, ``timeAtBeat``,
``setTempo``); aalink gives the beat now and an asyncio ``sync``, so the sender would
need an event loop of its own, or poll.
"""

from __future__ import annotations

import logging
import math
import threading
import time

from ..errors import PeteError

log = logging.getLogger(__name__)


class LinkClock:
    """Ableton Link: joins (or starts) the session on the local network."""

    name = "Ableton Link"

    def __init__(self, quantum: float = 4.0, tempo: float = 120.0):
        try:
            import link
        except ImportError:
            raise PeteError("clock: link needs Ableton Link's Python binding: "
                            "pip install LinkPython-extern") from None
        self.quantum = quantum
        self.link = link.Link(tempo)
        self.link.enabled = True
        self._peers = 0

    def _offset(self) -> float:
        """Link's clock minus time.monotonic(), now (they are different clocks)."""
        return self.link.clock().micros() / 1e6 - time.monotonic()

    def next_beat(self, now: float, beats: float) -> float | None:
        """The next multiple of ``beats`` on the session's timeline strictly after
        ``now`` (a monotonic time); bars line up with the session's bars."""
        state = self.link.captureAppSessionState()
        beat = state.beatAtTime(round((now + self._offset()) * 1e6), self.quantum)
        return (math.floor(beat / beats + 1e-9) + 1) * beats

    def time_of(self, beat: float) -> float | None:
        """When ``beat`` falls, in time.monotonic(), as the session sees it now (asked
        again while waiting: a tempo change or the peers' clock sync moves it)."""
        state = self.link.captureAppSessionState()
        return state.timeAtBeat(beat, self.quantum) / 1e6 - self._offset()

    def set_tempo(self, bpm: float) -> None:
        """Set the session's tempo (every peer follows)."""
        state = self.link.captureAppSessionState()
        state.setTempo(float(bpm), self.link.clock().micros())
        self.link.commitAppSessionState(state)

    def tempo(self) -> float:
        return self.link.captureAppSessionState().tempo()

    def peers(self) -> int:
        count = self.link.numPeers()
        if count != self._peers:
            log.warning("Ableton Link: %d other peer%s in the session", count, "" if count == 1 else "s")
            self._peers = count
        return count

    def close(self) -> None:
        self.link.enabled = False


class MidiClock:
    """MIDI clock on an input port: 24 ticks a quarter note; Start makes the next tick
    beat 0, Stop stops the beat (changes then go at once), Continue goes on counting.
    The time of a beat to come is the last tick's time plus the ticks still to come at
    the recent tick interval. A clock silent for over half a second is gone too."""

    name = "MIDI clock"
    SILENT = 0.5

    def __init__(self, port: str, backend, api: str, quantum: float = 4.0):
        names = backend.get_input_names()
        found = port if port in names else next(
            iter([n for n in names if port.lower() in n.lower()][:1]), None)
        if found is None or sum(port.lower() in n.lower() for n in names) > 1 and port not in names:
            raise PeteError(f"clock: no MIDI input port {port!r} ({api}); there are: "
                            f"{', '.join(names) or 'none'}")
        self.quantum = quantum
        self.port_name = found
        self.ticks = -1  # ticks since Start (the first tick after Start is 0)
        self.playing = False
        self.last: float | None = None  # time.monotonic() of the last tick
        self.interval: float | None = None  # seconds per tick, smoothed
        self._said = None
        # Read by a thread of its own, not by rtmidi's callback: a callback port on JACK
        # cannot be closed while ticks arrive (its thread waits for the GIL we hold).
        self.port = backend.open_input(found)
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, name="pete-osc MIDI clock", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            for message in self.port.iter_pending():
                self._message(message)
            time.sleep(0.0005)  # a tick's time is known to half a millisecond

    def _message(self, message) -> None:
        now = time.monotonic()
        kind = message.type
        if kind == "clock":
            if self.last is not None and now - self.last < self.SILENT:
                gap = now - self.last
                self.interval = gap if self.interval is None else 0.8 * self.interval + 0.2 * gap
            self.last = now
            if self.playing:
                self.ticks += 1
        elif kind == "start":
            self.ticks, self.playing = -1, True
        elif kind == "continue":
            self.playing = True
        elif kind == "stop":
            self.playing = False

    def _alive(self, now: float) -> bool:
        alive = (self.playing and self.interval is not None and self.last is not None
                 and self.ticks >= 0 and now - self.last < self.SILENT)
        if alive != self._said:
            if self._said is not None:
                log.warning("MIDI clock on %r %s", self.port_name,
                            "is back" if alive else "stopped: quantised changes go at once")
            self._said = alive
        return alive

    def next_beat(self, now: float, beats: float) -> float | None:
        if not self._alive(now):
            return None
        beat = (self.ticks + (now - self.last) / self.interval) / 24.0
        return (math.floor(beat / beats + 1e-9) + 1) * beats

    def time_of(self, beat: float) -> float | None:
        if not self._alive(time.monotonic()):
            return None
        return self.last + (beat * 24.0 - self.ticks) * self.interval

    def set_tempo(self, bpm: float) -> None:
        """The tempo belongs to whoever sends the clock."""

    def close(self) -> None:
        self._stop.set()
        self._reader.join(1.0)
        self.port.close()


def open_clock(spec, midi=None):
    """The clock a mapping's ``clock:`` asks for (None: no clock). ``midi``: a function
    returning (api name, mido backend), for a MIDI clock."""
    if spec is None:
        return None
    if spec.source == "midi":
        api, backend = midi()
        return MidiClock(spec.port, backend, api, spec.quantum)
    return LinkClock(spec.quantum)
