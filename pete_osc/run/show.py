"""The show: one object that owns a live run.

It owns the sources (:class:`~pete_osc.capture.feeds.Feeds`), the engine, the sender (the mapping
and its outputs), the files it runs on, the watchdog and the stop. The data walks one
way, one frame at a time::

    frames -> engine -> tokens -> parser -> events -> mapping -> outputs

and every record on the way (FrameStart, Text, Event, Rejection, FrameReport, Notice) is
also given to the taps that watch the show (the token echo, --json, --metrics, --record,
the status line), which can never stop it. Between two frames is the frame boundary:
there, saved edits of DIRECTOR.md and the mapping are applied (see :mod:`pete_osc.run.reload`)
and the notices of the capture threads (a source lost, back or ended) reach the taps.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, replace
from typing import Callable

from ..capture.feeds import Feeds
from ..director.prompt import Answers, render
from ..engines import EngineOptions, Prompt
from ..engines.setup import constrain_again, load_engine, prepare
from ..errors import PeteError
from ..inputs.daw import open_input, where_to_listen
from ..records import Event, FrameReport, Notice, Sent, Text
from .batched import Batched, open_batch
from .frame import frame_records
from .reload import Files, Watch
from .stopping import StopGuard, signals_held
from .summary import Failures, Summary
from .taps import Tap, Taps
from .watchdog import Watchdog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShowConfig:
    """A run's settings, from the command line (``pete-osc run --help`` says each)."""

    size: int = 128
    # Tokens per answer; None: the longest complete answer the grammar allows where
    # decoding is constrained, else engines.setup.UNCONSTRAINED_TOKENS.
    max_tokens: int | None = None
    temperature: float = 0.0
    fps: float = 2.0
    every_frame: bool = False
    loop: bool = False
    max_frames: int = 0  # 0: no limit
    constrain: str = "auto"  # auto | on | off
    warm_up: bool = True
    reload: bool = True
    stall: float = 10.0  # seconds a frame may go without a token (0: no limit)
    frame_limit: float = 60.0  # seconds a frame may take in all (0: no limit)
    midi_api: str | None = None
    # The OSC input for the DAW and /pete/context values; None: the mapping's listen:
    # (see inputs.daw.where_to_listen), else none (or 11001 where AbletonOSC is asked).
    context_port: int | None = None
    context_host: str | None = None  # None: the mapping's, else 127.0.0.1
    ableton: str | None = None  # AbletonOSC's HOST:PORT, asked to report its state
    batch: bool = True  # several sources' frames decoded together where the engine can
    play: str | None = None  # --play: where the synth: targets sound (a device or a .wav)

    @classmethod
    def from_args(cls, args, size: int) -> "ShowConfig":
        return cls(size=size, max_tokens=args.max_tokens, temperature=args.temperature,
                   fps=args.fps, every_frame=args.every_frame, loop=args.loop,
                   max_frames=args.max_frames, constrain=args.constrain,
                   warm_up=not args.no_warmup, reload=not args.no_reload,
                   stall=args.stall, frame_limit=args.frame_limit, midi_api=args.midi_api,
                   context_port=args.context_port, context_host=args.context_host,
                   ableton=args.ableton, batch=not getattr(args, "no_batch", False),
                   play=getattr(args, "play", None))


