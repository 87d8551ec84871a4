"""Lyria RealTime as an output (``lyria:`` in a mapping; ``pip install 'pete-osc[lyria]'``):
Google's live music model steered by the picture, its music played through the built-in
audio output (the synth's child process, pete_osc.outputs.player).

Routes send it what they send an OSC target: a ``prompt:`` route's slot changes
(``/prompt SLOT TEXT WEIGHT``, ``/prompt SLOT``) and ``/config/FIELD VALUE``
(LYRIA_CONFIG: bpm, density, brightness, scale, ...). :class:`Steering` (pure, time
passed in) keeps the latest of each and says what to send, at most every
``min_interval`` seconds (a frame's config values together, once its answer is over): the weighted prompts when they changed, the
musicGenerationConfig when it changed, and RESET_CONTEXT after a bpm or scale change
(Lyria applies those only after a reset). The session (:class:`_Session`, a thread with
its own asyncio loop, owned and stopped by the output) talks to the service through
google-genai's ``client.aio.live.music``: it sends, receives the audio (16-bit PCM,
48 kHz stereo) and hands it to the player; a lost connection is said once, tried again
every 2 s, and on its return the prompts, the config and PLAY go again.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time

from ..errors import PeteError
from ..mapping.config import LYRIA_CONFIG, LyriaTarget
from ..records import OscMessage
from .base import BaseOutput

log = logging.getLogger("pete_osc.outputs")

KEY_VARIABLES = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
RETRY = 2.0  # seconds between two tries to reach the service again
CONNECT_TIMEOUT = 10.0  # at start
SCALES = ("C_MAJOR_A_MINOR", "D_FLAT_MAJOR_B_FLAT_MINOR", "D_MAJOR_B_MINOR",
          "E_FLAT_MAJOR_C_MINOR", "E_MAJOR_D_FLAT_MINOR", "F_MAJOR_D_MINOR",
          "G_FLAT_MAJOR_E_FLAT_MINOR", "G_MAJOR_E_MINOR", "A_FLAT_MAJOR_F_MINOR",
          "A_MAJOR_G_FLAT_MINOR", "B_FLAT_MAJOR_G_MINOR", "B_MAJOR_A_FLAT_MINOR")
RESETS = ("bpm", "scale")  # changes Lyria applies only after RESET_CONTEXT


def api_key() -> str | None:
    return next((os.environ[v] for v in KEY_VARIABLES if os.environ.get(v)), None)


def missing() -> str | None:
    """Why a lyria: target cannot start here (for the start-up line), or None."""
    try:
        import google.genai  # noqa: F401
    except ImportError:
        return "Lyria RealTime needs the google-genai client: pip install 'pete-osc[lyria]'"
    if api_key() is None:
        return ("Lyria RealTime needs an API key in the environment: export "
                "GEMINI_API_KEY=... (never in a file in the clone)")
    return None


def config_value(field: str, value) -> object:
    """A /config/FIELD value as Lyria's musicGenerationConfig takes it."""
    if field == "scale":
        if isinstance(value, str):
            return value.upper()
        return SCALES[int(round(value)) % 12]
    if field in ("mute_bass", "mute_drums", "only_bass_and_drums"):
        return bool(value)
    if field in ("bpm", "top_k", "seed"):
        return int(round(value))
    lo, hi = LYRIA_CONFIG[field]
    return round(min(hi, max(lo, float(value))), 3)


