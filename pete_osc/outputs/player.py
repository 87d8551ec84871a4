"""The built-in synth's child process (issue 30): :func:`play` takes MIDI bytes from a
pipe, makes the synth's sound (pete_osc.outputs.synth) and sends it to the sound card
through miniaudio, or into a WAV file in real time (``--play FILE.wav``); and the checks
``--play`` makes at start (the devices there are, the one named). The show's side, the
``synth:`` targets that start, feed and watch this process, is
pete_osc.outputs.synth_output.

The process is the show's only link to audio: its own interpreter, so no thread of the
show (capture, engine, sender, monitor) can make the sound drop out, and nothing in it can
stall the show. It makes its sound ahead into a ring, the device's real-time callback only
copying from it. At the end (the pipe's end or its closing; Ctrl-C is left to the show)
every note is released and the sound rings out (a file is written to its end) first.
"""

from __future__ import annotations

import os
import struct
import sys
import threading
import time
from pathlib import Path

from ..errors import PeteError

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


def check_destination(dest: str, said: str | None = None) -> str | None:
    """Why ``--play DEST`` cannot play (one line), or None: a WAV file needs its folder;
    a device (``default`` or a name) needs miniaudio and that device. ``said``: how the
    line starts when --play was not given (a mapping's synth: targets)."""
    if said is not None:
        problem = check_destination(dest)
        return problem and problem.replace(f"--play {dest}: ", said, 1)
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


def play(messages, dest: str, beat, rate: int, engine: str = "builtin",
         soundfont: str = "") -> None:
    """The child process: ``messages`` (the read end of a pipe of MIDI bytes; empty: the
    end) into the synth (``engine``: builtin, or fluidsynth with ``soundfont``), its sound
    into ``dest`` (a .wav path, ``default`` or a device name) in real time."""
    import signal

    import mido
    import numpy as np

    from .synth import CHUNK, Synth

    # Ctrl-C in a terminal reaches the whole process group: the show ends this process
    # (the pipe's end, or its closing), so its notes ring out instead of stopping dead.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if engine == "fluidsynth":
        from .fluid import FluidSynth

        synth = FluidSynth(rate, soundfont)
    else:
        synth = Synth(rate)
    state = {"ending": None}
    mixin = bytearray()  # 16-bit stereo at ``rate`` to mix in, from the show

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
            if data[:1] == b"P":  # sound made elsewhere (Lyria RealTime): mixed in
                mixin.extend(data[1:])
                continue
            try:
                synth.send(mido.Message.from_bytes(data))
            except ValueError:
                continue

    def chunk(frames: int) -> bytes:
        take()
        sound = synth.render(frames)
        if mixin:
            part = np.frombuffer(bytes(mixin[:frames * 4]), "<i2").reshape(-1, 2) / 32768.0
            del mixin[:frames * 4]
            sound[:len(part)] += part
        beat.value = time.monotonic()
        return (np.clip(sound, -1, 1) * 32767).astype("<i2").tobytes()

    def done() -> bool:  # released, rung out (or 4 s after the end at most)
        ending = state["ending"]
        return ending is not None and ((not synth.voices and not mixin
                                        and time.monotonic() - ending > 1.5)
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


def refuse(dest: str, said: str | None = None) -> None:
    """Raise the one-line start-up problem of ``--play DEST``, if it has one."""
    problem = check_destination(dest, said)
    if problem:
        raise PeteError(problem)
