"""A mapping file read and checked into :mod:`pete_osc.mapping.config`'s records.

Everything a musician can get wrong in a mapping (an unknown event, an address without a
slash, a CC above 127, a typo in a setting, a target that is not declared) is refused
here, with the file and the line, before any socket or MIDI port opens.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..director.located import Located, load_located
from ..director.schema import Director
from ..errors import PeteError
from .config import (
    DEFAULT_MIDI_PORT,
    LYRIA_CONFIG,
    ClockSpec,
    ListenSpec,
    LyriaTarget,
    MappingConfig,
    MidiTarget,
    OscTarget,
)
from .fields import _bool, _channel, _int_or, _known, _number
from .routes import _address, _route

_TOP = {"osc", "midi", "synth", "lyria", "routes", "bundle", "bundle_delay", "control_rate",
        "clock", "listen"}
_OSC_TARGET = {"host", "port", "protocol", "max_rate"}
_MIDI_TARGET = {"port", "virtual", "channel", "max_rate", "osc", "note_on", "note_off"}
_SYNTH_TARGET = {"channel", "program"}
# A MIDI port's cap unless the mapping says: about what a 5-pin MIDI cable carries
# (31,250 baud: ~1,000 three-byte messages a second); IAC and USB drivers drop beyond it.
MIDI_MAX_RATE = 1000.0


def load_mapping(path: str | Path, director: Director) -> MappingConfig:
    """Read and check a mapping file against the events ``director`` can produce."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PeteError(f"{path}: cannot read mapping: {exc.strerror}") from None
    return parse_mapping(text, director, path)


def parse_mapping(text: str, director: Director, path: Path = Path("mapping.yaml")) -> MappingConfig:
    """The checked mapping in ``text`` (``path`` is only used in messages)."""
    doc = load_located(text, path)
    if not isinstance(doc.data, dict):
        raise PeteError(f"{path}:1: a mapping needs 'osc' or 'midi' targets and 'routes'")
    _known(doc, (), doc.data, _TOP, "setting")
    osc = {name: _osc_target(doc, name, spec) for name, spec in _section(doc, "osc").items()}
    midi = {name: _midi_target(doc, name, spec, osc)
            for name, spec in _section(doc, "midi").items()}
    for name in set(osc) & set(midi):
        raise doc.error(("midi", name), f"target name {name!r} is used for both OSC and MIDI")
    synth = dict(_section(doc, "synth"))
    engine, soundfont = _synth_engine(doc, path, synth.pop("engine", "builtin"),
                                      synth.pop("soundfont", None))
    for name, spec in synth.items():  # the built-in synth: a MIDI target
        if name in osc or name in midi:
            raise doc.error(("synth", name), f"target name {name!r} is used twice")
        midi[name] = replace(_synth_target(doc, name, spec), engine=engine, soundfont=soundfont)
    if not osc and not midi and not doc.data.get("lyria"):
        raise doc.error((), "no targets: add an 'osc:', 'midi:', 'synth:' or 'lyria:' section")
    routes = doc.data.get("routes")
    if not isinstance(routes, list) or not routes:
        raise doc.error(("routes",), "'routes' must be a list of routes (- event: energy ...)")
    lyria = {name: _lyria_target(doc, name, spec) for name, spec in _section(doc, "lyria").items()}
    for name in lyria:
        if name in osc or name in midi:
            raise doc.error(("lyria", name), f"target name {name!r} is used twice")
    checked = tuple(_route(doc, i, spec, director, {**osc, **lyria}, midi)
                    for i, spec in enumerate(routes))
    for i, route in enumerate(checked):
        if route.target in lyria:
            _lyria_route(doc, i, route)
    bundle = _bool(doc, ("bundle",), doc.data.get("bundle", False))
    delay = _number(doc, ("bundle_delay",), doc.data.get("bundle_delay", 0.0), lo=0, hi=10)
    rate = _number(doc, ("control_rate",), doc.data.get("control_rate", 50.0), lo=1, hi=1000)
    clock = _clock(doc, doc.data["clock"]) if "clock" in doc.data else None
    for i, route in enumerate(checked):
        if route.grid and clock is None:
            raise doc.error(("routes", i, "quantize"), "quantize: beat/bar needs a clock to "
                            "count beats: add 'clock: link' at the top of the mapping")
    listen = _listen(doc, doc.data["listen"]) if "listen" in doc.data else None
    return MappingConfig(path, MappingProxyType(osc), MappingProxyType(midi), checked, bundle,
                         delay, rate, clock, listen, MappingProxyType(lyria))