class Steering:
    """What the session should send (see the module docstring). ``take`` a route's
    message; ``due(now)`` gives the actions to send now: ``("prompts", [(text,
    weight), ...])``, ``("config", {field: value})``, ``("reset",)``."""

    def __init__(self, min_interval: float = 2.0):
        self.min_interval = min_interval
        self.slots: dict[int, tuple[str, float]] = {}
        self.config: dict[str, object] = {}
        self.sent_prompts: list | None = None
        self.sent_config: dict[str, object] = {}
        self.last = -math.inf
        self.settled = True  # no frame's config half taken

    def take(self, address: str, args: tuple) -> None:
        if address.startswith("/config/"):
            field = address[len("/config/"):]
            if field in LYRIA_CONFIG and args:
                self.config[field] = config_value(field, args[0])
                self.settled = False  # (a frame's answer is coming in: wait for its end)
        elif args:  # a prompt route's slot: (slot, text, weight) or (slot,) to clear
            if len(args) >= 3:
                self.slots[int(args[0])] = (str(args[1]), float(args[2]))
            else:
                self.slots.pop(int(args[0]), None)

    @property
    def prompts(self) -> list[tuple[str, float]]:
        return [(t, w) for _, (t, w) in sorted(self.slots.items()) if w > 0]

    def frame_end(self) -> None:
        """A frame's answer is complete: its config values go together."""
        self.settled = True

    def due(self, now: float) -> list[tuple]:
        if now - self.last < self.min_interval:
            return []
        out: list[tuple] = []
        prompts = self.prompts
        if prompts and prompts != self.sent_prompts:
            out.append(("prompts", prompts))
            self.sent_prompts = prompts
        if self.config != self.sent_config and self.settled:
            reset = any(f in self.sent_config and self.config.get(f) != self.sent_config[f]
                        for f in RESETS)
            out.append(("config", dict(self.config)))
            if reset:
                out.append(("reset",))
            self.sent_config = dict(self.config)
        if out:
            self.last = now
        return out

    def again(self) -> list[tuple]:
        """Everything, as to a new session (after a reconnection)."""
        out: list[tuple] = [("prompts", self.sent_prompts)] if self.sent_prompts else []
        return out + ([("config", dict(self.sent_config))] if self.sent_config else [])


class _Session(threading.Thread):
    """The connection to Lyria RealTime, on its own asyncio loop (see the module
    docstring). ``put(actions)`` from any thread; ``stop()`` ends it."""

    def __init__(self, target: LyriaTarget, audio, steering: Steering):
        super().__init__(name=f"pete-osc lyria {target.name}", daemon=True)
        self.target, self.audio, self.steering = target, audio, steering
        self.connected = threading.Event()
        self.error: str | None = None  # the last failure, in words
        self._ended = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue | None = None
        self.chunks = 0  # audio chunks received
        self.playing = False  # PLAY sent in this session

    def put(self, actions: list[tuple]) -> None:
        loop, queue = self._loop, self._queue
        if loop is not None and queue is not None and actions:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, actions)
            except RuntimeError:  # (its loop has ended: the session is over)
                pass

    def stop(self) -> None:
        self._ended.set()
        self.put([("stop",)])
        self.join(5.0)

    def run(self) -> None:
        import warnings

        warnings.filterwarnings("ignore", message="Realtime music generation is experimental")
        asyncio.run(self._main())

    async def _main(self) -> None:
        from google import genai

        self._loop, self._queue = asyncio.get_running_loop(), asyncio.Queue()
        options = {"api_version": "v1alpha"}
        if self.target.url:
            options["base_url"] = self.target.url
        client = genai.Client(api_key=api_key(), http_options=options)
        down_since = None
        while not self._ended.is_set():
            try:
                async with client.aio.live.music.connect(model=self.target.model) as session:
                    if down_since is not None:
                        log.warning("lyria %s is back after %.0f s; its prompts go again",
                                    self.target.name, time.monotonic() - down_since)
                        down_since = None
                    self.connected.set()
                    self.playing = False
                    await self._send(session, self.steering.again())
                    await self._serve(session)
            except Exception as exc:
                if self._ended.is_set():
                    break
                self.error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                if down_since is None and self.connected.is_set():
                    log.warning("lyria %s: the connection was lost (%s); trying again every "
                                "%g s, the show goes on", self.target.name, self.error, RETRY)
                down_since = down_since or time.monotonic()
                self.connected.clear()
                try:
                    await asyncio.wait_for(self._queue.get(), RETRY)  # (a stop wakes it)
                except asyncio.TimeoutError:
                    pass

    async def _serve(self, session) -> None:
        receiving = asyncio.ensure_future(self._receive(session))
        try:
            while True:
                getting = asyncio.ensure_future(self._queue.get())
                done, _ = await asyncio.wait({getting, receiving},
                                             return_when=asyncio.FIRST_COMPLETED)
                if receiving in done:
                    getting.cancel()
                    receiving.result()  # (raises what ended it)
                    raise ConnectionError("the service closed the session")
                actions = getting.result()
                if ("stop",) in actions:
                    await session.stop()
                    return
                await self._send(session, actions)
        finally:
            receiving.cancel()

    async def _send(self, session, actions: list[tuple]) -> None:
        from google.genai import types

        for action in actions:
            if action[0] == "prompts":
                await session.set_weighted_prompts([types.WeightedPrompt(text=t, weight=w)
                                                    for t, w in action[1]])
                if not self.playing:  # (the music starts with the first prompts)
                    await session.play()
                    self.playing = True
            elif action[0] == "config":
                await session.set_music_generation_config(
                    types.LiveMusicGenerationConfig(**action[1]))
            elif action[0] == "reset":
                await session.reset_context()

    async def _receive(self, session) -> None:
        async for message in session.receive():
            content = message.server_content
            for chunk in (content.audio_chunks or []) if content else []:
                if chunk.data:
                    self.chunks += 1
                    self.audio(chunk.data)
            if message.filtered_prompt is not None:
                log.warning("lyria %s filtered a prompt: %s", self.target.name,
                            message.filtered_prompt.filtered_reason or message.filtered_prompt)


