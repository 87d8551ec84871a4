"""The show's side of the built-in synth (issue 30): a mapping's ``synth:`` targets take
the same ``mido`` messages as a MIDI port and send them down a pipe to the synth's child
process (pete_osc.outputs.player), one process per destination for every synth target
(each on its own channel). Nothing here waits on the process. One that died, or stopped
beating (it writes the time after every chunk it makes), is said once, killed and started
again at once, and the show goes on; the restarted synth starts silent, so no note is
left sounding; one that cannot start, three times in a row, is said once and left off.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time

from ..mapping.config import MidiTarget
from .base import BaseOutput
from .player import play

log = logging.getLogger("pete_osc.outputs")

BEAT_LIMIT = 2.0  # seconds without a chunk made: the process is wedged
QUICK_DEATH = 3.0  # a process that ends sooner than this after its start failed to start


class _Process:
    """The running child and the pipe to it (what the output's retry holds as its
    connection). A pipe and a shared double, no locks: nothing the show could wait on."""

    def __init__(self, dest: str, rate: int, engine: tuple = ()):
        context = multiprocessing.get_context("spawn")  # (no fork of the show's threads)
        reader, self.pipe = context.Pipe(duplex=False)
        self.beat = context.RawValue("d", time.monotonic())
        self.process = context.Process(target=play, args=(reader, dest, self.beat, rate,
                                                          *engine),
                                       name="pete-osc synth", daemon=True)
        self.started = time.monotonic()
        self.closed = False
        self.process.start()
        reader.close()

    def put(self, data: bytes) -> None:
        self.pipe.send_bytes(data)

    def trouble(self) -> str | None:
        if not self.process.is_alive():
            return f"the synth process ended (exit code {self.process.exitcode})"
        since = max(self.beat.value, self.started + 10.0)  # (10 s to start up)
        if time.monotonic() - since > BEAT_LIMIT:
            return f"the synth process made no sound for {BEAT_LIMIT:g} s"
        return None

    def close(self, wait: float = 6.0) -> None:
        """End: every note released and rung out, then the process stops (killed if it
        does not within ``wait`` seconds)."""
        if self.closed:
            return
        self.closed = True
        if self.process.is_alive():
            try:
                self.pipe.send_bytes(b"")
            except OSError:
                pass
            self.process.join(wait)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(1.0)
        self.pipe.close()


class Player:
    """The synth process of one destination, shared by every ``synth:`` target that
    plays there (each on its own channel), started again when it dies or wedges."""

    _shared: dict[tuple, "Player"] = {}
    _lock = threading.Lock()

    def __init__(self, dest: str, rate: int, engine: tuple = ()):
        self.dest, self.rate = dest, rate
        self.engine = engine  # (what plays: builtin | fluidsynth, the SoundFont)
        self.users = 0
        self.process: _Process | None = None
        self.restarts = 0
        self.quick_deaths = 0  # deaths in a row soon after a start
        self.off = False  # given up: it cannot run here (said once)
        self.setup: list[bytes] = []  # sent again to a restarted process (the programs)

    @classmethod
    def attach(cls, dest: str, rate: int, engine: tuple = ()) -> "Player":
        with cls._lock:
            player = cls._shared.get((dest, engine))
            if player is None:
                player = cls._shared[(dest, engine)] = Player(dest, rate, engine)
            player.users += 1
            return player

    def detach(self) -> None:
        with self._lock:
            self.users -= 1
            if self.users > 0:
                return
            self._shared.pop((self.dest, self.engine), None)
        if self.process is not None:
            self.process.close()
            self.process = None

    def check(self) -> None:
        """Start the process if it is not running; a dead or wedged one is said once,
        killed, and started again (the new synth is silent: no note left sounding)."""
        with self._lock:
            if self.off:
                return
            if self.process is not None:
                trouble = self.process.trouble()
                if trouble is None:
                    return
                self.process.close(wait=0)
                quick = time.monotonic() - self.process.started < QUICK_DEATH
                self.quick_deaths = self.quick_deaths + 1 if quick else 0
                if self.quick_deaths >= 3:  # it cannot run here: no more tries
                    log.warning("%s, three times within seconds of its start: the synth is "
                                "off for the rest of the show (the show goes on)", trouble)
                    self.process, self.off = None, True
                    return
                log.warning("%s; starting it again (the show goes on)", trouble)
                self.restarts += 1
            self.process = _Process(self.dest, self.rate, self.engine)
            for data in self.setup:
                self.process.put(data)

    def send(self, data: bytes) -> None:
        self.check()
        for _ in range(2):  # (it died since: once more, into the new one)
            if self.process is None:  # off
                return
            try:
                self.process.put(data)
                return
            except OSError:
                self.check()

    @property
    def pid(self) -> int | None:
        return self.process.process.pid if self.process is not None else None


class SynthOutput(BaseOutput):
    """A ``synth:`` target: its messages played by the built-in synth in a child process
    (see the module docstring); ``dest``: ``default``, a device name or a .wav path."""

    label = "built-in synth"

    def __init__(self, target: MidiTarget, dest: str = "default", rate: int = 48000):
        self.dest, self.rate = dest, rate
        super().__init__(target)
        self.label = f"built-in synth ({target.name})"
        self.player: Player | None = None

    def describe(self) -> str:
        where = f"into {self.dest}" if self.dest.lower().endswith(".wav") else f"on {self.dest}"
        fluid = " (FluidSynth)" if self.target.engine == "fluidsynth" else ""
        return f"built-in synth{fluid} {where} ({self.name}, channel {self.target.channel})"

    def _connect(self):
        engine = (self.target.engine or "builtin", self.target.soundfont)
        self.player = Player.attach(self.dest, self.rate, engine)
        if self.target.program is not None:  # the target's patch, before any note
            import mido

            setup = bytes(mido.Message("program_change", channel=self.target.channel - 1,
                                       program=self.target.program).bytes())
            self.player.setup.append(setup)
            self.player.send(setup)
        else:
            self.player.check()
        return self.player

    def _check(self, message) -> None:
        if not hasattr(message, "message"):
            raise ValueError(f"{self.name}: the synth takes MIDI messages, not {message!r}")

    def _send(self, player: Player, packet) -> None:
        player.send(bytes(packet.message.bytes()))

    def tick(self, now: float) -> None:
        """A dead or wedged process is said once and started again, even while no
        message comes."""
        if self.player is not None:
            self.player.check()

    def close(self) -> list:
        if self.player is not None:
            self._conn.conn = None
            self.player.detach()
            self.player = None
        return []
