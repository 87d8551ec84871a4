"""A mapping file read once into frozen, validated records.

Everything a musician can get wrong in a mapping (an unknown event, an address without a
slash, a CC above 127, a typo in a setting, a target that is not declared) is refused
here, with the file and the line, before any socket or MIDI port opens.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from ..director.located import Located, load_located
from ..director.schema import Director
from ..errors import PeteError

DEFAULT_MIDI_PORT = "Pete Sounds"
CURVES = ("linear", "exponential", "logarithmic")
GLIDES = ("linear", "smooth")
# What an OSC argument template may name, per event kind ("$value" works for all).
FIELDS = {
    "value": "the shaped value (a number), or the word itself when the route has no table",
    "word": "the value as the model wrote it, normalised (a word, a colour name, free text)",
    "index": "the word's position in the DIRECTOR.md vocabulary, 1..n (word events)",
    "r": "red 0..255", "g": "green 0..255", "b": "blue 0..255",
    "h": "hue 0..1", "s": "saturation 0..1", "v": "brightness 0..1",
    "hex": "the colour as #rrggbb",
    "key": "the event's key (energy, mood, ...)",
    "frame": "the frame number",
    "source": "the name of the source the frame came from (--source NAME=...)",
}
# The one placeholder an OSC address may hold: /pete/{source}/energy.
ADDRESS_FIELDS = ("{source}",)
COLOR_PARTS = ("r", "g", "b", "h", "s", "v")
_SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_NOTE = re.compile(r"^([A-Ga-g])([#b]?)(-?\d)$")
_SEMITONE = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}


@dataclass(frozen=True)
class OscTarget:
    name: str
    host: str
    port: int
    protocol: str  # udp | tcp (SLIP framed, OSC 1.1)
    max_rate: float = 0.0  # messages per second at most, the rest coalesced (0: no cap)


@dataclass(frozen=True)
class MidiTarget:
    name: str
    port: str
    virtual: bool  # create the port (others connect to it) instead of opening an existing one
    channel: int  # 1..16, default for routes that do not name one
    line: int = 0  # in the mapping file, for errors found when the port is looked for
    max_rate: float = 0.0  # messages per second at most, the rest coalesced (0: no cap)


@dataclass(frozen=True)
class Shape:
    """Input range -> output range, with a curve; see :mod:`pete_osc.mapping.shape`."""

    lo: float
    hi: float
    out_lo: float
    out_hi: float
    curve: str = "linear"
    steepness: float = 4.0
    invert: bool = False
    clamp: bool = True
    quantize: float = 0.0  # output step; 0 = none


@dataclass(frozen=True)
class ChordSpec:
    """A chord route's inputs (see mapping.harmony): the keys it listens to and the tables."""

    root_key: str
    roots: tuple[int, ...]  # pitch classes around the hue circle
    quality_key: str
    qualities: Mapping[str, tuple[int, ...]]  # word -> intervals
    energy_key: str = ""
    energy_range: tuple[float, float] = (0.0, 1.0)
    voices: tuple[int, int] = (3, 3)
    velocity: tuple[int, int] = (90, 90)
    register_key: str = ""
    register_range: tuple[float, float] = (0.0, 1.0)
    octaves: tuple[int, int] = (3, 3)

    def keys(self) -> tuple[str, ...]:
        return tuple(k for k in (self.root_key, self.quality_key, self.energy_key,
                                 self.register_key) if k)


