"""The built-in synth as an output (issue 30): a mapping's ``synth:`` targets take the
same ``mido`` messages as a MIDI port, and a child process plays them (the synth's sound
from pete_osc.outputs.synth) into the sound card through miniaudio, or into a WAV file in
real time (``--play FILE.wav``).

The process is the show's only link to audio: its own interpreter, so no thread of the
show (capture, engine, sender, monitor) can make the sound drop out, and nothing in it can
stall the show. Messages go down a pipe, never waited on. One process per destination
serves every synth target (each on its own channel). A process that died, or stopped
beating (it writes the time after every chunk it makes), is said once, killed and started
again at once, and the show goes on; the restarted synth starts silent, so no note is
left sounding. At the end every note is released and the
sound rings out (or, for a file, is written to its end) before the process stops.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import struct
import sys
import threading
import time
from pathlib import Path

from ..errors import PeteError
from ..mapping.config import MidiTarget
from .base import BaseOutput

log = logging.getLogger("pete_osc.outputs")

BEAT_LIMIT = 2.0  # seconds without a chunk made: the process is wedged
QUICK_DEATH = 3.0  # a process that ends sooner than this after its start failed to start
DEVICE_MS = 40  # the sound card's buffer
AHEAD = 0.2  # seconds of sound made ahead of the clock at most (see play)
FILL = 1024  # frames of sound made ahead of the sound card (21 ms at 48 kHz)


def audio_devices() -> list[str]:
    """The playback devices miniaudio sees here (names; ``jack`` where a JACK server
    runs), or [] with none or no miniaudio."""
    try:
        import miniaudio
    except ImportError:
        return []
    from .midi import _quiet_stderr

    os.environ.setdefault("JACK_NO_START_SERVER", "1")  # (a user's JACK, never one of ours)
    names = []
    with _quiet_stderr():
        try:
            names += [d["name"] for d in miniaudio.Devices().get_playbacks()]
        except Exception:
            pass
        try:
            if miniaudio.Devices(backends=[miniaudio.Backend.JACK]).get_playbacks():
                names.append("jack")
        except Exception:
            pass
    return names


def check_destination(dest: str) -> str | None:
    """Why ``--play DEST`` cannot play (one line), or None: a WAV file needs its folder;
    a device (``default`` or a name) needs miniaudio and that device."""
    if dest.lower().endswith(".wav"):
        folder = Path(dest).expanduser().resolve().parent
        return None if folder.is_dir() else f"--play {dest}: no folder {folder} to write into"
    try:
        import miniaudio  # noqa: F401
    except ImportError:
        return "--play needs miniaudio for the sound card: pip install miniaudio"
    names = audio_devices()
    if not names:
        return ("--play: no audio output device here (none found); name a file to play "
                "into instead: --play show.wav")
    if dest != "default" and dest not in names:
        return f"--play {dest}: no such audio device; there are: {', '.join(names)}"
    try:
        _open_device(dest, 48000).close()  # (opened and closed: it can play)
    except Exception as exc:
        return (f"--play {dest}: the audio device cannot be opened ({exc}); there are: "
                f"{', '.join(names)}; or play into a file: --play show.wav")
    return None


def _open_device(dest: str, rate: int):
    """miniaudio's playback device ``dest`` (``default`` or a name), opened, not started;
    the C library's own messages kept off the show's stderr."""
    import miniaudio

    from .midi import _quiet_stderr

    device_id, backends = None, None
    if dest == "jack":  # JACK's own client (pete-osc:playback0/1, to system:playback_*)
        os.environ.setdefault("JACK_NO_START_SERVER", "1")
        backends = [miniaudio.Backend.JACK]
    elif dest != "default":
        device_id = next(d["id"] for d in miniaudio.Devices().get_playbacks() if d["name"] == dest)
    with _quiet_stderr():
        return miniaudio.PlaybackDevice(nchannels=2, sample_rate=rate, device_id=device_id,
                                        buffersize_msec=DEVICE_MS, app_name="pete-osc",
                                        backends=backends)


class WavFile:
    """A 16-bit stereo WAV written as it goes: the header's sizes are kept right after
    every write, so the file is whole even if its writer is killed; a writer that starts
    again on the same file goes on after what is there."""

    def __init__(self, path: str, rate: int):
        self.rate = rate
        fresh = not os.path.exists(path) or os.path.getsize(path) < 44
        self.file = open(path, "w+b" if fresh else "r+b")
        if fresh:
            self.file.write(b"RIFF" + struct.pack("<I", 36) + b"WAVEfmt "
                            + struct.pack("<IHHIIHH", 16, 1, 2, rate, rate * 4, 4, 16)
                            + b"data" + struct.pack("<I", 0))
        self.file.seek(0, os.SEEK_END)

    def write(self, pcm: bytes) -> None:
        self.file.write(pcm)
        end = self.file.tell()
        self.file.seek(4)
        self.file.write(struct.pack("<I", end - 8))
        self.file.seek(40)
        self.file.write(struct.pack("<I", end - 44))
        self.file.seek(end)
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def play(messages, dest: str, beat, rate: int) -> None:
    """The child process: ``messages`` (the read end of a pipe of MIDI bytes; empty: the
    end) into the synth, its sound into ``dest`` (a .wav path, ``default`` or a device
    name) in real time."""
    import signal

    import mido
    import numpy as np

    from .synth import CHUNK, Synth

    # Ctrl-C in a terminal reaches the whole process group: the show ends this process
    # (the pipe's end, or its closing), so its notes ring out instead of stopping dead.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    synth = Synth(rate)
    state = {"ending": None}

    def take() -> None:
        while True:
            try:
                if not messages.poll():
                    return
                data = messages.recv_bytes()
            except (EOFError, OSError):  # the show is gone: end as at a normal end
                data = b""
            if not data:
                if state["ending"] is not None:
                    return
                synth.all_off()
                state["ending"] = time.monotonic()
                continue
            try:
                synth.send(mido.Message.from_bytes(data))
            except ValueError:
                continue

    def chunk(frames: int) -> bytes:
        take()
        sound = synth.render(frames)
        beat.value = time.monotonic()
        return (np.clip(sound, -1, 1) * 32767).astype("<i2").tobytes()

    def done() -> bool:  # released, rung out (or 4 s after the end at most)
        ending = state["ending"]
        return ending is not None and ((not synth.voices and time.monotonic() - ending > 1.5)
                                       or time.monotonic() - ending > 4.0)

    if dest.lower().endswith(".wav"):
        # A file needs the clock's pace, not a sound card's priority: it gives way to
        # the show (the model) and writes 2 chunks at a time.
        os.nice(10)
        out = WavFile(dest, rate)
        due = time.monotonic()
        while not done():
            out.write(chunk(2 * CHUNK))
            due += 2 * CHUNK / rate
            time.sleep(max(0.0, due - time.monotonic()))
        out.close()
        return
    try:
        device = _open_device(dest, rate)
    except Exception as exc:
        print(f"pete-osc: the built-in synth cannot open the audio device {dest}: {exc}",
              file=sys.stderr, flush=True)
        sys.exit(3)
    # The sound is made here, ahead, into a ring; the device's real-time callback only
    # copies from it (a copy cannot miss the device's deadline the way making the sound
    # can, on a busy machine). FILL frames ahead: the latency this adds.
    ring, lock = bytearray(), threading.Lock()
    sys.setswitchinterval(0.0005)  # (the callback waits for this thread at most this long)

    def stream():
        # A device with no clock of its own (ALSA's null plugin) asks as fast as it can:
        # never run more than AHEAD seconds ahead of real time (a sound card never asks
        # that far ahead, so this never waits there).
        start, made = time.monotonic(), 0
        frames = yield b""
        while True:
            ahead = made / rate - (time.monotonic() - start)
            if ahead > AHEAD:
                time.sleep(ahead - AHEAD / 2)
            made += frames
            with lock:
                out = bytes(ring[:frames * 4])
                del ring[:frames * 4]
            frames = yield out + bytes(frames * 4 - len(out))  # (short: silence)

    feed = stream()
    next(feed)
    with device:
        device.start(feed)
        while not done():
            with lock:
                have = len(ring) // 4
            if have < FILL:
                pcm = chunk(CHUNK)
                with lock:
                    ring.extend(pcm)
            else:
                time.sleep(0.002)


class _Process:
    """The running child and the pipe to it (what the output's retry holds as its
    connection). A pipe and a shared double, no locks: nothing the show could wait on."""

    def __init__(self, dest: str, rate: int):
        context = multiprocessing.get_context("spawn")  # (no fork of the show's threads)
        reader, self.pipe = context.Pipe(duplex=False)
        self.beat = context.RawValue("d", time.monotonic())
        self.process = context.Process(target=play, args=(reader, dest, self.beat, rate),
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

    _shared: dict[str, "Player"] = {}
    _lock = threading.Lock()

    def __init__(self, dest: str, rate: int):
        self.dest, self.rate = dest, rate
        self.users = 0
        self.process: _Process | None = None
        self.restarts = 0
        self.quick_deaths = 0  # deaths in a row soon after a start
        self.off = False  # given up: it cannot run here (said once)
        self.setup: list[bytes] = []  # sent again to a restarted process (the programs)

    @classmethod
    def attach(cls, dest: str, rate: int) -> "Player":
        with cls._lock:
            player = cls._shared.get(dest)
            if player is None:
                player = cls._shared[dest] = Player(dest, rate)
            player.users += 1
            return player

    def detach(self) -> None:
        with self._lock:
            self.users -= 1
            if self.users > 0:
                return
            self._shared.pop(self.dest, None)
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
            self.process = _Process(self.dest, self.rate)
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
        return f"built-in synth {where} ({self.name}, channel {self.target.channel})"

    def _connect(self):
        self.player = Player.attach(self.dest, self.rate)
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


def refuse(dest: str) -> None:
    """Raise the one-line start-up problem of ``--play DEST``, if it has one."""
    problem = check_destination(dest)
    if problem:
        raise PeteError(problem)
