"""The DAW in the show: an OSC input for AbletonOSC's listener replies and for any
``/pete/context/NAME value``.

``--context-port PORT`` (127.0.0.1 unless ``--context-host``) listens; ``--ableton``
also asks AbletonOSC (UDP 11000, replying to port 11001 of the same computer) to report
the tempo, whether Live is playing, and the selected scene and track as they change, and
asks for the selected scene's and track's names each time the selection changes. The
values land in two small dictionaries the show reads: ``daw`` (``tempo``, ``playing``,
``scene``, ``track``, ``scene_name``, ``track_name``) and ``context`` (``NAME``). The port
and host come from the command line or the mapping's ``listen:``. They reach the prompt
(``{daw.tempo}``, ``{context.NAME}``, see :mod:`pete_osc.director.prompt`) and can gate routes
(``when: {playing: true}``); never an OSC address. Names and values from the network are
cut to a bounded length.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Callable

from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import ThreadingOSCUDPServer
from pythonosc.udp_client import SimpleUDPClient

from ..director.prompt import MAX_VALUE, clean
from ..errors import PeteError

log = logging.getLogger(__name__)

ABLETON_PORT = 11000  # AbletonOSC listens here
REPLY_PORT = 11001  # and replies here, to the computer that asked
MAX_NAMES = 64  # distinct /pete/context names kept (a flood cannot grow memory)
_NAME = re.compile(r"^[a-z0-9_]{1,32}$")
# AbletonOSC listener: (what to ask for, the address its values come back on, our name)
LISTEN = (
    ("/live/song/start_listen/tempo", "/live/song/get/tempo", "tempo"),
    ("/live/song/start_listen/is_playing", "/live/song/get/is_playing", "playing"),
    ("/live/view/start_listen/selected_scene", "/live/view/get/selected_scene", "scene"),
    ("/live/view/start_listen/selected_track", "/live/view/get/selected_track", "track"),
)
# A selected scene's or track's name: asked with its index (from 0), answered with the
# index and the name on the same address.
NAMES = {"scene": "/live/scene/get/name", "track": "/live/track/get/name"}
# Seconds to wait for AbletonOSC's first answer before saying that none came.
ABLETON_SILENCE = 5.0


class DawInput:
    """The OSC input's server thread (owned: ``start``, ``close``) and what it heard."""

    def __init__(self, port: int, host: str = "127.0.0.1",
                 on_change: Callable[[str, object], None] = lambda name, value: None,
                 said: str = "--context-port"):
        self.daw: dict[str, object] = {}
        self._ableton: SimpleUDPClient | None = None  # where names are asked, once listening
        self.context: dict[str, object] = {}
        self.on_change = on_change
        self.received = 0
        self.ignored = 0
        dispatcher = Dispatcher()
        for _, address, name in LISTEN:
            dispatcher.map(address, self._daw, name)
        for what, address in NAMES.items():
            dispatcher.map(address, self._name, what)
        dispatcher.map("/pete/context/*", self._context)
        dispatcher.set_default_handler(self._other)
        try:
            self.server = ThreadingOSCUDPServer((host, port), dispatcher)
        except OSError as exc:
            raise PeteError(f"{said} {port}: cannot listen on {host}:{port}: "
                            f"{exc.strerror or exc} (is another program using it? AbletonOSC's "
                            "replies need 11001 free)") from None
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="context input")
        self._silence: threading.Timer | None = None  # says once if AbletonOSC never answers

    def start(self) -> "DawInput":
        self._thread.start()
        return self

    def listen_to_ableton(self, where: str) -> str:
        """Ask AbletonOSC at ``where`` (HOST[:PORT]) to report the values above."""
        host, _, port = where.rpartition(":") if ":" in where else (where, "", "")
        host = host or "127.0.0.1"
        try:
            target = (host, int(port) if port else ABLETON_PORT)
            client = SimpleUDPClient(*target)
            for request, _, _ in LISTEN:
                client.send_message(request, [])  # (AbletonOSC answers at once with the value)
            self._ableton = client
        except (OSError, ValueError) as exc:
            raise PeteError(f"--ableton {where}: cannot send to it ({exc})") from None
        said = f"{target[0]}:{target[1]}"
        self._silence = threading.Timer(ABLETON_SILENCE, self._unanswered, (said,))
        self._silence.daemon = True  # (cancelled by close; never outlives the input)
        self._silence.start()
        return said

    def _unanswered(self, where: str) -> None:
        if not self.daw:
            log.warning("--ableton %s: no answer from AbletonOSC in %g s (is Live open, with "
                        "AbletonOSC chosen as a control surface, and this computer's port %d "
                        "free for its replies?); {daw.*} stay empty until it answers",
                        where, ABLETON_SILENCE, self.port)

    # ---- handlers (server thread) --------------------------------------------------------
    def _daw(self, address: str, name_arg: list, *args) -> None:
        name = name_arg[0]
        if not args:
            return
        value = args[-1]  # AbletonOSC puts an object's id first where there is one
        if name == "playing":
            value = bool(value)
        elif name == "tempo" and isinstance(value, (int, float)):
            value = round(float(value), 2)
        elif name in ("scene", "track") and isinstance(value, int):
            if value + 1 != self.daw.get(name):
                self.daw.pop(f"{name}_name", None)  # until the new one's name comes
                self._ask_name(name, value)
            value = value + 1  # Live counts from 0; people from 1
        else:
            value = clean(value)
        self._set(self.daw, name, value)

    def _ask_name(self, what: str, index: int) -> None:
        if self._ableton is None:
            return
        try:
            self._ableton.send_message(NAMES[what], [index])
        except OSError as exc:  # AbletonOSC's computer gone: the number still serves
            log.debug("could not ask AbletonOSC for the %s name: %s", what, exc)

    def _name(self, address: str, what_arg: list, *args) -> None:
        """A scene's or track's name (index, name): kept if it is the selected one's."""
        what = what_arg[0]
        if len(args) < 2 or not isinstance(args[0], int) or args[0] + 1 != self.daw.get(what):
            self.ignored += 1
            return
        self._set(self.daw, f"{what}_name", clean(args[1]))

    def _context(self, address: str, *args) -> None:
        name = address.rsplit("/", 1)[-1].lower()
        if not _NAME.match(name) or not args:
            self.ignored += 1
            return
        if name not in self.context and len(self.context) >= MAX_NAMES:
            self.ignored += 1
            return
        value = args[0]
        self._set(self.context, name, value if isinstance(value, (int, float)) and
                  not isinstance(value, bool) else clean(value, MAX_VALUE))

    def _set(self, into: dict, name: str, value: object) -> None:
        self.received += 1
        if into.get(name) != value:
            into[name] = value
            self.on_change(name, value)

    def _other(self, address: str, *args) -> None:
        self.ignored += 1

    def close(self) -> None:
        if self._silence is not None:
            self._silence.cancel()
        if self._ableton is not None:
            self._ableton._sock.close()
        if self._thread.is_alive():
            self.server.shutdown()
        self.server.server_close()
        if self._thread.is_alive():
            self._thread.join(2.0)