@dataclass(frozen=True)
class Route:
    """One event key -> one message kind on one target."""

    event: str
    target: str
    kind: str  # osc | cc | note | program
    line: int  # where it is in the mapping file, for messages about it
    shape: Shape
    address: str = ""
    args: tuple = ("$value",)
    channel: int = 1
    number: int = 0  # controller number (cc) or fixed note number (note)
    table: Mapping[str, float] | None = None  # word -> number before shaping
    default: float | None = None  # for words missing from the table; None = send nothing
    part: str = ""  # colour component used as the value
    velocity: int | None = None  # note: fixed velocity (else the shaped value)
    length: float = 0.25  # note length in seconds
    change_only: bool = False
    max_rate: float = 0.0  # sends per second at most; 0 = no limit
    hold: float = 0.0  # seconds a sent value stands before a different one may follow
    # Labels that settle (see shape.Settle): a new value must win the last settle_frames
    # values and keep winning for settle_time seconds; 1 and 0 = off.
    settle_frames: int = 1
    settle_time: float = 0.0
    heartbeat: float = 0.0  # seconds: the last value is sent again after this long (0: off)
    # quantize: beat/bar: changes wait for the clock's next boundary of this many beats
    # (negative: that many bars); 0: off.
    grid: float = 0.0
    glide: str = ""  # "" (off) | linear | smooth
    glide_time: float = 0.5
    exit_value: float | None = None  # sent (in output units) when pete-osc stops
    integer: bool = False  # OSC: send the value as an int (whole-number quantize or table)

    key_type: str = "number"  # the event's type in DIRECTOR.md
    vocabulary: tuple[str, ...] = ()  # a word event's values, for $index
    source: str = ""  # only events from this source (--source NAME=...); "" = any
    # Only while the DAW's state or a context value says so: {playing: true} (see daw.py).
    when: Mapping[str, object] | None = None
    chord: ChordSpec | None = None  # kind "chord": notes from several keys (mapping.harmony)

    @property
    def per_source(self) -> bool:
        """Each source has its own address or argument here, so its own state (a glide,
        change_only, a hold) too; otherwise the sources share the route."""
        return "{source}" in self.address or "$source" in self.args

    def same(self, other: "Route") -> bool:
        """The same route, wherever it moved in the file (for a reloaded mapping)."""
        return replace(self, line=0) == replace(other, line=0)


@dataclass(frozen=True)
class ClockSpec:
    """``clock:``: the beat that quantised routes wait for (see pete_osc.inputs.clock)."""

    source: str = "link"  # link | midi
    quantum: float = 4.0  # beats in a bar
    port: str = ""  # midi: the input port the clock comes in on
    set_tempo: bool = False  # the DIRECTOR tempo key sets the Link session's tempo
    line: int = 0


@dataclass(frozen=True)
class ListenSpec:
    """``listen:``: the OSC input for the DAW's state and /pete/context values (see
    pete_osc.inputs.daw); the command line's --context-port, --context-host, --ableton win."""

    port: int = 11001  # AbletonOSC replies to 11001
    host: str = "127.0.0.1"
    ableton: str | None = None  # AbletonOSC's HOST:PORT, asked to report its state
    line: int = 0


@dataclass(frozen=True)
class MappingConfig:
    path: Path
    osc: Mapping[str, OscTarget]
    midi: Mapping[str, MidiTarget]
    routes: tuple[Route, ...]
    bundle: bool = False  # one OSC bundle per frame and target
    bundle_delay: float = 0.0  # bundle timetag = capture time + this; 0 = immediately
    control_rate: float = 50.0  # Hz, for glides and delayed sends
    clock: ClockSpec | None = None
    listen: ListenSpec | None = None

    def routes_for(self, key: str) -> tuple[Route, ...]:
        return tuple(r for r in self.routes if r.event == key)

_TOP = {"osc", "midi", "routes", "bundle", "bundle_delay", "control_rate", "clock", "listen"}
_OSC_TARGET = {"host", "port", "protocol", "max_rate"}
_MIDI_TARGET = {"port", "virtual", "channel", "max_rate"}
# A MIDI port's cap unless the mapping says: about what a 5-pin MIDI cable carries
# (31,250 baud: ~1,000 three-byte messages a second); IAC and USB drivers drop beyond it.
MIDI_MAX_RATE = 1000.0
_ROUTE_COMMON = {"event", "to", "table", "default", "part", "in", "out", "curve", "steepness",
                 "invert", "clamp", "quantize", "change_only", "max_rate", "hold", "settle", "heartbeat",
                 "glide",
                 "glide_time", "exit", "source", "when"}
