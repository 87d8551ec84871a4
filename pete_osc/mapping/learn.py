"""Learn mode's sweeps and the words for routes and messages: what ``pete-osc learn`` and
the monitor page's *send alone* button send, and how a route or a message reads to a
musician. Pure: events and words out, no I/O."""

from __future__ import annotations

import time

from ..records import Event, Message, MidiMessage
from .config import MappingConfig


class Learning:
    """One route sent alone (the sender's part of learn mode): its sweep of events played
    over time through a router that knows that route only. Pure, the time passed in:
    ``start(now)``, then ``step(now)`` at the control rate until ``done``."""

    def __init__(self, mapping: MappingConfig, route: int, seconds: float = 2.0):
        from dataclasses import replace

        from .router import Router

        chosen = mapping.routes[route]
        self.router = Router(replace(mapping, routes=(chosen,)))
        self.events = learn_events(chosen, mapping, seconds)
        self._due: list[tuple[float, Event]] = []
        self.done = False

    def start(self, now: float) -> "Learning":
        self._due = [(now + at, event) for at, event in self.events]
        return self

    def busy(self, now: float) -> bool:
        return bool(self._due) or self.router.busy(now)

    def step(self, now: float) -> list[Message]:
        """The messages due by ``now``; each step of the sweep is a frame (a chord route
        sounds its chord); the closing messages once the sweep is over."""
        out: list[Message] = []
        stepped = False
        while self._due and self._due[0][0] <= now:
            _, event = self._due.pop(0)
            out += self.router.event(event, now)
            stepped = True
        if stepped:
            out += self.router.end_frame(now)
        out += self.router.tick(now)
        if not self._due and not self.router.busy(now):
            out += self.router.closing()
            self.done = True
        return out

    def stop(self) -> list[Message]:
        """Ended before its sweep is over (learn or the show stopping): the closing
        messages, every note it sounds released."""
        self._due = []
        self.done = True
        return self.router.closing()


def learn_events(route, mapping: MappingConfig, seconds: float = 2.0) -> list[tuple[float, Event]]:
    """Events that walk ``route`` through its values over ``seconds``, as (offset, event):
    a number from its low end to its high end and back (a CC sweeps 0 -> 127 -> 0), each
    word of its table or vocabulary, a few colours; a note route plays its notes."""
    from ..director.values import Invalid, parse_color

    if route.chord is not None:
        return _chord_learn_events(route.chord, mapping, seconds)
    kind, key = route.key_type, route.event
    if route.table is not None:
        values = list(route.table)
        kind = "color" if route.key_type == "color" else "word"
    elif kind == "number":
        lo, hi = route.shape.lo, route.shape.hi
        steps = 24 if route.kind != "note" else 3
        up = [lo + (hi - lo) * i / steps for i in range(steps + 1)]
        values = up + up[-2::-1] if route.kind != "note" else up[1:]
    elif kind == "word":
        values = list(route.vocabulary)
    elif kind == "color":
        values = ["red", "orange", "yellow", "green", "cyan", "blue", "purple", "white"]
    else:
        values = ["a test", "of this route"]
    if kind == "color":
        colors = []
        for v in values:
            try:
                colors.append(parse_color(v))
            except Invalid:
                pass  # a table may key colours by hex
        values = colors
    gap = seconds / max(1, len(values))
    now = time.time()
    return [(i * gap, Event(key, kind, value, f"{key}: {value}", 1, -1, "learn", now, now))
            for i, value in enumerate(values)]


def _chord_learn_events(chord, mapping: MappingConfig, seconds: float) -> list[tuple[float, Event]]:
    """A chord route's sweep: a chord per step, round the colours (roots) with its moods
    (qualities) in turn, at middle energy and brightness."""
    from ..director.values import parse_color

    colors = ["red", "orange", "yellow", "green", "cyan", "blue", "purple", "magenta"]
    moods = list(chord.qualities)
    steps = max(len(colors), len(moods))
    gap = seconds / steps
    now = time.time()
    out = []
    for i in range(steps):
        lines = [(chord.root_key, "color", parse_color(colors[i % len(colors)])),
                 (chord.quality_key, "word", moods[i % len(moods)])]
        lines += [(k, "number", sum(span) / 2) for k, span in (
            (chord.energy_key, chord.energy_range), (chord.register_key, chord.register_range)) if k]
        out += [(i * gap, Event(key, kind, value, f"{key}: {value}", 1, -1, "learn", now, now))
                for key, kind, value in lines]
    return out


def describe_route(route) -> str:
    """A route in a few words: 'energy -> CC 74 on synth'."""
    if route.kind == "osc":
        what = f"OSC {route.address}"
    elif route.kind == "cc":
        what = f"CC {route.number} ch {route.channel}"
    elif route.kind == "note":
        what = f"notes ch {route.channel}"
    elif route.kind == "chord":
        what = f"chords ch {route.channel}"
    elif route.kind == "prompt":
        return f"prompt {route.prompt.template!r} -> OSC {route.address} on {route.target}"
    else:
        what = f"program ch {route.channel}"
    return f"{route.event} -> {what} on {route.target}"


def describe_message(message: Message) -> str:
    """A message as a musician reads it: '/pete/energy 0.7' or 'CC 74 = 90 ch 1'."""
    if isinstance(message, MidiMessage):
        msg = message.message
        ch = getattr(msg, "channel", 0) + 1
        if msg.type == "control_change":
            return f"CC {msg.control} = {msg.value} ch {ch}"
        if msg.type == "note_on":
            return f"note on {msg.note} vel {msg.velocity} ch {ch}"
        if msg.type == "note_off":
            return f"note off {msg.note} ch {ch}"
        if msg.type == "program_change":
            return f"program {msg.program} ch {ch}"
        return str(msg)
    args = " ".join(f"{a:g}" if isinstance(a, float) else str(a) for a in message.args)
    return f"{message.address} {args}".strip()