def _listen(doc: Located, raw: Any) -> ListenSpec:
    """``listen: PORT`` or ``listen: {port: 11001, host: 127.0.0.1, ableton: yes}``
    (``ableton: HOST:PORT``, or yes for AbletonOSC on this computer, 127.0.0.1:11000)."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = {"port": raw}
    if not isinstance(raw, dict):
        raise doc.error(("listen",), f"listen must be a port or {{port: 11001, host: "
                        f"127.0.0.1, ableton: yes}}, got {raw!r}")
    _known(doc, ("listen",), raw, {"port", "host", "ableton"}, "listen setting")
    port = raw.get("port", 11001)
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise doc.error(("listen", "port"), f"listen port must be 1..65535, got {port!r}")
    host = raw.get("host", "127.0.0.1")
    if not isinstance(host, str) or not host:
        raise doc.error(("listen", "host"), f"listen host must be an address, got {host!r}")
    ableton = raw.get("ableton")
    if ableton is True:
        ableton = "127.0.0.1:11000"
    elif ableton is False:
        ableton = None
    elif ableton is not None and not isinstance(ableton, str):
        raise doc.error(("listen", "ableton"), f"ableton must be yes or HOST:PORT, got {ableton!r}")
    return ListenSpec(port=port, host=host, ableton=ableton, line=doc.line("listen"))


def _clock(doc: Located, raw: Any) -> ClockSpec:
    """``clock: link``, ``clock: {source: link, quantum: 4, set_tempo: yes}`` or
    ``clock: {source: midi, port: NAME}``."""
    if raw == "link":
        raw = {"source": "link"}
    if not isinstance(raw, dict):
        raise doc.error(("clock",), f"clock must be 'link', {{source: link, quantum: 4, "
                        f"set_tempo: no}} or {{source: midi, port: NAME}}, got {raw!r}")
    source = raw.get("source", "link")
    if source not in ("link", "midi"):
        raise doc.error(("clock", "source"), f"clock source must be link (Ableton Link) or "
                        f"midi (MIDI clock on an input port), got {source!r}")
    _known(doc, ("clock",), raw, {"source", "quantum", "set_tempo"} if source == "link"
           else {"source", "quantum", "port"}, f"{source} clock setting")
    port = raw.get("port", "")
    if source == "midi" and (not isinstance(port, str) or not port):
        raise doc.error(("clock", "port") if "port" in raw else ("clock",),
                        "a MIDI clock needs the input port it comes in on: port: NAME")
    quantum = _number(doc, ("clock", "quantum"), raw.get("quantum", 4), lo=1, hi=64)
    return ClockSpec(source=source, quantum=quantum, port=port, line=doc.line("clock"),
                     set_tempo=_bool(doc, ("clock", "set_tempo"), raw.get("set_tempo", False)))


def _section(doc: Located, name: str) -> dict:
    raw = doc.data.get(name) or {}
    if not isinstance(raw, dict):
        raise doc.error((name,), f"'{name}' must map target names to their settings")
    return raw


def _osc_target(doc: Located, name: str, spec: Any) -> OscTarget:
    where = ("osc", name)
    if isinstance(spec, (str, int)):  # "127.0.0.1:9000" or just a port
        host, _, port = str(spec).rpartition(":")
        spec = {"host": host or "127.0.0.1", "port": _int_or(port)}
    if not isinstance(spec, dict):
        raise doc.error(where, f"OSC target {name!r}: expected host and port")
    _known(doc, where, spec, _OSC_TARGET, "OSC target setting")
    host = spec.get("host", "127.0.0.1")
    if not isinstance(host, str) or not host:
        raise doc.error(where + ("host",), f"OSC target {name!r}: host must be a name or address")
    port = spec.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise doc.error(where + ("port",), f"OSC target {name!r}: port must be 1..65535, got {port!r}")
    protocol = str(spec.get("protocol", "udp")).lower()
    if protocol not in ("udp", "tcp"):
        raise doc.error(where + ("protocol",), f"OSC target {name!r}: protocol must be udp or tcp")
    max_rate = _number(doc, where + ("max_rate",), spec.get("max_rate", 0), lo=0, hi=100_000)
    return OscTarget(str(name), host, port, protocol, max_rate)


def _synth_engine(doc: Located, path: Path, engine: Any, soundfont: Any) -> tuple[str, str]:
    """``synth: {engine: builtin | fluidsynth, soundfont: FILE.sf2}`` beside the targets:
    what plays them (FluidSynth: the shipped General MIDI SoundFont unless one is named,
    a relative path from the mapping's folder)."""
    if engine not in ("builtin", "fluidsynth"):
        raise doc.error(("synth", "engine"), f"synth engine must be builtin or fluidsynth, "
                        f"got {engine!r}")
    if soundfont is None:
        return engine, ""
    if engine != "fluidsynth" or not isinstance(soundfont, str) or not soundfont:
        raise doc.error(("synth", "soundfont"), "soundfont: a .sf2 file, for 'engine: "
                        "fluidsynth'")
    file = Path(soundfont).expanduser()
    file = file if file.is_absolute() else path.parent / file
    if not file.is_file():
        raise doc.error(("synth", "soundfont"), f"no SoundFont at {file}")
    return engine, str(file)


def _synth_target(doc: Located, name: str, spec: Any) -> MidiTarget:
    """``synth: {NAME: {channel: N, program: P}}``: the built-in synth, addressed by routes
    as a MIDI port is (pete_osc.outputs.player); ``program`` is sent first (its patch)."""
    where = ("synth", name)
    spec = {} if spec is None else spec
    if not isinstance(spec, dict):
        raise doc.error(where, f"synth target {name!r}: expected settings such as 'channel: 1'")
    _known(doc, where, spec, _SYNTH_TARGET, "synth target setting")
    channel = _channel(doc, where + ("channel",), spec.get("channel", 1))
    program = spec.get("program")
    if program is not None and (isinstance(program, bool) or not isinstance(program, int)
                                or not 0 <= program <= 127):
        raise doc.error(where + ("program",), f"synth target {name!r}: program must be 0-127")
    return MidiTarget(str(name), "built-in synth", False, channel, doc.line(*where), 0.0,
                      synth=True, program=program)


def _midi_target(doc: Located, name: str, spec: Any, osc: dict) -> MidiTarget:
    where = ("midi", name)
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise doc.error(where, f"MIDI target {name!r}: expected settings such as 'port: Pete Sounds'")
    _known(doc, where, spec, _MIDI_TARGET, "MIDI target setting")
    if "osc" in spec or "note_on" in spec or "note_off" in spec:
        return _osc_notes_target(doc, name, spec, osc)
    port = spec.get("port", DEFAULT_MIDI_PORT)
    if not isinstance(port, str) or not port:
        raise doc.error(where + ("port",), f"MIDI target {name!r}: port must be a name")
    # Our own port is created; any other name means a port that must already exist.
    virtual = _bool(doc, where + ("virtual",), spec.get("virtual", port == DEFAULT_MIDI_PORT))
    channel = _channel(doc, where + ("channel",), spec.get("channel", 1))
    max_rate = _number(doc, where + ("max_rate",), spec.get("max_rate", MIDI_MAX_RATE), lo=0,
                       hi=100_000)
    return MidiTarget(str(name), port, virtual, channel, doc.line(*where), max_rate)


def _osc_notes_target(doc: Located, name: str, spec: dict, osc: dict) -> MidiTarget:
    """``midi: {NAME: {osc: TARGET, note_on: /a/noteon, note_off: /a/noteoff}}``: routes
    address it as a MIDI port (chords, notes: the same rules, no pitch on twice, all
    released at the end), and each note on or off leaves as an OSC message ``ADDRESS NOTE``
    to the OSC target (a receiver that takes notes by OSC, such as Magenta RT 2's
    ``mrt2~``); other MIDI messages are not carried."""
    where = ("midi", name)
    _known(doc, where, spec, {"osc", "note_on", "note_off", "channel"},
           "setting of a MIDI target sent as OSC")
    target = spec.get("osc")
    if target not in osc:
        raise doc.error(where + ("osc",) if "osc" in spec else where,
                        f"MIDI target {name!r}: 'osc:' must name one of the OSC targets "
                        f"({', '.join(osc) or 'none declared'}), got {target!r}")
    on = _address(doc, where + ("note_on",), spec.get("note_on", "/noteon"))
    off = _address(doc, where + ("note_off",), spec.get("note_off", "/noteoff"))
    channel = _channel(doc, where + ("channel",), spec.get("channel", 1))
    return MidiTarget(str(name), f"OSC {target}", False, channel, doc.line(*where), 0.0,
                      osc=str(target), note_on=on, note_off=off)


def _lyria_target(doc: Located, name: str, spec: Any) -> LyriaTarget:
    """``lyria: {NAME: {model: ..., min_interval: 2, url: ...}}`` (the API key comes from
    the environment, GEMINI_API_KEY or GOOGLE_API_KEY, never from a file)."""
    where = ("lyria", name)
    spec = {} if spec is None else spec
    if not isinstance(spec, dict):
        raise doc.error(where, f"lyria target {name!r}: expected settings such as "
                        "'min_interval: 2'")
    _known(doc, where, spec, {"model", "min_interval", "url"}, "lyria target setting")
    if "api_key" in spec or "key" in spec:
        raise doc.error(where, "the API key comes from the environment (GEMINI_API_KEY)")
    model = spec.get("model", LyriaTarget.model)
    url = spec.get("url", "")
    if not isinstance(model, str) or not model or not isinstance(url, str):
        raise doc.error(where, f"lyria target {name!r}: model and url are text")
    interval = _number(doc, where + ("min_interval",), spec.get("min_interval", 2.0), lo=0.2,
                       hi=600)
    return LyriaTarget(str(name), model, interval, url, doc.line(*where))


def _lyria_route(doc: Located, i: int, route) -> None:
    """A route to a lyria target: a prompt: route, or /config/FIELD (LYRIA_CONFIG)."""
    where = ("routes", i)
    if route.kind == "prompt":
        return
    field = route.address.removeprefix("/config/")
    if route.kind != "osc" or not route.address.startswith("/config/") or field not in LYRIA_CONFIG:
        raise doc.error(where, f"a route to the lyria target {route.target!r} is a prompt: "
                        "route or sends to /config/FIELD, FIELD one of "
                        f"{', '.join(LYRIA_CONFIG)}; got {route.address or route.kind!r}")
