"""The sender: events from the show become messages on the wire, on one thread.

The show (main thread) only hands events over through a queue, so a stalled TCP peer or
a slow MIDI driver never delays the next token. The sender thread owns the router (the
mapping's state) and every output: it maps each event at once, sends it, and between
events ticks at the control rate for glides, rate-limited values and note offs. A
reloaded mapping is swapped in on the same thread, between two messages.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable

import mido

from ..errors import PeteError
from ..mapping.config import MappingConfig
from ..mapping.learn import Learning, describe_message, describe_route
from ..mapping.router import Router
from ..records import Event, FrameEnd, Message, MidiMessage
from .base import BaseOutput
from .midi import open_midi_api
from .pace import paces_for
from .targets import outputs_for

log = logging.getLogger(__name__)

_STOP = object()
# With nothing gliding, the thread still wakes this often to look after MIDI ports.
IDLE_WAKE = 0.5
# A quantised change's wake-up comes this early; the rest is waited out on the clock.
EARLY = 0.003


class _Reload:
    def __init__(self, mapping: MappingConfig, outputs: dict, closing: list):
        self.mapping, self.outputs, self.closing = mapping, outputs, closing


class Sender:
    """Opens the mapping's outputs, sends what events map to, closes everything at the end.

    Use as a context manager, or call :meth:`start` and :meth:`close`. The time each
    frame's first message left is kept for the metrics (:meth:`first_sent`).
    """

    def __init__(self, mapping: MappingConfig, midi_api: str | None = None,
                 clock: Callable[[], float] = time.monotonic, state=None, play="default"):
        self.mapping = mapping
        self.play = play  # where synth: targets sound (a device, or a .wav file)
        self.clock = clock
        self.period = 1.0 / mapping.control_rate
        self.midi_api: str | None = None
        self._midi_wanted = midi_api
        self._backend = None
        self._midi_off = False  # no MIDI system here: said once, OSC goes on
        self._midi_off_reason = ""
        self.notes: list[str] = []  # what was said at start (for the monitor page's log)
        self.outputs: dict[str, BaseOutput] = {}
        self.outputs, _ = self._outputs_for(mapping)
        self.beat = self._open_clock(mapping)  # the beat of quantised routes, or None
        self.router = Router(mapping, state, self.beat)  # state: the DAW's, for when:
        self._paces = paces_for(mapping)
        self._coalesced_before = 0  # by paces a reload replaced
        self.events = 0
        self.sent = 0
        self.unrouted = 0  # messages for a MIDI target while MIDI is off
        self._first_sent: dict[int, float] = {}
        # target -> [messages sent, the last one in words, when (time.time())]
        self._activity: dict[str, list] = {}
        self._learning: Learning | None = None  # a route alone (see learn)
        self._learnt = threading.Event()  # set while no learning is queued or sounding
        self._learnt.set()
        self.muted = 0  # events not sent while a route was being learnt
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False

    def summary(self) -> str:
        """How many messages left (lost, merged), for the closing line."""
        lost = f", {self.lost} for outputs that are off" * bool(self.lost)
        merged = f", {self.coalesced} merged into newer values over a target's max_rate" * bool(self.coalesced)
        return f"{self.sent} messages sent{lost}{merged}"

    @property
    def coalesced(self) -> int:
        """Messages over a target's max_rate replaced by a newer one for the same control."""
        return self._coalesced_before + sum(p.coalesced for p in self._paces.values())

    @property
    def lost(self) -> int:
        """Messages for outputs that are off (a dead host, a missing port, no MIDI)."""
        return self.unrouted + sum(o.lost for o in self.outputs.values())

    # ---- outputs -----------------------------------------------------------------------
    def _outputs_for(self, mapping: MappingConfig) -> tuple[dict[str, BaseOutput], list]:
        """The outputs ``mapping`` names (see targets.outputs_for)."""
        return outputs_for(self, mapping)

    def _open_clock(self, mapping: MappingConfig):
        from ..inputs.clock import open_clock

        def midi():
            backend = self._midi_backend(mapping)
            if backend is None:
                raise PeteError("MIDI is off here, so there is no MIDI clock input")
            return self.midi_api, backend

        try:
            return open_clock(mapping.clock, midi)
        except PeteError as exc:
            raise PeteError(f"{mapping.path}:{mapping.clock.line}: {exc}") from None

    def _midi_backend(self, mapping: MappingConfig):
        if self._backend is None and not self._midi_off:
            try:
                self.midi_api, self._backend = open_midi_api(self._midi_wanted)
            except PeteError as exc:
                # No MIDI library or system here: the show goes on with OSC alone (an
                # explicit --midi-api that fails is refused instead).
                if self._midi_wanted:
                    raise
                self._midi_off = True
                self._midi_off_reason = str(exc)
                note = f"{mapping.path}: MIDI is off, OSC goes on: {exc}"
                self.notes.append(note)
                log.warning("%s", note)
        return self._backend

    # ---- the show's side (any thread) --------------------------------------------------
    def start(self) -> "Sender":
        """Open the outputs and start the sender thread."""
        for out in self.outputs.values():
            out.open(quiet=True)  # a target that is down is said in describe()'s line
        self._thread = threading.Thread(target=self._run, name="pete-osc sender")
        self._thread.start()
        return self

    def event(self, event: Event) -> None:
        """Hand over one event; it is mapped and sent on the sender thread at once."""
        self._queue.put(event)

    def end_frame(self, frame_id: int) -> None:
        """The frame's answer is complete: outputs that bundle per frame send now."""
        self._queue.put(FrameEnd(frame_id))

    def reload(self, mapping: MappingConfig) -> list[str]:
        """Swap in an edited mapping between two messages: unchanged outputs (and MIDI
        ports) stay open, new ones open now, removed ones close; routes that did not change
        keep their state; the notes of removed routes are released. A target that cannot
        be found raises PeteError here, and the running mapping stays. Returns what
        changed, in words."""
        outputs, gone = self._outputs_for(mapping)
        opened = [out for name, out in outputs.items() if self.outputs.get(name) is not out]
        for out in opened:
            out.open()
        self._queue.put(_Reload(mapping, outputs, gone))
        return ([f"opened {out.label}" for out in opened]
                + [f"closed {out.label}" for out in gone])

    def learn(self, route: int, seconds: float = 2.0) -> str:
        """Send route number ``route`` (0-based) alone, as a sweep over its values (see
        :func:`~pete_osc.mapping.learn.learn_events`), while the show's events are not sent; for a DAW's MIDI or
        OSC learn. Returns the route in words (IndexError: no such route)."""
        if not 0 <= route < len(self.mapping.routes):
            raise IndexError(route)
        chosen = self.mapping.routes[route]
        off = self.off_reason(chosen.target)
        if off is not None:
            raise PeteError(f"route {route + 1} ({describe_route(chosen)}) cannot be sent: {off}")
        self._learnt.clear()
        self._queue.put(Learning(self.mapping, route, seconds))
        return describe_route(chosen)

    def learnt(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until the route :meth:`learn` sends has been swept
        and closed, its notes released: True if it has."""
        return self._learnt.wait(timeout)

    def routes(self) -> list[dict]:
        """The mapping's routes, numbered as :meth:`learn` takes them: each in words, and
        why it cannot be sent where its output is off (MIDI off here), else None."""
        return [{"name": describe_route(r), "off": self.off_reason(r.target)}
                for r in self.mapping.routes]

    def activity(self) -> dict[str, tuple[int, str, float]]:
        """Per target: messages sent, the last one in words, when it left (Unix time); a
        target whose output is off, with 0 and why."""
        with self._lock:
            seen = {name: tuple(a) for name, a in self._activity.items()}
        for name in self.mapping.midi:
            if name not in seen and self.off_reason(name):
                seen[name] = (0, f"off: {self.off_reason(name)}", 0.0)
        return seen

    def off_reason(self, target: str) -> str | None:
        """Why nothing can leave for ``target`` (MIDI is off here), or None."""
        if target in self.mapping.midi and target not in self.outputs:
            return f"MIDI is off here ({self._midi_off_reason})" if self._midi_off else "its port is not open"
        return None

    def first_sent(self, frame_id: int) -> float | None:
        """When (Unix time) the first message caused by frame ``frame_id`` left."""
        with self._lock:
            return self._first_sent.get(frame_id)

    def close(self, timeout: float = 2.0) -> None:
        """Send what is queued, then notes off and exit values; close the outputs."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the sender did not finish within %g s", timeout)
                return
        for out in self.outputs.values():
            self._sent(out.close())
        if self.beat is not None:
            self.beat.close()

    __enter__ = start

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self) -> list[str]:
        """One line per output, for the start-up messages."""
        lines = []
        for out in self.outputs.values():
            line = out.describe()
            if out.down:
                line += (f", but it cannot be reached: {out.down}; its messages are dropped "
                         f"until it can (tried again every {out.retry_interval:g} s)")
            lines.append(line)
        return lines

    # ---- the sender thread -------------------------------------------------------------
    def _run(self) -> None:
        next_tick = self.clock()
        while True:
            now = self.clock()
            busy = self.router.busy(now) or (
                self._learning is not None and self._learning.busy(now)) or any(
                p.waiting for p in self._paces.values())
            wait = max(0.0, next_tick - now) if busy else IDLE_WAKE
            due = self.router.next_due()
            if due is not None:  # a quantised change waits for its beat: wake right then
                wait = min(wait, max(0.0, due - now - EARLY))
            try:
                item = self._queue.get(timeout=wait)
            except queue.Empty:
                item = None
            now = self.clock()
            if item is _STOP:
                # What waits for its turn goes now, then the closing messages, unpaced.
                for name, pace in self._paces.items():
                    self._deliver(name, pace.drain())
                self._coalesced_before = self.coalesced
                self._paces = {}
                self._send(self._end_learning() + self.router.closing() + self._all_notes_off())
                self._learnt.set()
                return
            try:
                self._send(self._due())
                if isinstance(item, Event):
                    self.events += 1
                    if self._learning is None:
                        self._send(self.router.event(item, now))
                    else:
                        self.muted += 1
                elif isinstance(item, Learning):
                    self._learning = item.start(now)
                elif isinstance(item, FrameEnd):
                    if self._learning is None:
                        self._send(self.router.end_frame(now))
                    for out in self.outputs.values():
                        self._sent(out.end_frame(item.frame_id))
                elif isinstance(item, _Reload):
                    self._swap(item)
                if now >= next_tick:
                    if self._learning is not None:
                        self._send(self._learning.step(now))
                        if self._learning.done:
                            self._learning = None
                            self._learnt.set()
                    self._send(self.router.tick(now))
                    for name, pace in self._paces.items():
                        self._deliver(name, pace.due(now))
                    next_tick = max(next_tick + self.period, now)
                    for out in self.outputs.values():
                        out.tick(now)
            except Exception:  # a bug here must not silence the show: log it, carry on
                log.exception("sender: could not map or send")

    def _due(self) -> list[Message]:
        """Quantised messages due now; one a little ahead is waited for here, by the
        clock, rather than by a timed wake-up (which can come milliseconds late)."""
        due = self.router.next_due()
        if due is None:
            return []
        while True:
            now = self.clock()
            if now >= due or due - now > EARLY:
                break
            time.sleep(0)  # (lets other threads run while spinning for under EARLY)
        # Changes for the same boundary may differ by microseconds: one boundary, one send.
        return self.router.due(now + 0.0005)

    def _end_learning(self) -> list[Message]:
        """A route being learnt, stopped mid-sweep (the show stopping, its mapping
        replaced): its closing messages, every note it sounds released."""
        learning, self._learning = self._learning, None
        return learning.stop() if learning is not None else []

    def _swap(self, reload: _Reload) -> None:
        if self._learning is not None:  # its route is the old mapping's: it ends here
            self._send(self._end_learning())
            self._learnt.set()
        if reload.mapping.clock != self.mapping.clock:
            if self.beat is not None:
                self.beat.close()
            self.beat = self.router.clock = self._open_clock(reload.mapping)
        waiting = {name: pace.drain() for name, pace in self._paces.items()}
        self._coalesced_before += sum(p.coalesced for p in self._paces.values())
        self._paces = paces_for(reload.mapping)
        for messages in waiting.values():
            self._send(messages)
        self.router, released = self.router.reloaded(reload.mapping)
        self._send(released)  # through the outputs they were sounding on
        for out in self.outputs.values():
            if out in reload.outputs.values():
                self._sent(out.configure(reload.mapping))
        for out in reload.closing:
            self._sent(out.close())
        self.outputs = reload.outputs
        self.mapping = reload.mapping
        self.period = 1.0 / reload.mapping.control_rate

    def _send(self, messages: list[Message]) -> None:
        now = None
        for message in messages:
            pace = self._paces.get(message.target)
            if pace is None:
                self._deliver(message.target, [message])
                continue
            now = self.clock() if now is None else now
            self._deliver(message.target, pace.offer(message, now))

    def _deliver(self, target: str, messages: list[Message]) -> None:
        out = self.outputs.get(target)
        for message in messages:
            if out is None:
                self.unrouted += 1
                continue
            self._sent(out.send(message))

    def _sent(self, messages: list[Message]) -> None:
        if not messages:
            return
        self.sent += len(messages)
        at = time.time()
        with self._lock:
            for message in messages:
                frame_id = getattr(message, "frame_id", None)
                if frame_id is not None:
                    self._first_sent.setdefault(frame_id, at)
                seen = self._activity.setdefault(message.target, [0, "", 0.0])
                seen[0] += 1
                seen[1], seen[2] = describe_message(message), at
            if len(self._first_sent) > 256:  # keep the recent frames only
                for old in sorted(self._first_sent)[:-128]:
                    del self._first_sent[old]

    def _all_notes_off(self) -> list[MidiMessage]:
        channels = {(r.target, r.channel) for r in self.mapping.routes if r.kind in ("note", "chord")}
        return [MidiMessage(target, mido.Message("control_change", channel=ch - 1, control=123, value=0))
                for target, ch in sorted(channels)]


def open_sender(mapping: MappingConfig, midi_api: str | None = None, **kw) -> "Sender":
    """A started sender; errors opening a device are PeteErrors naming it."""
    try:
        return Sender(mapping, midi_api, **kw).start()
    except PeteError:
        raise
    except OSError as exc:
        raise PeteError(f"{mapping.path}: cannot open an output: {exc}") from None
