"""One route of a mapping file checked into a :class:`~pete_osc.mapping.config.Route`
(chord routes included), each mistake named with its file and line."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType
from typing import Any

from ..capture.feeds import SOURCE_NAME
from ..director.located import Located
from ..director.schema import Director
from .config import (
    ADDRESS_FIELDS,
    COLOR_PARTS,
    GLIDES,
    ChordSpec,
    PromptSpec,
    Route,
    Shape,
)
from .fields import (
    _args,
    _bool,
    _channel,
    _grid,
    _known,
    _midi_byte,
    _number,
    _settle,
    _shape,
    _span,
    _table,
    _target,
    _when,
    note_number,
)

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
    if isinstance(spec, dict) and "prompt" in spec:
        if grid:
            raise doc.error(where + ("prompt",), "a prompt route fades by time (fade:), "
                            "it cannot wait for the beat: leave quantize out")
        return _prompt_route(doc, i, spec, director, osc)
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
        fields["address"] = _address(doc, where + ("address",), spec.get("address"))
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
    fields["integer"] = (shape_.step >= 1 and float(shape_.step).is_integer()) or (
        table is not None and "in" not in spec and "out" not in spec
        and all(float(v).is_integer() for v in fields["table"].values()))
    if "exit" in spec:
        fields["exit_value"] = _number(doc, where + ("exit",), spec["exit"])
    if "source" in spec:
        source = spec["source"]
        if not isinstance(source, str) or not SOURCE_NAME.match(source):
            raise doc.error(where + ("source",), f"source must be a source's name (letters, "
                            f"digits, - and _), as in --source stage=0; got {source!r}")
        fields["source"] = source
    if "when" in spec:
        fields["when"] = _when(doc, where + ("when",), spec["when"])
    return Route(event, target, kind, line, key_type=key.type, vocabulary=key.values, grid=grid,
                 **fields)


def _address(doc: Located, where: tuple, address: Any) -> str:
    if not isinstance(address, str) or not address.startswith("/") or " " in address:
        raise doc.error(where, f"OSC address must start with / and have no spaces, got "
                        f"{address!r}")
    bare = address
    for name in ADDRESS_FIELDS:
        bare = bare.replace(name, "x")
    if "{" in bare or "}" in bare:
        raise doc.error(where, f"OSC address {address!r}: the only placeholder an address "
                        f"may hold is {', '.join(ADDRESS_FIELDS)}")
    return address


_PROMPT = {"prompt", "to", "address", "slots", "weight", "fade", "step", "settle", "source",
           "when"}


def _prompt_route(doc: Located, i: int, spec: dict, director: Director, osc: dict) -> Route:
    """``- prompt: "{mood} {color} {scene}"`` to an OSC target: weighted prompts in the
    receiver's slots, a change crossfaded (see mapping.prompts)."""
    from .prompts import template_keys

    where = ("routes", i)
    _known(doc, where, spec, _PROMPT, "prompt route setting")
    template = spec["prompt"]
    try:
        keys = template_keys(template) if isinstance(template, str) else ()
    except ValueError as exc:
        raise doc.error(where + ("prompt",), f"prompt {template!r}: {exc}") from None
    if not keys:
        raise doc.error(where + ("prompt",), "prompt is a text naming keys in braces, such as "
                        f"\"{{mood}} {{color}} {{scene}}\"; got {template!r}")
    for key in keys:
        if key not in director.keys:
            raise doc.error(where + ("prompt",), f"prompt names {{{key}}}, which is not a key "
                            f"of {director.path.name} ({', '.join(director.keys)})")
    slots = spec.get("slots", [0, 1])
    if (not isinstance(slots, list) or len(slots) < 2 or len(set(slots)) != len(slots)
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in slots)):
        raise doc.error(where + ("slots",), "slots: the receiver's prompt slots the texts take "
                        f"turns in, two or more whole numbers such as [0, 1]; got {slots!r}")
    prompt = PromptSpec(
        template, keys, tuple(slots),
        weight=_number(doc, where + ("weight",), spec.get("weight", 1.0), lo=0.001, hi=1000),
        fade=_number(doc, where + ("fade",), spec.get("fade", 4.0), lo=0, hi=600),
        step=_number(doc, where + ("step",), spec.get("step", 0.25), lo=0.02, hi=60))
    target = _target(doc, where, spec.get("to"), "osc", osc, {})
    settle_frames, settle_time = _settle(doc, where, spec.get("settle"))
    source = spec.get("source", "")
    first = director.keys[keys[0]]  # (what learn mode sweeps)
    return Route(event=keys[0], target=target, kind="prompt", line=doc.line(*where),
                 shape=Shape(first.min if first.type == "number" else 0.0,
                             first.max if first.type == "number" else 1.0, 0.0, 1.0),
                 prompt=prompt, key_type=first.type, vocabulary=first.values,
                 address=_address(doc, where + ("address",), spec.get("address", "/prompt")),
                 args=(), settle_frames=settle_frames, settle_time=settle_time,
                 source=str(source) if source else "",
                 when=_when(doc, where + ("when",), spec["when"]) if "when" in spec else None)


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
