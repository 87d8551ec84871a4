"""Real receivers written by other projects, started and stopped by the tests.

oscdump (Debian's liblo-tools) and Pure Data decode our OSC; a JACK dummy server carries
our MIDI to an rtmidi input port. `.ci/run` installs the Debian packages; a developer
without them gets a skip naming the package.
"""

from __future__ import annotations

import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NTP_TO_UNIX = 2208988800


def stop_process(proc: subprocess.Popen) -> None:
    """Terminate, and kill if it does not go within 5 s."""
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()


def need(binary: str, package: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} is not installed (Debian package {package}; .ci/run installs it)")
    return path


def free_port(kind=socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lines:
    """A child process whose stdout (and optionally stderr) lines are collected by a thread."""

    def __init__(self, argv: list[str], env: dict | None = None, stderr: bool = False):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT if stderr else subprocess.DEVNULL,
                                     text=True, env=env)
        self.lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def take(self, n: int, timeout: float = 5.0) -> list[str]:
        """The next ``n`` lines (fewer if they do not come within ``timeout``)."""
        out, end = [], time.monotonic() + timeout
        while len(out) < n:
            try:
                out.append(self.lines.get(timeout=max(0.0, end - time.monotonic())))
            except queue.Empty:
                break
        return out

    def stop(self) -> None:
        stop_process(self.proc)


def wait_listening(port: int, protocol: str, timeout: float = 5.0) -> None:
    """Until something listens on 127.0.0.1:``port`` (a receiver started in the background)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if protocol == "tcp":
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                pass
        else:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    return  # taken: the receiver has it
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {protocol} port {port}")


def oscdump(port: int, protocol: str = "udp") -> Lines:
    """``oscdump -L`` on ``port``; each line is 'NTPTIME /address types args...'."""
    binary = need("oscdump", "liblo-tools")
    dump = Lines([binary, "-L", f"osc.{protocol}://:{port}"])
    try:
        wait_listening(port, protocol)
    except TimeoutError:  # (seen once in a full run: liblo late to bind; start it again)
        dump.stop()
        dump = Lines([binary, "-L", f"osc.{protocol}://:{port}"])
        wait_listening(port, protocol)
    return dump


def without_time(line: str) -> str:
    return line.split(" ", 1)[1]


def ntp_seconds(line: str) -> float:
    """oscdump's timetag (hex seconds.fraction since 1900) as Unix time."""
    sec, frac = line.split(" ", 1)[0].split(".")
    return int(sec, 16) - NTP_TO_UNIX + int(frac, 16) / 2**32


class Jack:
    """A private ``jackd -d dummy`` server (its own name, so a user's JACK is left alone)."""

    started = 0  # servers started by this process: each gets a name of its own

    def __init__(self):
        binary = need("jackd", "jackd2")
        Jack.started += 1
        self.name = f"pete-test-{os.getpid()}-{Jack.started}"
        self.env = dict(os.environ, JACK_DEFAULT_SERVER=self.name, JACK_NO_START_SERVER="1")
        self.proc = subprocess.Popen([binary, "-n", self.name, "-d", "dummy", "-r", "48000",
                                      "-p", "256"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, env=self.env)
        probe = [sys.executable, "-c", "import rtmidi; rtmidi.MidiOut(rtmidi.API_UNIX_JACK)"]
        end = time.monotonic() + 10
        while subprocess.run(probe, env=self.env, capture_output=True).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > end:
                self.stop()
                pytest.skip("jackd -d dummy did not start")
            time.sleep(0.2)

    def stop(self) -> None:
        stop_process(self.proc)


def json_lines(path) -> list:
    """The whole JSON lines of a file another process is still appending to (a last line
    without its newline is half written: left for the next read)."""
    import json

    if not Path(path).exists():
        return []
    text = Path(path).read_text()
    return [json.loads(line) for line in text[:text.rfind("\n") + 1].splitlines() if line]


def jack_backend():
    """mido's backend on JACK's MIDI (the dummy server a test started)."""
    import mido

    return mido.Backend("mido.backends.rtmidi/UNIX_JACK", load=True)


def wait_for_port(backend, name, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if name in backend.get_input_names():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{name} never appeared; ports: {backend.get_input_names()}")