_ROUTE_KIND = {
    "osc": {"address", "args"},
    "cc": {"cc", "channel"},
    "note": {"note", "channel", "velocity", "length"},
    "program": {"program", "channel"},
}


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
    midi = {name: _midi_target(doc, name, spec) for name, spec in _section(doc, "midi").items()}
    for name in set(osc) & set(midi):
        raise doc.error(("midi", name), f"target name {name!r} is used for both OSC and MIDI")
    if not osc and not midi:
        raise doc.error((), "no targets: add an 'osc:' or 'midi:' section")
    routes = doc.data.get("routes")
    if not isinstance(routes, list) or not routes:
        raise doc.error(("routes",), "'routes' must be a list of routes (- event: energy ...)")
    checked = tuple(_route(doc, i, spec, director, osc, midi) for i, spec in enumerate(routes))
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
                         delay, rate, clock, listen)


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


_GRID = re.compile(r"^(?:(\d+(?:\.\d+)?)\s+)?(beat|bar)s?$")


def _grid(doc: Located, where: tuple, raw: Any, quantum: float = 4.0) -> float:
    """``quantize: beat | bar | 2 bars | 8 beats`` as beats (bars of 4 beats are scaled to
    the clock's quantum when the route runs)."""
    m = _GRID.match(str(raw).strip().lower())
    if not m or (m.group(1) is not None and float(m.group(1)) <= 0):
        raise doc.error(where, f"quantize must be a number (a value step) or beat, bar, "
                        f"'2 bars', '8 beats' (changes wait for that boundary), got {raw!r}")
    count = float(m.group(1) or 1)
    return count * (1.0 if m.group(2) == "beat" else -1.0)  # negative: bars


