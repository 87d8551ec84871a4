"""The sender: events from the live loop become messages on the wire, on one thread.

The live loop (main thread) only hands events over through a queue, so a stalled TCP peer
or a slow MIDI driver never delays the next token. The sender thread owns the router (the
mapping's state) and every output: it maps each event at once, sends it, and between
events ticks at the control rate for glides, rate-limited values and note offs.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable

from .errors import PeteError
from .events import Event, FrameEnd
from .mapping.config import MappingConfig
from .mapping.router import Message, MidiMessage, OscMessage, Router
from .outputs.midi import MidiOutput, open_midi_api
from .outputs.osc import OscOutput, build_bundle, build_message

log = logging.getLogger(__name__)

_STOP = object()
# With nothing gliding, the thread still wakes this often to look after MIDI ports.
IDLE_WAKE = 0.5


class Dispatcher:
    """Opens the mapping's outputs, sends what events map to, closes everything at the end.

    Use as a context manager, or call :meth:`start` and :meth:`close`. ``on_sent`` (called
    on the sender thread) gets each message and the time it left, for latency metrics.
    """

    def __init__(self, mapping: MappingConfig, midi_api: str | None = None,
                 on_sent: Callable[[Message, float], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.mapping = mapping
        self.router = Router(mapping)
        self.clock = clock
        self.on_sent = on_sent
        self.period = 1.0 / mapping.control_rate
        self.midi_api = None
        self.osc = {name: OscOutput(t) for name, t in mapping.osc.items()}
        self.midi: dict[str, MidiOutput] = {}
        self.lost = 0  # messages for outputs that are off
        if mapping.midi:
            try:
                self.midi_api, backend = open_midi_api(midi_api)
            except PeteError as exc:
                # No MIDI library or system here: the show goes on with OSC alone (an
                # explicit --midi-api that fails is refused instead).
                if midi_api:
                    raise
                log.warning("%s: MIDI is off, OSC goes on: %s", mapping.path, exc)
            else:
                # Ports named in the mapping must exist before anything opens (PeteError if not).
                for name, t in mapping.midi.items():
                    try:
                        self.midi[name] = MidiOutput(t, backend, self.midi_api)
                    except PeteError as exc:
                        raise PeteError(f"{mapping.path}:{t.line}: {exc}") from None
        self.events = 0
        self.sent = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._bundles: dict[tuple[int, str], list[OscMessage]] = {}
        self._thread: threading.Thread | None = None
        self._closed = False

    # ---- the live loop's side (any thread) ---------------------------------------------
    def start(self) -> "Dispatcher":
        """Open the outputs and start the sender thread."""
        for out in self.midi.values():
            out.open()
        for out in self.osc.values():
            out.open()
        self._thread = threading.Thread(target=self._run, name="pete-osc sender")
        self._thread.start()
        return self

    def event(self, event: Event) -> None:
        """Hand over one event; it is mapped and sent on the sender thread at once."""
        self._queue.put((event, self.clock()))

    def end_frame(self, frame_id: int) -> None:
        """The frame's answer is complete: send its OSC bundles (when bundling)."""
        self._queue.put((FrameEnd(frame_id), self.clock()))

    def close(self, timeout: float = 2.0) -> None:
        """Send what is queued, then notes off and exit values; close the outputs."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._queue.put((_STOP, self.clock()))
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the sender did not finish within %g s", timeout)
                return
        for out in list(self.osc.values()) + list(self.midi.values()):
            out.close()

    def __enter__(self) -> "Dispatcher":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self) -> list[str]:
        """One line per output, for the start-up messages."""
        lines = [f"OSC {t.protocol} -> {t.host}:{t.port} ({name})" for name, t in self.mapping.osc.items()]
        lines += [f"MIDI {'virtual port ' if o.target.virtual else ''}{o.full_name!r} via "
                  f"{o.api} ({name})" for name, o in self.midi.items()]
        return lines

    # ---- the sender thread -------------------------------------------------------------
    def _run(self) -> None:
        next_tick = self.clock()
        while True:
            now = self.clock()
            wait = max(0.0, next_tick - now) if self.router.busy(now) else IDLE_WAKE
            try:
                item, _queued_at = self._queue.get(timeout=wait)
            except queue.Empty:
                item = None
            now = self.clock()
            if item is _STOP:
                self._flush_bundles()
                self._send(self.router.closing() + self._all_notes_off())
                return
            try:
                if isinstance(item, Event):
                    self.events += 1
                    self._send(self.router.event(item, now))
                elif isinstance(item, FrameEnd):
                    self._flush_bundles()
                if now >= next_tick:
                    self._send(self.router.tick(now))
                    next_tick = max(next_tick + self.period, now)
                    for out in self.midi.values():
                        out.check(now)
            except Exception:  # a bug here must not silence the show: log it, carry on
                log.exception("sender: could not map or send")

    def _send(self, messages: list[Message]) -> None:
        for message in messages:
            if isinstance(message, MidiMessage):
                out = self.midi.get(message.target)
                ok = out is not None and out.send(message.data)
                self.lost += out is None
            elif self.mapping.bundle and message.frame_id is not None:
                self._bundle(message)
                continue
            else:
                ok = self.osc[message.target].send(build_message(message.address, message.args))
            if ok:
                self._sent(message)

    def _bundle(self, message: OscMessage) -> None:
        # A message of a newer frame means the older frame's answer is over.
        for frame_id, _ in list(self._bundles):
            if frame_id != message.frame_id:
                self._flush_bundles(only=frame_id)
        self._bundles.setdefault((message.frame_id, message.target), []).append(message)

    def _flush_bundles(self, only: int | None = None) -> None:
        for (frame_id, target), messages in list(self._bundles.items()):
            if only is not None and frame_id != only:
                continue
            del self._bundles[(frame_id, target)]
            delay = self.mapping.bundle_delay
            timetag = messages[0].captured_at + delay if delay and messages[0].captured_at else None
            bundle = build_bundle([build_message(m.address, m.args) for m in messages], timetag)
            if self.osc[target].send(bundle):
                for m in messages:
                    self._sent(m)

    def _sent(self, message: Message) -> None:
        self.sent += 1
        if self.on_sent is not None:
            self.on_sent(message, self.clock())

    def _all_notes_off(self) -> list[MidiMessage]:
        channels = {(r.target, r.channel) for r in self.mapping.routes if r.kind == "note"}
        return [MidiMessage(target, (0xB0 | (ch - 1), 123, 0)) for target, ch in sorted(channels)]


def open_dispatcher(mapping: MappingConfig, midi_api: str | None = None, **kw) -> Dispatcher:
    """A started dispatcher; errors opening a device are PeteErrors naming it."""
    try:
        return Dispatcher(mapping, midi_api, **kw).start()
    except PeteError:
        raise
    except OSError as exc:
        raise PeteError(f"{mapping.path}: cannot open an output: {exc}") from None