def where_to_listen(config, mapping) -> tuple[int, str, str | None, str] | None:
    """Where the OSC input listens: (port, host, AbletonOSC to ask, who said so), the
    command line first (``config``: the show's --context-port, --context-host and
    --ableton), then the mapping's ``listen:``; None: no input."""
    spec = mapping.listen if mapping is not None else None
    ableton = config.ableton or (spec.ableton if spec else None)
    port = config.context_port or (spec.port if spec else None) or (REPLY_PORT if ableton else None)
    if port is None:
        return None
    said = ("--context-port" if config.context_port or spec is None
            else f"{mapping.path}:{spec.line}: listen")
    return port, config.context_host or (spec.host if spec else "127.0.0.1"), ableton, said


def open_input(port: int, host: str, ableton: str | None, said: str,
               say: Callable[[str], None]) -> DawInput:
    """The OSC input, started (and AbletonOSC asked to report, where named)."""
    opened = DawInput(port, host, on_change=lambda name, value: log.info(
        "context: %s = %r", name, value), said=said).start()
    say(f"listening for the DAW and /pete/context/NAME on {host}:{opened.port}")
    if ableton:
        say(f"asked AbletonOSC at {opened.listen_to_ableton(ableton)} for the "
            "tempo, playing state, selected scene and track (and their names)")
    return opened