def note_number(value: Any) -> int | None:
    """A MIDI note from 0..127 or a name such as C3, F#2, Bb4 (C3 = 60, as in Ableton Live)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if 0 <= value <= 127 else None
    m = _NOTE.match(str(value).strip())
    if not m:
        return None
    letter, accidental, octave = m.groups()
    n = _SEMITONE[letter.lower()] + {"#": 1, "b": -1, "": 0}[accidental] + (int(octave) + 2) * 12
    return n if 0 <= n <= 127 else None


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


def _midi_target(doc: Located, name: str, spec: Any) -> MidiTarget:
    where = ("midi", name)
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise doc.error(where, f"MIDI target {name!r}: expected settings such as 'port: Pete Sounds'")
    _known(doc, where, spec, _MIDI_TARGET, "MIDI target setting")
    port = spec.get("port", DEFAULT_MIDI_PORT)
    if not isinstance(port, str) or not port:
        raise doc.error(where + ("port",), f"MIDI target {name!r}: port must be a name")
    # Our own port is created; any other name means a port that must already exist.
    virtual = _bool(doc, where + ("virtual",), spec.get("virtual", port == DEFAULT_MIDI_PORT))
    channel = _channel(doc, where + ("channel",), spec.get("channel", 1))
    max_rate = _number(doc, where + ("max_rate",), spec.get("max_rate", MIDI_MAX_RATE), lo=0,
                       hi=100_000)
    return MidiTarget(str(name), port, virtual, channel, doc.line(*where), max_rate)


def _route(doc: Located, i: int, spec: Any, director: Director,
           osc: dict, midi: dict) -> Route:
    where = ("routes", i)
    line = doc.line(*where)
    if not isinstance(spec, dict):
        raise doc.error(where, "a route must be settings such as 'event: energy' and 'cc: 74'")
    grid = 0.0
    if isinstance(spec, dict) and isinstance(spec.get("quantize"), str):
        grid = _grid(doc, ("routes", i, "quantize"), spec["quantize"])
        spec = {k: v for k, v in spec.items() if k != "quantize"}
    if isinstance(spec, dict) and "chord" in spec:
        return replace(_chord_route(doc, i, spec, director, osc, midi), grid=grid)
    event = spec.get("event")
    if event not in director.keys:
        raise doc.error(where + ("event",) if "event" in spec else where,
                        f"unknown event {event!r}; {director.path.name} has "
                        f"{', '.join(director.keys)}")
    key = director.keys[event]
    kinds = [k for k, marker in (("osc", "address"), ("cc", "cc"), ("note", "note"),
                                 ("program", "program")) if marker in spec]
    if not kinds:  # a misspelt "address:" is named, not just missing
        allowed = _ROUTE_COMMON.union(*_ROUTE_KIND.values())
        for name in spec:
            if name not in allowed:
                _known(doc, where, {name: None}, allowed, "route setting")
    if len(kinds) != 1:
        raise doc.error(where, "a route sends exactly one of: address (OSC), cc, note, program"
                        + (f"; this one has {', '.join(kinds)}" if kinds else ""))
    kind = kinds[0]
    _known(doc, where, spec, _ROUTE_COMMON | _ROUTE_KIND[kind], f"{kind} route setting")
    target = _target(doc, where, spec.get("to"), kind, osc, midi)
    fields: dict[str, Any] = {}

    table = spec.get("table")
    if kind in ("note", "program") and isinstance(spec.get(kind), dict):
        table = spec[kind]  # "program: {calm: 1, tense: 5}" is the table itself
    if table is not None:
        fields["table"] = _table(doc, where + ("table" if "table" in spec else kind,), table,
                                 key, note=kind == "note")
    if "default" in spec:
        fields["default"] = _number(doc, where + ("default",), spec["default"])
    part = spec.get("part")
    if part is not None:
        if key.type != "color" or part not in COLOR_PARTS:
            raise doc.error(where + ("part",), f"part {part!r}: only colour events have parts "
                            f"({', '.join(COLOR_PARTS)})")
        fields["part"] = part
    numeric = key.type == "number" or table is not None or part is not None
    if kind != "osc" and not numeric:
        raise doc.error(where, f"event {event!r} is a {key.type}: a {kind} route needs a "
                        + ("'table' of words to numbers" if key.type != "color"
                           else "'table' of colour names or 'part: h' (r g b h s v)"))

    if kind == "osc":
        address = spec.get("address")
        if not isinstance(address, str) or not address.startswith("/") or " " in address:
            raise doc.error(where + ("address",), f"OSC address must start with / and have no "
                            f"spaces, got {address!r}")
        bare = address
        for name in ADDRESS_FIELDS:
            bare = bare.replace(name, "x")
        if "{" in bare or "}" in bare:
            raise doc.error(where + ("address",), f"OSC address {address!r}: the only "
                            f"placeholder an address may hold is {', '.join(ADDRESS_FIELDS)}")
        fields["address"] = address
        fields["args"] = _args(doc, where + ("args",), spec.get("args", ["$value"]), key.type)
    else:
        target_channel = midi[target].channel
        fields["channel"] = _channel(doc, where + ("channel",), spec.get("channel", target_channel))
    if kind == "cc":
        fields["number"] = _midi_byte(doc, where + ("cc",), spec["cc"], "controller number")
    if kind == "note":
        if not isinstance(spec["note"], dict):
            n = note_number(spec["note"])
            if n is None:
                raise doc.error(where + ("note",), f"note must be 0..127 or a name like C3 "
                                f"(C3 = 60), got {spec['note']!r}")
            fields["number"] = n
        if "velocity" in spec:
            fields["velocity"] = _midi_byte(doc, where + ("velocity",), spec["velocity"], "velocity", lo=1)
        fields["length"] = _number(doc, where + ("length",), spec.get("length", 0.25), lo=0.01, hi=60)
    if kind == "program" and not isinstance(spec["program"], dict):
        if spec["program"] not in ("value", "$value"):
            raise doc.error(where + ("program",), "program must be a table of words to program "
                            "numbers ({calm: 1, tense: 5}) or 'value'")

    fields["shape"] = _shape(doc, where, spec, key, kind, fields.get("table"), part)
    fields["change_only"] = _bool(doc, where + ("change_only",),
                                  spec.get("change_only", kind == "program"))
    fields["max_rate"] = _number(doc, where + ("max_rate",), spec.get("max_rate", 0), lo=0, hi=1000)
    fields["hold"] = _number(doc, where + ("hold",), spec.get("hold", 0), lo=0, hi=600)
    fields["settle_frames"], fields["settle_time"] = _settle(doc, where, spec.get("settle"))
    fields["heartbeat"] = _number(doc, where + ("heartbeat",), spec.get("heartbeat", 0), lo=0, hi=3600)
    if fields["heartbeat"] and kind == "note":
        raise doc.error(where + ("heartbeat",), "a note route cannot have a heartbeat (it would "
                        "play the note again); use it on CC, program or OSC routes")
    glide = spec.get("glide", False)
    if glide is True:
        glide = "linear"
    if glide not in (False, None) and (glide not in GLIDES or kind in ("note", "program")):
        raise doc.error(where + ("glide",), "glide must be on, off, linear or smooth"
                        + ("; notes and programs cannot glide" if kind in ("note", "program") else ""))
    if glide and kind == "osc" and not numeric:
        raise doc.error(where + ("glide",), f"event {event!r} is a {key.type}: only numbers can glide")
    fields["glide"] = glide or ""
    fields["glide_time"] = _number(doc, where + ("glide_time",), spec.get("glide_time", 0.5),
                                   lo=0.01, hi=60)
    shape_ = fields["shape"]
    fields["integer"] = (shape_.quantize >= 1 and float(shape_.quantize).is_integer()) or (
        table is not None and "in" not in spec and "out" not in spec
        and all(float(v).is_integer() for v in fields["table"].values()))
    if "exit" in spec:
        fields["exit_value"] = _number(doc, where + ("exit",), spec["exit"])
    if "source" in spec:
        source = spec["source"]
        if not isinstance(source, str) or not _SOURCE_NAME.match(source):
            raise doc.error(where + ("source",), f"source must be a source's name (letters, "
                            f"digits, - and _), as in --source stage=0; got {source!r}")
        fields["source"] = source
    if "when" in spec:
        fields["when"] = _when(doc, where + ("when",), spec["when"])
    return Route(event, target, kind, line, key_type=key.type, vocabulary=key.values, grid=grid,
                 **fields)


# Red = C, then round the hue circle by fifths: neighbouring colours, neighbouring keys.
CIRCLE_OF_FIFTHS = ("C", "G", "D", "A", "E", "B", "F#", "C#", "G#", "D#", "A#", "F")


def _chord_route(doc: Located, i: int, spec: dict, director: Director, osc: dict,
                 midi: dict) -> Route:
    """``- chord: {root: ..., quality: ..., energy: ..., register: ...}`` to a MIDI target."""
    from .harmony import QUALITIES, pitch_class

    where = ("routes", i)
    _known(doc, where, spec, {"chord", "to", "channel", "source", "when"}, "chord route setting")
    chord = spec["chord"]
    if not isinstance(chord, dict):
        raise doc.error(where + ("chord",), "chord needs root: and quality: (and may have "
                        "energy: and register:)")
    _known(doc, where + ("chord",), chord, {"root", "quality", "energy", "register"}, "chord setting")

    def part(name: str, kind: str, settings: set[str], required: bool):
        at = where + ("chord", name)
        raw = chord.get(name)
        if raw is None:
            if required:
                raise doc.error(where + ("chord",), f"chord needs {name}: {{from: KEY, ...}}")
            return None, {}, at
        if not isinstance(raw, dict):
            raise doc.error(at, f"chord {name}: expected settings such as 'from: {kind}'")
        _known(doc, at, raw, {"from"} | settings, f"chord {name} setting")
        key = director.keys.get(raw.get("from"))
        wanted = {"color": "color", "word": "word", "number": "number"}[kind]
        if key is None or key.type != wanted:
            raise doc.error(at + ("from",) if "from" in raw else at,
                            f"chord {name}: 'from' must name a {wanted} key of "
                            f"{director.path.name}, got {raw.get('from')!r}")
        return key, raw, at

    root_key, root, at = part("root", "color", {"notes"}, True)
    names = root.get("notes", list(CIRCLE_OF_FIFTHS))
    roots = [pitch_class(str(n)) for n in names] if isinstance(names, list) and names else [None]
    if None in roots:
        raise doc.error(at + ("notes",), "chord root notes must be a list of note names "
                        "such as [C, G, D, A, E, B, F#, C#, G#, D#, A#, F]")
    quality_key, quality, at = part("quality", "word", {"table"}, True)
    table = quality.get("table")
    if not isinstance(table, dict) or not table:
        raise doc.error(at, f"chord quality: needs a table of {quality_key.name} words to chord "
                        "qualities ({calm: maj7, tense: dim})")
    qualities = {}
    for word, name in table.items():
        if str(word).lower() not in quality_key.values:
            raise doc.error(at + ("table", word), f"chord quality: {word!r} is not a "
                            f"{quality_key.name} of {director.path.name}")
        if str(name) not in QUALITIES:
            raise doc.error(at + ("table", word), f"unknown chord quality {name!r}; known: "
                            f"{', '.join(QUALITIES)}")
        qualities[str(word).lower()] = QUALITIES[str(name)]
    fields: dict[str, Any] = {}
    energy_key, energy, at = part("energy", "number", {"voices", "velocity"}, False)
    if energy_key is not None:
        fields.update(energy_key=energy_key.name, energy_range=(energy_key.min, energy_key.max),
                      voices=_span(doc, at + ("voices",), energy.get("voices", [3, 3]), 1, 8),
                      velocity=_span(doc, at + ("velocity",), energy.get("velocity", [90, 90]), 1, 127))
    register_key, register, at = part("register", "number", {"octaves"}, False)
    if register_key is not None:
        fields.update(register_key=register_key.name,
                      register_range=(register_key.min, register_key.max),
                      octaves=_span(doc, at + ("octaves",), register.get("octaves", [3, 3]), -1, 7))
    spec_ = ChordSpec(root_key.name, tuple(roots), quality_key.name, MappingProxyType(qualities),
                      **fields)
    target = _target(doc, where, spec.get("to"), "note", osc, midi)
    channel = _channel(doc, where + ("channel",), spec.get("channel", midi[target].channel))
    source = spec.get("source", "")
    return Route(event=root_key.name, target=target, kind="chord", line=doc.line(*where),
                 shape=Shape(0.0, 1.0, 0.0, 127.0), channel=channel, chord=spec_,
                 key_type="color", source=str(source) if source else "",
                 when=_when(doc, where + ("when",), spec["when"]) if "when" in spec else None)


def _span(doc: Located, where: tuple, raw: Any, lo: int, hi: int) -> tuple[int, int]:
    if (not isinstance(raw, list) or len(raw) != 2 or
            not all(isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi for v in raw)):
        raise doc.error(where, f"expected [low, high], whole numbers {lo}..{hi}, got {raw!r}")
    return raw[0], raw[1]


def _when(doc: Located, where: tuple, when: Any) -> Mapping[str, object]:
    if not isinstance(when, dict) or not when:
        raise doc.error(where, "when: maps state names to values, such as {playing: true} "
                        "(the DAW's tempo, playing, scene, track, scene_name, track_name, or a "
                        "/pete/context/NAME)")
    for name, value in when.items():
        if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9_]{1,32}", name):
            raise doc.error(where + (name,), f"when: {name!r} is not a state name")
        if not isinstance(value, (bool, int, float, str)):
            raise doc.error(where + (name,), f"when: {name} must be one value, got {value!r}")
    return MappingProxyType(dict(when))


def _target(doc: Located, where: tuple, name: Any, kind: str, osc: dict, midi: dict) -> str:
    pool, label = (osc, "OSC") if kind == "osc" else (midi, "MIDI")
    if name is None:
        if len(pool) == 1:
            return next(iter(pool))
        raise doc.error(where, f"this {kind} route needs 'to:', one of the {label} targets "
                        f"({', '.join(pool) or 'none declared'})")
    if name not in pool:
        raise doc.error(where + ("to",), f"'to: {name}' is not one of the {label} targets "
                        f"({', '.join(pool) or 'none declared'})")
    return str(name)


def _table(doc: Located, where: tuple, table: Any, key, note: bool) -> Mapping[str, float]:
    if not isinstance(table, dict) or not table:
        raise doc.error(where, "a table maps words to numbers: {calm: 1, tense: 5}")
    out = {}
    for word, value in table.items():
        word_s = str(word).lower()
        if key.type == "word" and word_s not in key.values:
            raise doc.error(where + (word,), f"{word!r} is not a {key.name} in the DIRECTOR.md "
                            f"schema ({', '.join(key.values)})")
        if note:
            n = note_number(value)
            if n is None:
                raise doc.error(where + (word,), f"note for {word!r} must be 0..127 or a name "
                                f"like C3, got {value!r}")
            out[word_s] = float(n)
        else:
            out[word_s] = _number(doc, where + (word,), value)
    return MappingProxyType(out)


def _shape(doc: Located, where: tuple, spec: dict, key, kind: str, table, part) -> Shape:
    if "in" in spec:
        lo, hi = _pair(doc, where + ("in",), spec["in"])
    elif table is not None:
        numbers = list(table.values()) + ([float(spec["default"])] if "default" in spec else [])
        lo, hi = min(numbers), max(numbers)
    elif part is not None:
        lo, hi = (0.0, 255.0) if part in "rgb" else (0.0, 1.0)
    elif key.type == "number":
        lo, hi = key.min, key.max
    else:
        lo, hi = 0.0, 1.0
    if lo == hi:
        hi = lo + 1.0
    midi_range = {"cc": (0.0, 127.0), "note": (1.0, 127.0), "program": (0.0, 127.0)}
    # Table numbers are already in output units (CC values, notes, programs).
    default_out = (lo, hi) if table is not None else midi_range.get(kind, (lo, hi))
    out_lo, out_hi = _pair(doc, where + ("out",), spec["out"]) if "out" in spec else default_out
    if kind in midi_range:
        label = "out" if "out" in spec else ("table" if "table" in spec else kind)
        for v in (out_lo, out_hi):
            if not 0 <= v <= 127:
                raise doc.error(where + (label,), f"{kind} values are 0..127; "
                                f"{'out' if 'out' in spec else 'the table'} has {v:g}")
    curve = str(spec.get("curve", "linear")).lower()
    curve = {"exp": "exponential", "log": "logarithmic", "lin": "linear"}.get(curve, curve)
    if curve not in CURVES:
        raise doc.error(where + ("curve",), f"curve must be one of {', '.join(CURVES)}, got {curve!r}")
    return Shape(
        lo, hi, out_lo, out_hi, curve,
        steepness=_number(doc, where + ("steepness",), spec.get("steepness", 4.0), lo=0.1, hi=20),
        invert=_bool(doc, where + ("invert",), spec.get("invert", False)),
        clamp=_bool(doc, where + ("clamp",), spec.get("clamp", True)),
        quantize=_number(doc, where + ("quantize",), spec.get("quantize", 0), lo=0),
    )


def _args(doc: Located, where: tuple, args: Any, kind: str) -> tuple:
    if not isinstance(args, list):
        args = [args]
    out = []
    for i, arg in enumerate(args):
        if isinstance(arg, str) and arg.startswith("$"):
            name = arg[1:]
            if name not in FIELDS:
                raise doc.error(where + (i,), f"unknown field {arg!r}; fields are "
                                + ", ".join("$" + f for f in FIELDS))
            if name in COLOR_PARTS + ("hex",) and kind != "color":
                raise doc.error(where + (i,), f"{arg} only exists for colour events")
            if name == "index" and kind != "word":
                raise doc.error(where + (i,), "$index only exists for word events")
        elif not isinstance(arg, (int, float, str)) or isinstance(arg, bool):
            raise doc.error(where + (i,), f"an OSC argument is a number, a string or a $field, got {arg!r}")
        out.append(arg)
    return tuple(out)


def _known(doc: Located, where: tuple, spec: dict, allowed: set, what: str) -> None:
    for name in spec:
        if name not in allowed:
            hint = _closest(str(name), allowed)
            raise doc.error(where + (name,), f"unknown {what} {name!r}"
                            + (f" (did you mean {hint!r}?)" if hint else "")
                            + f"; expected one of {', '.join(sorted(allowed))}")


def _closest(word: str, options: set) -> str | None:
    import difflib

    found = difflib.get_close_matches(word, sorted(options), n=1, cutoff=0.6)
    return found[0] if found else None


def _settle(doc, where: tuple, raw) -> tuple[int, float]:
    """``settle: 3`` (a majority of the last 3 frames) or ``settle: {frames: 3, time: 1}``
    (and the new value kept winning for 1 s)."""
    if raw is None:
        return 1, 0.0
    if isinstance(raw, dict):
        for name in raw:
            if name not in ("frames", "time"):
                raise doc.error(where + ("settle", name), f"unknown settle setting {name!r}; "
                                "expected frames (a vote over that many frames) or time (seconds)")
        frames = raw.get("frames", 1)
        time = _number(doc, where + ("settle", "time"), raw.get("time", 0), lo=0, hi=600)
        at = where + ("settle", "frames")
    else:
        frames, time, at = raw, 0.0, where + ("settle",)
    if not isinstance(frames, int) or isinstance(frames, bool) or not 1 <= frames <= 100:
        raise doc.error(at, f"settle must be a number of frames 1..100 (a majority vote over "
                        f"them) or {{frames: N, time: SECONDS}}, got {frames!r}")
    return frames, float(time)


def _bool(doc: Located, where: tuple, value: Any) -> bool:
    if not isinstance(value, bool):
        raise doc.error(where, f"expected yes/no (true/false, on/off), got {value!r}")
    return value


def _number(doc: Located, where: tuple, value: Any, lo: float = -math.inf,
            hi: float = math.inf) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not lo <= value <= hi:
        span = "" if (lo, hi) == (-math.inf, math.inf) else (
            f" >= {lo:g}" if hi == math.inf else f" in {lo:g}..{hi:g}")
        raise doc.error(where, f"expected a number{span}, got {value!r}")
    return float(value)


def _pair(doc: Located, where: tuple, value: Any) -> tuple[float, float]:
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise doc.error(where, f"expected two numbers such as [0, 127], got {value!r}")
    return float(value[0]), float(value[1])


def _channel(doc: Located, where: tuple, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 16:
        raise doc.error(where, f"MIDI channel must be 1..16, got {value!r}")
    return value


def _midi_byte(doc: Located, where: tuple, value: Any, what: str, lo: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= 127:
        raise doc.error(where, f"{what} must be {lo}..127, got {value!r}")
    return value


def _int_or(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        return text