class Show:
    """A live run; see the module docstring. ``open`` the outputs and sources, ``load``
    the engine, ``run``, then ``close`` (also a context manager)."""

    def __init__(self, config: ShowConfig, files: Files, sources: list,
                 say: Callable[[str], None] = lambda message: None):
        self.config = config
        self.files = files
        self.say = say
        self.stop = threading.Event()
        self.summary = Summary()
        self.taps = Taps()
        self.engine = None
        self.sender = None
        self._sources = sources  # (name, open Source), handed to the feeds at open
        self.feeds: Feeds | None = None
        self._notices: queue.SimpleQueue = queue.SimpleQueue()
        self._pixels: dict = {}  # source -> PixelKeys, rebuilt when DIRECTOR.md changes
        self.answers = Answers(files.director.previous)  # for {previous}
        self.daw: dict[str, object] = {}  # {daw.NAME}: the DAW's state (see daw.py)
        self.context: dict[str, object] = {}  # {context.NAME}: /pete/context/NAME values
        self.input = None  # the DawInput, with --context-port
        mapping = files.mapping
        self.watch = Watch(files.director.path, mapping.path if mapping else None, config.reload)
        self.prompt = Prompt.of(files.director)
        self._ahead_s = 0.0  # seconds spent prefilling the next frame's context ahead
        self._ahead_failed = False
        self.failures = Failures()  # failed frames said once, their return once
        self.batched = False  # whether this run's sources were answered together

    # ---- set-up ------------------------------------------------------------------------
    def open(self) -> "Show":
        """Open the mapping's outputs (a missing MIDI port is an error now, before the
        model loads) and start reading the sources."""
        try:
            listen = where_to_listen(self.config, self.files.mapping)
            if listen is not None:
                self.input = open_input(*listen, say=self.say)
                self.daw, self.context = self.input.daw, self.input.context
            if self.files.mapping is not None:
                from collections import ChainMap

                from ..outputs.sender import open_sender

                self.sender = open_sender(self.files.mapping, self.config.midi_api,
                                          state=ChainMap(self.daw, self.context),
                                          play=self.config.play or "default")
                for line in self.sender.describe():
                    self.say(f"sending {line}")
                names = {name for name, _ in self._sources}
                for route in self.files.mapping.routes:
                    if route.source and route.source not in names:
                        log.warning("%s:%d: source %r is not one of this run's sources (%s)",
                                    self.files.mapping.path, route.line, route.source,
                                    ", ".join(sorted(names)))
        except BaseException:
            self._close_sources()
            raise
        return self

    def load(self, engine: str, model: str | None, options: EngineOptions) -> None:
        """Load the engine, constrain it to DIRECTOR.md's grammar, warm it up."""
        c = self.config
        self.attach(load_engine(engine, model, self.prompt, options, size=c.size,
                                temperature=c.temperature, max_tokens=c.max_tokens,
                                stall=c.stall))

    def attach(self, engine) -> None:
        """Use an engine already open (``load`` opens one): constrain it, warm it up."""
        self.engine = engine
        c = self.config
        prepare(engine, self.prompt, self.files.director, size=c.size, constrain=c.constrain,
                max_tokens=c.max_tokens, warm_up=c.warm_up, say=self.say)

    def subscribe(self, *taps: Tap | None) -> None:
        """Taps that watch the show's records (None is skipped)."""
        self.taps.taps.extend(t for t in taps if t is not None)

    # ---- the run -----------------------------------------------------------------------
    def run(self) -> Summary:
        """Frames until the sources end, ``max_frames``, or the stop (Ctrl-C)."""
        c = self.config
        self.feeds = Feeds(self._sources, c.every_frame, c.loop, c.fps, self._notice,
                           self._measure)
        self._sources = []
        self.say(f"running on {', '.join(self._describe_sources())}; Ctrl-C to stop")
        dog = Watchdog(c.stall, c.frame_limit, self.engine)
        batch = open_batch(self)
        self.batched = batch is not None
        with StopGuard(self.stop, on_force=self._forced_end), self.watch, dog:
            if batch is not None:
                Batched(self, batch).run()
                return self.summary
            while not self.stop.is_set():
                self._boundary()
                self._ahead()
                frame = self.feeds.next(self.stop, timeout=0.25)
                if frame is None:
                    if self.feeds.ended:
                        self._boundary()
                        break
                    continue
                report = self._frame(frame, dog)
                if report.stopped or (c.max_frames and self.summary.frames >= c.max_frames):
                    break
                if self.engine.ended is not None:  # a recording played to its end
                    self._said("ended", f"{self.engine.name} {self.engine.model_id}: "
                                        f"{self.engine.ended}")
                    break
        return self.summary

    def _describe_sources(self) -> list[str]:
        return [f.name if f.name == f.source.name else f"{f.name} ({f.source.name})"
                for f in self.feeds.feeds]

    def _frame(self, frame, dog: "Watchdog") -> FrameReport:
        self.summary.begin()
        dog.begin(frame.id, frame.source)
        stop = self.stop
        cancel = lambda: "stop" if stop.is_set() else dog.tripped  # noqa: E731
        report = None
        director = self.files.director
        prompt = self._prompt_for(director, frame.source)
        said: list[Event] = []
        try:
            for record in frame_records(self.engine, director, frame, self.config.size,
                                        prompt, cancel, lambda: self._settle(frame, prompt)):
                if isinstance(record, Text):
                    dog.token()
                if isinstance(record, FrameReport):
                    report = record
                else:
                    self._pass(record, said)
        finally:
            dog.end()
        self._ended(frame, said, report)
        return report

    def _pass(self, record, said: list[Event]) -> None:
        """A frame's record on its way: an event to the sender, every record to the taps;
        at each token, what the capture threads noticed meanwhile."""
        if isinstance(record, Text):
            self._drain()
        elif isinstance(record, Event):
            said.append(record)
            if self.sender is not None:
                self.sender.event(record)
        self.taps.take(record)

    def _settle(self, frame, prompt: Prompt) -> dict:
        """The answer is over: the sender's part, the drops, the prompt as sent."""
        out = dict(dropped=self.feeds.dropped, skipped=self.feeds.skipped)
        if self.sender is not None:
            self.sender.end_frame(frame.id)
            out["sent"] = Sent(self.sender.first_sent(frame.id), self.sender.coalesced)
        if self.files.director.placeholders:
            out.update(instruction=prompt.instruction, context=prompt.context,
                       ahead_s=self._ahead_s)
            self._ahead_s = 0.0
        return out

    def _ended(self, frame, said: list[Event], report: FrameReport) -> None:
        self.answers.add(frame.source, said)
        self.failures.add(report)
        self.summary.add(report)
        self.taps.take(report)

    def _prompt_for(self, director, source: str) -> Prompt:
        """The prompt of ``source``'s next frame: {previous}, {daw.*} and {context.*}
        filled in with what is known now."""
        if not director.placeholders:
            return self.prompt
        earlier = self.answers.of(source)
        return Prompt(self.prompt.system,
                      render(director.instruction, earlier, self.daw, self.context),
                      render(director.context, earlier, self.daw, self.context))

    def _ahead(self) -> None:
        """Before the next frame is taken: its prompt made current, so the context (the
        text before the image, where {previous} goes) is prefilled now and the frame runs
        only the image and the instruction. The newest frame is taken after this, so the
        time spent here is not between a frame and its music. The source whose turn is
        next is assumed; a frame from another one prefills its own context."""
        director = self.files.director
        if self.engine is None or not director.context or self.feeds is None:
            return
        try:
            self._ahead_s += self.engine.use_prompt(self._prompt_for(director, self.feeds.upcoming))
        except Exception as exc:  # the frame will try again, and report what fails
            if not self._ahead_failed:
                log.warning("the next frame's context could not be prefilled ahead (%s: %s); "
                            "each frame prefills its own", type(exc).__name__, exc)
            self._ahead_failed = True

    def _boundary(self) -> None:
        """Between two frames: what the capture threads noticed, and saved edits."""
        self._drain()
        if self.watch.due():
            self._reload()

    def _drain(self) -> None:
        """The capture threads' records (notices, pixel keys' events) to the taps."""
        while True:
            try:
                self.taps.take(self._notices.get_nowait())
            except queue.Empty:
                return

    def _measure(self, source: str, image, captured_at: float) -> None:
        # On the capture thread, for every captured image: the pixel keys' events go to
        # the sender at once (camera rate) and to the taps at the next token or boundary.
        director = self.files.director
        if not director.pixel_keys:
            return
        keys = self._pixels.get(source)
        if keys is None or keys.director is not director:
            from ..capture.pixels import PixelKeys

            keys = self._pixels[source] = PixelKeys(director, source)
        for event in keys.events(image, captured_at):
            if self.sender is not None:
                self.sender.event(event)
            self._notices.put(event)

    def _notice(self, source: str, what: str, text: str) -> None:
        # On the capture thread that noticed it: said at once, the taps hear of it at
        # the next frame boundary.
        self.say(text)
        self._notices.put(Notice(what, text, source))

    def _reload(self) -> None:
        old = self.files
        director_path = old.director.path
        mapping_path = old.mapping.path if old.mapping is not None else None
        try:
            new = Files.read(director_path, mapping_path)
        except PeteError as exc:
            return self._refused(exc)
        director_changed = new.director_text != old.director_text
        mapping_changed = director_changed or new.mapping_text != old.mapping_text
        if not director_changed and not mapping_changed:
            return None
        changes = []
        if mapping_changed and self.sender is not None:
            try:
                changes = self.sender.reload(new.mapping)
            except PeteError as exc:
                return self._refused(exc)
        if director_changed:
            self.answers.resize(new.director.previous)
            self.prompt = Prompt.of(new.director)
            took = self.engine.use_prompt(self._prompt_for(
                new.director, self.feeds.upcoming if self.feeds is not None else ""))
            constrain_again(self.engine, new.director, constrain=self.config.constrain,
                            max_tokens=self.config.max_tokens, say=self.say)
            self._said("reloaded", f"{director_path} reloaded: the new prompt was prefilled in "
                                   f"{took * 1000:.0f} ms" + (", the grammar rebuilt" if
                                                              self.engine.constraint else ""))
        if mapping_changed and new.mapping is not None and new.mapping_text != old.mapping_text:
            self._said("reloaded", f"{mapping_path} reloaded: {len(new.mapping.routes)} routes"
                                   + "".join(f"; {c}" for c in changes))
            listen = lambda m: replace(m.listen, line=0) if m and m.listen else None  # noqa: E731
            if listen(new.mapping) != listen(old.mapping):
                log.warning("%s: a changed listen: takes effect at the next start; the OSC "
                            "input stays as it was", mapping_path)
        self.files = new
        return None

    def _refused(self, exc: PeteError) -> None:
        self._said("refused", f"error: {exc}; the previous version keeps running")

    def _said(self, what: str, text: str) -> None:
        self.say(text)
        self.taps.take(Notice(what, text))

    # ---- the end -----------------------------------------------------------------------
    def sent(self) -> int:
        return self.sender.sent if self.sender is not None else 0

    def sent_line(self) -> str:
        return self.sender.summary()

    def _forced_end(self) -> None:
        # The stop guard ends the process while the engine is busy: keep what is done.
        self._close_sources(timeout=0.2)
        if self.input is not None:
            self.input.close()
        if self.sender is not None:
            self.sender.close(timeout=0.3)
        self.taps.close()
        self.say(f"stopped (did not wait for the engine). {self.summary.line()}")

    def _close_sources(self, timeout: float = 5.0) -> None:
        if self.feeds is not None:
            self.feeds.close(timeout)
        for _, source in self._sources:
            source.close()
        self._sources = []

    def close(self) -> None:
        """Release the sources, send the exit values, close the outputs, taps and engine.
        A signal meanwhile does not cut it short (see stopping.signals_held)."""
        with signals_held(self.stop):
            try:
                self._close_sources(timeout=1.0)
                self.taps.close()
                if self.input is not None:
                    self.input.close()
            finally:
                if self.sender is not None:
                    self.sender.close()
                if self.engine is not None:
                    self.engine.close()

    def __enter__(self) -> "Show":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()
