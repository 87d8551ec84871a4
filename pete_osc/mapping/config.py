"""A mapping file's records: targets, routes and their settings, frozen. The loader
(load.py, routes.py, fields.py) makes them from the file, checked."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

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
    synth: bool = False  # the built-in synth (a mapping's synth: section), not a port
    program: int | None = None  # synth: the program sent when it opens (its patch)
    engine: str = ""  # synth: what plays it, builtin | fluidsynth (the synth: section's)
    soundfont: str = ""  # synth, fluidsynth: a .sf2 file ("": the shipped one)
    # osc: the notes go as OSC messages to this OSC target instead (a receiver that takes
    # notes by OSC, such as Magenta RT 2's mrt2~): ADDRESS NOTE at note_on / note_off.
    osc: str = ""
    note_on: str = ""
    note_off: str = ""


# A Lyria target's /config/FIELD addresses: its musicGenerationConfig fields and their
# ranges (scale: 0..11, the keys from C round the chromatic circle, or a Scale name).
LYRIA_CONFIG = {"bpm": (60, 200), "density": (0, 1), "brightness": (0, 1), "guidance": (0, 6),
                "temperature": (0, 3), "top_k": (1, 1000), "seed": (0, 2**31 - 1),
                "scale": (0, 11), "mute_bass": (0, 1), "mute_drums": (0, 1),
                "only_bass_and_drums": (0, 1)}


@dataclass(frozen=True)
class LyriaTarget:
    """``lyria:``: a Lyria RealTime session (Google's live music model over a WebSocket,
    through the google-genai client; see pete_osc.outputs.lyria). Routes address it as an
    OSC target: ``prompt:`` routes (its weighted prompts) and ``/config/FIELD`` (its
    musicGenerationConfig)."""

    name: str
    model: str = "models/lyria-realtime-exp"
    min_interval: float = 2.0  # seconds between two changes sent, at least
    url: str = ""  # the API's base URL ("": Google's)
    line: int = 0


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
    step: float = 0.0  # the output step (quantize: NUMBER in the file); 0 = none


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
class PromptSpec:
    """A prompt route's settings (``prompt:`` in a mapping; see mapping.prompts)."""

    template: str  # "{mood} {color} {scene}"
    keys: tuple[str, ...]  # the keys it names, in order
    slots: tuple[int, ...] = (0, 1)  # the receiver's prompt slots the texts take turns in
    weight: float = 1.0  # a prompt's full weight
    fade: float = 4.0  # seconds from one prompt to the next (0: at once)
    step: float = 0.25  # seconds between two weight messages of a slot


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
    prompt: PromptSpec | None = None  # kind "prompt": weighted prompts (mapping.prompts)

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
    lyria: Mapping[str, LyriaTarget] = field(default_factory=lambda: MappingProxyType({}))
