"""MIDI out through mido and python-rtmidi: CoreMIDI, ALSA or JACK, chosen once per run."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time

from ..errors import PeteError
from ..mapping.config import MidiTarget
from ..records import MidiMessage
from .base import BaseOutput

log = logging.getLogger("pete_osc.outputs")

# Our names for rtmidi's APIs, in the order "auto" tries them on each platform.
APIS = {"coremidi": "MACOSX_CORE", "alsa": "LINUX_ALSA", "jack": "UNIX_JACK",
        "windows": "WINDOWS_MM"}
CLIENT_NAME = "pete-osc"
# How often a port opened by name is looked for, to notice it vanish or come back.
PORT_CHECK_INTERVAL = 2.0


def _auto_order() -> list[str]:
    if sys.platform == "darwin":
        return ["coremidi", "jack"]
    if sys.platform.startswith("win"):
        return ["windows"]
    return ["alsa", "jack"]


def open_midi_api(name: str | None = None):
    """A mido backend for ``name`` (alsa, jack, coremidi, windows) or the first that works.

    ALSA's sequencer is missing in some containers and JACK needs a running server; each is
    tried by asking it for its ports. Returns (api name, mido backend)."""
    import mido

    # A JACK client must not try to start a server of its own (with the wrong driver).
    os.environ.setdefault("JACK_NO_START_SERVER", "1")
    names = [name] if name else _auto_order()
    reasons = []
    for api in names:
        if api not in APIS:
            raise PeteError(f"--midi-api {api}: expected one of {', '.join(APIS)}")
        try:
            backend = mido.Backend(f"mido.backends.rtmidi/{APIS[api]}", load=True)
        except (ImportError, OSError) as exc:
            # python-rtmidi is built against ALSA's library; a headless Linux server without
            # libasound.so.2 cannot load it at all.
            raise PeteError(f"the MIDI library python-rtmidi cannot load ({exc}); on Linux "
                            "install ALSA's library (Debian: apt install libasound2)") from None
        try:
            with _quiet_stderr():  # ALSA and JACK print their own errors from C
                backend.get_output_names()
        except Exception as exc:  # rtmidi's SystemError: no sequencer, no JACK server
            reasons.append(f"{api}: {str(exc).strip() or type(exc).__name__}")
            continue
        return api, backend
    raise PeteError("no MIDI system is available (" + "; ".join(reasons) + ")"
                    + ("" if name else "; on Linux start JACK (jackd -d dummy) or load ALSA's "
                       "snd-seq module, or pick one with --midi-api"))


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 (C libraries' messages) for the block; ours say it better."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def list_ports(backend) -> tuple[list[str], list[str]]:
    """(inputs, outputs) port names of ``backend``."""
    return backend.get_input_names(), backend.get_output_names()


def find_port(backend, wanted: str) -> str | None:
    """The output port called ``wanted``: exact, else the only one containing it (any case)."""
    names = backend.get_output_names()
    if wanted in names:
        return wanted
    matches = [n for n in names if wanted.lower() in n.lower()]
    return matches[0] if len(matches) == 1 else None


class MidiOutput(BaseOutput):
    """One MIDI target: our own virtual port, or an existing port opened by name.
    ``send`` takes a :class:`MidiMessage` (its ``mido.Message`` checked every data byte
    when it was made)."""

    retry_interval = PORT_CHECK_INTERVAL

    def __init__(self, target: MidiTarget, backend, api: str):
        self.backend = backend
        self.api = api
        self.port_name = target.port
        if not target.virtual:
            found = find_port(backend, target.port)
            if found is None:
                raise PeteError(f"MIDI target {target.name!r}: no output port {target.port!r} "
                                f"({api}); there are: {', '.join(backend.get_output_names()) or 'none'}")
            self.port_name = found
        self.label = f"MIDI target {target.name!r} ({self.port_name})"
        super().__init__(target)
        self._checked_at = time.monotonic()

    def open(self, quiet: bool = False) -> None:
        """Open the port now; a port that cannot be opened is an error at start."""
        if self._conn.get(quiet) is None:
            raise PeteError(f"MIDI target {self.target.name!r}: cannot open {self.port_name!r} ({self.api})")

    def same_target(self, target) -> bool:
        # The line a target is declared on moves with any edit above it.
        return isinstance(target, MidiTarget) and \
            (target.port, target.virtual) == (self.target.port, self.target.virtual)

    def describe(self) -> str:
        virtual = "virtual port " if self.target.virtual else ""
        return f"MIDI {virtual}{self.full_name!r} via {self.api} ({self.name})"

    @property
    def full_name(self) -> str:
        """The port's name as other programs see it (JACK prefixes the client)."""
        if self.target.virtual and self.api == "jack":
            return f"{CLIENT_NAME}:{self.port_name}"
        return self.port_name

    def tick(self, now: float) -> None:
        """Notice a port opened by name vanishing (so it is reopened when it returns)."""
        if self.target.virtual or now - self._checked_at < PORT_CHECK_INTERVAL:
            return
        self._checked_at = now
        if self._conn.conn is not None and self.port_name not in self.backend.get_output_names():
            self._conn.failed(OSError(f"port {self.port_name!r} vanished"))

    def _connect(self):
        if self.target.virtual:
            return self.backend.open_output(self.port_name, virtual=True, client_name=CLIENT_NAME)
        return self.backend.open_output(self.port_name)

    def _check(self, message) -> None:
        if not isinstance(message, MidiMessage):
            raise ValueError(f"{self.label} takes MIDI messages, not {type(message).__name__}")

    def _send(self, conn, message: MidiMessage) -> None:
        conn.send(message.message)