class LyriaOutput(BaseOutput):
    """A ``lyria:`` target (see the module docstring); its music plays where ``--play``
    says (the built-in audio output: ``default``, a device, a .wav)."""

    def __init__(self, target: LyriaTarget, dest: str = "default", rate: int = 48000,
                 where: str = ""):
        self.label = f"Lyria RealTime ({target.name})"
        super().__init__(target)
        self.dest, self.rate = dest, rate
        self.where = where  # the mapping file and line, for the start-up line
        self.steering = Steering(target.min_interval)
        self.session: _Session | None = None
        self.player = None

    def describe(self) -> str:
        where = f"into {self.dest}" if self.dest.lower().endswith(".wav") else f"on {self.dest}"
        return (f"Lyria RealTime {self.target.model} ({self.name}), its music {where}, "
                f"changes at most every {self.target.min_interval:g} s")

    @property
    def down(self) -> str | None:
        session = self.session
        return None if session is None or session.connected.is_set() else session.error

    def open(self, quiet: bool = False) -> None:
        """Connect now; a service that cannot be reached at start is a start-up problem."""
        if self.session is not None:
            return
        problem = missing()
        if problem:
            raise PeteError(f"{self.where}lyria target {self.name}: {problem}")
        from .synth_output import Player

        self.player = Player.attach(self.dest, self.rate, ("builtin", ""))
        self.session = _Session(self.target, self._audio, self.steering)
        self.session.start()
        until = time.monotonic() + CONNECT_TIMEOUT
        while not self.session.connected.wait(0.05) and self.session.error is None \
                and time.monotonic() < until:
            pass
        if not self.session.connected.is_set():
            error = self.session.error or f"no answer in {CONNECT_TIMEOUT:g} s"
            self.close()
            raise PeteError(f"{self.where}lyria target {self.name}: cannot reach Lyria RealTime "
                            f"({self.target.url or 'Google'}): {error}")

    def _audio(self, pcm: bytes) -> None:
        if self.player is not None:
            self.player.send(b"P" + pcm)

    def send(self, message) -> list:
        if not isinstance(message, OscMessage):
            raise ValueError(f"{self.name}: Lyria takes prompt and config messages")
        self.steering.take(message.address, message.args)
        return [message]

    def end_frame(self, frame_id: int) -> list:
        self.steering.frame_end()
        return []

    def tick(self, now: float) -> None:
        if self.session is not None:
            self.session.put(self.steering.due(now))

    def close(self) -> list:
        if self.session is not None:
            self.session.stop()
            self.session = None
        if self.player is not None:
            self.player.detach()
            self.player = None
        return []
