"""Events in, messages out: the mapping applied, with per-route state but no I/O.

Time is passed in (``now``, seconds on any monotonic clock), so glides, rate limits, holds
and note lengths are all testable as tables. The sender calls :meth:`Router.event`
for each event and :meth:`Router.tick` at the control rate.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Mapping

import mido

from ..records import Event, Message, MidiMessage, OscMessage
from .config import MappingConfig, Route
from .harmony import Harmony, take_input
from .notes import Keys
from .prompts import Crossfade, frame_prompt, prompt_messages, route_keys, word_of
from .reading import _label, holds, osc_field, route_value
from .shape import Gate, Glide, Settle, shape


@dataclass
class _State:
    gate: Gate
    glide: Glide | None = None
    source: str = ""  # the source this state is for ("" where the sources share the route)
    event: Event | None = None  # the last one, for OSC fields beside a glided $value
    last_out: object = None  # the last glide output sent (ints for MIDI: no repeats)
    notes_on: dict[int, float] = field(default_factory=dict)  # note -> off time
    exit_sent: bool = False
    settle: Settle | None = None
    voted: dict = field(default_factory=dict)  # a settle label -> its latest event
    last_message: Message | None = None  # for heartbeat:
    sent_at: float = 0.0
    harmony: Harmony | None = None  # a chord route's inputs and sounding notes
    changed: bool = False  # a chord or prompt input changed since the frame's was sent
    fade: Crossfade | None = None  # a prompt route's slots and weights
    words: dict[str, str] = field(default_factory=dict)  # a prompt route's latest words


def _new_state(route: Route, source: str = "") -> _State:
    gate = Gate(route.change_only, 1.0 / route.max_rate if route.max_rate else 0.0, route.hold)
    settle = (Settle(route.settle_frames, route.settle_time)
              if route.settle_frames > 1 or route.settle_time > 0 else None)
    c = route.chord
    harmony = (Harmony(c.roots, dict(c.qualities), c.voices, c.velocity, c.octaves)
               if c is not None else None)
    return _State(gate, Glide(route.glide, route.glide_time) if route.glide else None, source,
                  settle=settle, harmony=harmony,
                  fade=Crossfade.of(route.prompt) if route.prompt is not None else None)


class Router:
    """Applies a :class:`MappingConfig` to events; one per mapping (see :meth:`reloaded`).

    A route's state (its gate, glide and sounding notes) is one per route, or one per
    source where the route's address or arguments name the source (``{source}``)."""

    def __init__(self, mapping: MappingConfig, state: Mapping[str, object] | None = None,
                 clock=None, keys: Keys | None = None):
        self.mapping = mapping
        # The keys sounding on each MIDI channel, over every route (see notes.Keys):
        # everything the router returns passes through it.
        self.keys = keys if keys is not None else Keys()
        self.state = state if state is not None else {}  # the DAW's, for routes' when:
        # The beat quantised routes wait for (pete_osc.inputs.clock): next_beat(now, beats) and
        # time_of(beat), None where there is no beat (the change goes at once). Messages
        # waiting for their boundary, as (beat, order, message).
        self.clock = clock
        self._waiting: list[tuple[float, int, Message]] = []
        self._order = 0
        self._beat_at: dict[float, float] = {}
        self.unquantised = 0  # quantised changes sent at once for want of a beat
        self._by_key: dict[str, list[Route]] = {}
        # route index -> source ("" if shared) -> state
        self._states: dict[int, dict[str, _State]] = {}
        self._routes = list(mapping.routes)
        for i, route in enumerate(self._routes):
            for key in route_keys(route):
                self._by_key.setdefault(key, []).append((i, route))
            self._states[i] = {} if route.per_source else {"": _new_state(route)}

    def reloaded(self, mapping: MappingConfig) -> tuple["Router", list[Message]]:
        """A router for an edited ``mapping`` that keeps the state (glides, holds,
        sounding notes) of every route that did not change, and the note offs of the
        notes that removed or changed routes leave sounding."""
        new = Router(mapping, self.state, self.clock, self.keys)
        new._waiting, new._order = self._waiting, self._order
        kept: set[int] = set()
        for j, route in enumerate(new._routes):
            for i, old in enumerate(self._routes):
                if i not in kept and old.same(route):
                    kept.add(i)
                    new._states[j] = self._states[i]
                    break
        released = [_note_off(route, note)
                    for i, route in enumerate(self._routes) if i not in kept
                    for state in self._states[i].values() for note in list(state.notes_on)]
        return new, self.keys.filter(released)

    def _each(self):
        for i, route in enumerate(self._routes):
            for state in self._states[i].values():
                yield route, state

    def event(self, ev: Event, now: float) -> list[Message]:
        """The messages ``ev`` causes right now."""
        out: list[Message] = []
        for i, route in self._by_key.get(ev.key, ()):
            if route.source and route.source != ev.source:
                continue
            if route.when and not holds(route.when, self.state):
                continue
            states = self._states[i]
            key = ev.source if route.per_source else ""
            state = states.get(key)
            if state is None:
                state = states[key] = _new_state(route, key)
            if state.harmony is not None:
                take_input(route.chord, state.harmony, ev)
                state.changed = True
                continue  # the chord goes at the frame's end (see end_frame)
            if state.fade is not None:
                state.words[ev.key] = word_of(ev.value)
                state.changed = True
                continue  # the prompt too
            if state.settle is not None:
                ev = self._vote(state, ev, now)
                if ev is None:
                    continue
            at = self._boundary(route, now)
            out.extend(self._later(at, now, _remember(state, self._offer(route, state, ev, at[0]),
                                                      at[0])))
        if (self.clock is not None and ev.key == "tempo" and self.mapping.clock is not None
                and self.mapping.clock.set_tempo and isinstance(ev.value, (int, float))):
            self.clock.set_tempo(float(ev.value))
        return self.keys.filter(out)

    def _boundary(self, route: Route, now: float) -> tuple[float, float | None]:
        """When a change of ``route`` goes out: (now, None), or (the time of its next beat
        or bar boundary, that beat)."""
        if not route.grid or self.clock is None:
            return now, None
        quantum = self.mapping.clock.quantum if self.mapping.clock is not None else 4.0
        beats = route.grid if route.grid > 0 else -route.grid * quantum
        try:
            beat = self.clock.next_beat(now, beats)
            at = None if beat is None else self.clock.time_of(beat)
        except Exception:  # a clock that fails must not hold the change back for ever
            at = None
        if at is None:
            self.unquantised += 1
            return now, None
        # One time per boundary for the gates (asked twice, the clock may answer a few
        # microseconds apart, and a hold or rate limit would see two different times).
        at = self._beat_at.setdefault(beat, at)
        if len(self._beat_at) > 64:
            for old in sorted(self._beat_at)[:-32]:
                del self._beat_at[old]
        return max(now, at), beat

    def _later(self, at: tuple[float, float | None], now: float,
               messages: list[Message]) -> list[Message]:
        """Messages for ``at`` (see _boundary): returned now if due, else kept for
        :meth:`due`, by their beat."""
        when, beat = at
        if beat is None or when <= now:
            return messages
        for message in messages:
            self._order += 1
            heapq.heappush(self._waiting, (beat, self._order, message))
        return []

    def due(self, now: float) -> list[Message]:
        """Quantised messages whose beat has come (by the clock's time for it now; all of
        them where the clock has gone)."""
        out = []
        while self._waiting:
            when = self._time_of(self._waiting[0][0])
            if when is not None and when > now:
                break
            out.append(heapq.heappop(self._waiting)[2])
        return self.keys.filter(out)

    def next_due(self) -> float | None:
        """When the next quantised message is due (None if none waits)."""
        if not self._waiting:
            return None
        when = self._time_of(self._waiting[0][0])
        return -math.inf if when is None else when

    def _time_of(self, beat: float) -> float | None:
        try:
            return self.clock.time_of(beat)
        except Exception:
            return None

    def end_frame(self, now: float) -> list[Message]:
        """A frame's answer is complete: chord routes whose inputs changed move to their
        new chord (common notes keep sounding; the others end, the new ones start)."""
        out: list[Message] = []
        for route, state in self._each():
            if state.fade is not None and state.changed:
                state.changed = False
                out.extend(frame_prompt(route, state, now))
            if state.harmony is None or not state.changed:
                continue
            state.changed = False
            wanted = state.harmony.chord()
            if wanted is None:
                continue
            notes, velocity = wanted
            old = state.harmony.sounding
            change = [_note_off(route, n) for n in old if n not in notes]
            change += [_note_on(route, n, velocity) for n in notes if n not in old]
            out.extend(self._later(self._boundary(route, now), now, change))
            state.harmony.sounding = notes
            state.notes_on = {n: math.inf for n in notes}  # released on reload and at exit
        return self.keys.filter(out)

    def _offer(self, route: Route, state: _State, ev: Event, now: float) -> list[Message]:
        value = route_value(route, ev)
        if value is None:
            return []
        state.event = ev
        if state.gate.offer(value, now):
            return self._emit(route, state, value, now)
        return []

    @staticmethod
    def _vote(state: _State, ev: Event, now: float) -> Event | None:
        """The event whose value has settled now (``settle:``), or None."""
        label = _label(ev.value)
        state.voted[label] = ev
        winner = state.settle.offer(label, now)
        keep = set(state.settle.history) | {state.settle.current, state.settle.candidate}
        for old in [k for k in state.voted if k not in keep]:
            del state.voted[old]
        return None if winner is None else state.voted[winner]

    def tick(self, now: float) -> list[Message]:
        """Messages due at ``now``: glide steps, held-back values, note offs."""
        out: list[Message] = []
        for route, state in self._each():
            for note, off_at in list(state.notes_on.items()):
                if off_at <= now:
                    del state.notes_on[note]
                    out.append(_note_off(route, note))
            sent: list[Message] = []
            if state.fade is not None:
                if state.settle is not None and (winner := state.settle.due(now)) is not None:
                    out.extend(prompt_messages(route, state, state.fade.set(winner, now)))
                out.extend(prompt_messages(route, state, state.fade.due(now)))
                continue
            if state.settle is not None:
                winner = state.settle.due(now)
                if winner is not None:
                    sent.extend(self._offer(route, state, state.voted[winner], now))
            value = state.gate.due(now)
            if value is not None:
                sent.extend(self._emit(route, state, value, now))
            glide = state.glide
            if glide is not None and glide.value is not None:
                step = self._output(route, glide.at(now))
                if step != state.last_out:
                    state.last_out = step
                    sent.append(self._message(route, state, step, tick=True))
            if (not sent and route.heartbeat and state.last_message is not None
                    and now - state.sent_at >= route.heartbeat):
                # The last value again, for receivers that joined late (no frame: never
                # bundled, never counted as a frame's first message).
                sent.append(_unframed(state.last_message))
            out.extend(_remember(state, sent, now))
        return self.keys.filter(out)

    def busy(self, now: float) -> bool:
        """Whether :meth:`tick` has work soon (so the sender keeps its control rate)."""
        for route, state in self._each():
            if state.gate.pending is not None or any(t < math.inf for t in state.notes_on.values()):
                return True
            if state.settle is not None and state.settle.candidate is not None:
                return True
            if (route.heartbeat and state.last_message is not None
                    and now - state.sent_at >= route.heartbeat - 0.1):
                return True
            if state.glide is not None and not state.glide.settled(now, _tolerance(route)):
                return True
            if state.fade is not None and state.fade.busy(now):
                return True
        return False

    def closing(self) -> list[Message]:
        """What to send when pete-osc stops: quantised changes still waiting, sounding notes
        off, then each route's exit value."""
        out: list[Message] = [m for _, _, m in sorted(self._waiting)]
        self._waiting = []
        for route, state in self._each():
            for note in list(state.notes_on):
                out.append(_note_off(route, note))
            state.notes_on.clear()
            if state.harmony is not None:
                state.harmony.sounding = ()
            if state.fade is not None:  # fades end; the standing prompt stays
                out.extend(prompt_messages(route, state, state.fade.finish()))
        out = self.keys.filter(out) + self.keys.release_all()
        for route, state in self._each():
            if route.exit_value is not None and not state.exit_sent:
                state.exit_sent = True
                out.append(self._message(route, state, self._output(route, route.exit_value)))
        return out

    def _emit(self, route: Route, state: _State, value: float | str, now: float) -> list[Message]:
        if route.kind == "note":
            return self._note(route, state, value, now)
        if not isinstance(value, str):
            value = shape(value, route.shape)
        if state.glide is not None and isinstance(value, float):
            first = state.glide.value is None
            state.glide.retarget(value, now)
            if not first:
                return []  # the ticks carry it from here
            state.last_out = self._output(route, value)
            return [self._message(route, state, state.last_out)]
        return [self._message(route, state, self._output(route, value))]

    def _note(self, route: Route, state: _State, value: float | str, now: float) -> list[Message]:
        if route.table is not None:  # the table chose the note; velocity is fixed
            note, velocity = int(value), route.velocity or 100
        else:
            note = route.number
            velocity = route.velocity or max(1, min(127, round(shape(float(value), route.shape))))
        out: list[Message] = []
        if note in state.notes_on:  # retrigger: the old one ends first
            out.append(_note_off(route, note))
        state.notes_on[note] = now + route.length
        out.append(_note_on(route, note, velocity))
        return out

    def _output(self, route: Route, value: float | str) -> object:
        """A shaped value in the route's output units (MIDI: an int 0..127)."""
        if isinstance(value, str) or route.kind == "osc":
            if isinstance(value, float) and route.integer:
                return round(value)
            return value
        return max(0, min(127, round(value)))

    def _message(self, route: Route, state: _State, value: object, tick: bool = False) -> Message:
        ch = route.channel - 1
        if route.kind == "cc":
            return MidiMessage(route.target, mido.Message("control_change", channel=ch,
                                                          control=route.number, value=value))
        if route.kind == "program":
            return MidiMessage(route.target, mido.Message("program_change", channel=ch,
                                                          program=value))
        ev = state.event
        args = tuple(osc_field(arg, value, ev, route, state.source) for arg in route.args)
        address = route.address
        if route.per_source:
            address = address.replace("{source}", state.source)
        if tick or ev is None or ev.frame_id < 0:  # (pixel keys belong to no model frame)
            return OscMessage(route.target, address, args)
        return OscMessage(route.target, address, args, ev.frame_id, ev.captured_at)


def _remember(state: _State, sent: list[Message], now: float) -> list[Message]:
    """Keep the route's last message and when it left (for heartbeat:)."""
    if sent:
        state.last_message, state.sent_at = sent[-1], now
    return sent


def _unframed(message: Message) -> Message:
    if isinstance(message, OscMessage):
        return OscMessage(message.target, message.address, message.args)
    return message


def _note_on(route: Route, note: int, velocity: int) -> MidiMessage:
    return MidiMessage(route.target, mido.Message("note_on", channel=route.channel - 1,
                                                  note=note, velocity=velocity))


def _note_off(route: Route, note: int) -> MidiMessage:
    return MidiMessage(route.target, mido.Message("note_off", channel=route.channel - 1,
                                                  note=note, velocity=0))


def _tolerance(route: Route) -> float:
    if route.kind == "osc":
        return abs(route.shape.out_hi - route.shape.out_lo) * 1e-4 or 1e-6
    return 0.5
