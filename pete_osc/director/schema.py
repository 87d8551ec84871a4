"""DIRECTOR.md: the system prompt and the schema of what the model may answer, in one file.

The file has two fenced blocks: ```` ```prompt ```` (the system prompt, whose ``{keys}``
line is written from the schema) and ```` ```yaml schema ```` (the message types). Both
are read once into a frozen :class:`Director`. A broken schema is refused with the file
and the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from ..errors import PeteError
from .located import Located, load_located

TYPES = ("number", "word", "color", "text")
_FENCE = re.compile(r"^(```+|~~~+)\s*(.*?)\s*$")
_KEY_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class KeySpec:
    """One message type: its name, value type and what values it allows."""

    name: str
    type: str
    ask: str = ""
    min: float | None = None
    max: float | None = None
    levels: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    values: tuple[str, ...] = ()
    aliases: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    max_words: int = 4
    # "" for the model's keys; else what is measured from the pixels of every captured
    # frame (see pete_osc.capture.pixels): brightness, motion, warmth or color.
    measure: str = ""
    # The model may leave the key out of an answer (the grammar lets it skip the line).
    optional: bool = False

    def describe(self) -> str:
        """What the prompt asks for this key (``{values}`` expands to the vocabulary)."""
        if self.ask:
            return self.ask.replace("{values}", ", ".join(self.values))
        if self.type == "number":
            return f"a number from {self.min:g} to {self.max:g}"
        if self.type == "word":
            return "one of " + ", ".join(self.values)
        if self.type == "color":
            return "a colour name"
        return f"at most {self.max_words} words"


@dataclass(frozen=True)
class Director:
    """DIRECTOR.md read once: the prompt to send and the schema to parse against."""

    path: Path
    prompt: str
    instruction: str
    max_lines: int
    keys: Mapping[str, KeySpec]  # every key: the model's and those measured from pixels
    colors: Mapping[str, str]  # extra colour names -> "#rrggbb"
    previous: int = 1  # answers of the same source that {previous} holds, newest last
    # The {placeholders} of the context and the instruction, filled in per frame (see
    # pete_osc.director.prompt).
    placeholders: tuple[str, ...] = ()
    # The user message's text before the image, per frame: prefilled as soon as it is
    # known (after the previous answer), so it costs the next frame nothing.
    context: str = ""

    @property
    def model_keys(self) -> Mapping[str, KeySpec]:
        """The keys the model is asked for (the prompt, the grammar, the parser)."""
        return {n: k for n, k in self.keys.items() if not k.measure}

    @property
    def pixel_keys(self) -> Mapping[str, KeySpec]:
        """The keys measured from the pixels at camera rate (``from: pixels``)."""
        return {n: k for n, k in self.keys.items() if k.measure}


def load_director(path: str | Path) -> Director:
    """Read and validate a DIRECTOR.md file; raise PeteError naming file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PeteError(f"{path}: cannot read the DIRECTOR file: {exc.strerror}") from None
    return parse_director(text, path)


def parse_director(text: str, path: Path = Path("DIRECTOR.md")) -> Director:
    """Parse DIRECTOR.md text (see :func:`load_director`)."""
    blocks = _fenced_blocks(text, path)
    if "prompt" not in blocks:
        raise PeteError(f"{path}:1: no ```prompt block: the system prompt goes in one")
    if "schema" not in blocks:
        raise PeteError(f"{path}:1: no ```yaml schema block: the message types go in one")
    prompt_line, prompt_template = blocks["prompt"]
    schema_line, schema_text = blocks["schema"]
    doc = load_located(schema_text, path, line_offset=schema_line)
    if not isinstance(doc.data, dict):
        raise PeteError(f"{path}:{schema_line + 1}: the schema block must be a YAML mapping")
    _check_known(doc, (), doc.data, {"instruction", "context", "max_lines", "keys", "colors",
                                          "previous"})
    keys = _read_keys(doc)
    colors = _read_colors(doc)
    instruction = str(doc.data.get("instruction", "Describe this frame.")).strip()
    context = doc.data.get("context", "")
    if not isinstance(context, str):
        raise doc.error(("context",), f"context must be text, got {context!r}")
    context = context.strip()
    asked = [k for k in keys.values() if not k.measure]
    if not asked:
        raise doc.error(("keys",), "every key is measured from the pixels: the model needs "
                        "at least one key to answer")
    max_lines = doc.data.get("max_lines", len(asked))
    if not isinstance(max_lines, int) or isinstance(max_lines, bool) or max_lines < 1:
        raise doc.error(("max_lines",), f"max_lines must be a whole number >= 1, got {max_lines!r}")
    required = [k.name for k in asked if not k.optional]
    if max_lines < len(required):
        raise doc.error(("max_lines",), f"max_lines is {max_lines} but {len(required)} keys "
                        "must be in every answer; raise it or mark keys 'optional: true'")
    key_lines = "\n".join(f"{k.name}: {k.describe()}" for k in asked)
    if "{keys}" not in prompt_template:
        raise PeteError(
            f"{path}:{prompt_line}: the prompt has no {{keys}} line, so the model would not "
            "be asked for the schema's keys"
        )
    _check_prompt_placeholders(prompt_template, prompt_line, path)
    prompt = prompt_template.replace("{keys}", key_lines).strip()
    placeholders = (_per_frame_placeholders(doc, "context", context)
                    + _per_frame_placeholders(doc, "instruction", instruction))
    previous = doc.data.get("previous", 1)
    if not isinstance(previous, int) or isinstance(previous, bool) or not 0 <= previous <= 10:
        raise doc.error(("previous",), f"previous must be a whole number 0..10, got {previous!r}")
    return Director(
        path=path,
        prompt=prompt,
        instruction=instruction,
        max_lines=max_lines,
        keys=MappingProxyType(keys),
        colors=MappingProxyType(colors),
        previous=previous,
        placeholders=placeholders,
        context=context,
    )


_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)\}")
# What an instruction may hold, filled in for each frame (pete_osc.director.prompt).
PER_FRAME = ("previous", "daw.tempo", "daw.playing", "daw.scene", "daw.track",
             "daw.scene_name", "daw.track_name")


def _check_prompt_placeholders(template: str, first_line: int, path: Path) -> None:
    """The prompt block is the cached prefix: only {keys} (written once) belongs there."""
    for number, line in enumerate(template.splitlines(), first_line + 1):
        for m in _PLACEHOLDER.finditer(line):
            if m.group(1) != "keys":
                where = ("; values that change per frame go in the schema's context: "
                         "(before the image) or instruction: (after it), so the prompt's "
                         "cache is kept"
                         if _per_frame(m.group(1)) else "")
                raise PeteError(f"{path}:{number}: unknown placeholder {m.group(0)} in the "
                                f"prompt; it takes {{keys}}{where}")


def _per_frame_placeholders(doc: Located, field: str, text: str) -> tuple[str, ...]:
    names = []
    for m in _PLACEHOLDER.finditer(text):
        if not _per_frame(m.group(1)):
            raise doc.error((field,), f"unknown placeholder {m.group(0)} in the "
                            f"{field}; it takes {{{'}, {'.join(PER_FRAME)}}} and "
                            "{context.NAME}")
        names.append(m.group(1))
    return tuple(names)


def _per_frame(name: str) -> bool:
    return name in PER_FRAME or re.fullmatch(r"context\.[a-z0-9_]+", name) is not None


def _fenced_blocks(text: str, path: Path) -> dict[str, tuple[int, str]]:
    """Return {"prompt": (line, text), "schema": (line, text)} of the fenced blocks.

    The line is that of the opening fence, so a YAML line n inside is file line + n.
    """
    blocks: dict[str, tuple[int, str]] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, info = m.group(1), m.group(2).split()
        start = i
        i += 1
        body = []
        while i < len(lines) and not lines[i].startswith(fence):
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise PeteError(f"{path}:{start + 1}: code block opened here is never closed")
        i += 1
        name = "prompt" if info[:1] == ["prompt"] else "schema" if "schema" in info else None
        if name:
            if name in blocks:
                raise PeteError(f"{path}:{start + 1}: a second {name} block; keep one")
            blocks[name] = (start + 1, "\n".join(body))
    return blocks


def _check_known(doc: Located, key_path: tuple, mapping: dict, allowed: set[str]) -> None:
    for key in mapping:
        if key not in allowed:
            raise doc.error(
                key_path + (key,),
                f"unknown setting {key!r}; expected one of {', '.join(sorted(allowed))}",
            )


def _read_keys(doc: Located) -> dict[str, KeySpec]:
    raw = doc.data.get("keys")
    if not isinstance(raw, dict) or not raw:
        raise doc.error(("keys",), "'keys' must map each message type to its settings")
    keys = {}
    for name, spec in raw.items():
        where = ("keys", name)
        if not isinstance(name, str) or not _KEY_NAME.match(name):
            raise doc.error(where, f"key name {name!r} must be lower-case letters, digits or _")
        if not isinstance(spec, dict):
            raise doc.error(where, f"key {name!r} needs settings such as 'type: number'")
        key = _read_key(doc, name, spec)
        optional = spec.get("optional", False)
        if not isinstance(optional, bool):
            raise doc.error(where + ("optional",), f"key {name!r}: optional must be true or "
                            f"false, got {optional!r}")
        keys[name] = replace(key, optional=optional) if optional else key
    return keys


_COMMON = {"type", "ask", "optional"}
_ALLOWED = {
    "number": _COMMON | {"min", "max", "levels"},
    "word": _COMMON | {"values", "aliases"},
    "color": _COMMON,
    "text": _COMMON | {"max_words"},
}


# What can be measured from the pixels, with its type and range (see pete_osc.capture.pixels).
MEASURES = {"brightness": ("number", 0.0, 1.0), "motion": ("number", 0.0, 1.0),
            "warmth": ("number", -1.0, 1.0), "color": ("color", None, None)}


def _read_key(doc: Located, name: str, spec: dict) -> KeySpec:
    where = ("keys", name)
    if "from" in spec:
        return _pixel_key(doc, name, spec)
    kind = spec.get("type")
    if kind not in TYPES:
        raise doc.error(where + ("type",), f"key {name!r}: type must be one of {', '.join(TYPES)}, got {kind!r}")
    _check_known(doc, where, spec, _ALLOWED[kind])
    ask = str(spec.get("ask", ""))
    if kind == "number":
        lo, hi = spec.get("min"), spec.get("max")
        for label, v in (("min", lo), ("max", hi)):
            if not _is_number(v):
                raise doc.error(where + (label,), f"key {name!r}: {label} must be a number, got {v!r}")
        if lo >= hi:
            raise doc.error(where + ("max",), f"key {name!r}: max ({hi}) must be above min ({lo})")
        levels = spec.get("levels") or {}
        if not isinstance(levels, dict):
            raise doc.error(where + ("levels",), f"key {name!r}: levels must map words to numbers")
        for word, v in levels.items():
            if not _is_number(v) or not lo <= v <= hi:
                raise doc.error(
                    where + ("levels", word),
                    f"key {name!r}: level {word!r} must be a number in {lo:g}..{hi:g}, got {v!r}",
                )
        return KeySpec(name, kind, ask, float(lo), float(hi),
                       MappingProxyType({str(w).lower(): float(v) for w, v in levels.items()}))
    if kind == "word":
        values = spec.get("values")
        if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
            raise doc.error(where + ("values",), f"key {name!r}: values must be a list of words")
        aliases = spec.get("aliases") or {}
        vocab = {v.lower() for v in values}
        if not isinstance(aliases, dict):
            raise doc.error(where + ("aliases",), f"key {name!r}: aliases must map words to values")
        for alias, target in aliases.items():
            if str(target).lower() not in vocab:
                raise doc.error(
                    where + ("aliases", alias),
                    f"key {name!r}: alias {alias!r} points to {target!r}, which is not in values",
                )
        return KeySpec(name, kind, ask, values=tuple(v.lower() for v in values),
                       aliases=MappingProxyType({str(a).lower(): str(t).lower() for a, t in aliases.items()}))
    if kind == "text":
        max_words = spec.get("max_words", 4)
        if not isinstance(max_words, int) or isinstance(max_words, bool) or max_words < 1:
            raise doc.error(where + ("max_words",), f"key {name!r}: max_words must be a whole number >= 1")
        return KeySpec(name, kind, ask, max_words=max_words)
    return KeySpec(name, kind, ask)


def _pixel_key(doc: Located, name: str, spec: dict) -> KeySpec:
    """``from: pixels`` with a ``measure``: a key computed from every captured frame."""
    where = ("keys", name)
    if spec.get("from") != "pixels":
        raise doc.error(where + ("from",), f"key {name!r}: 'from' can only be 'pixels' (keys "
                        "without it are the model's)")
    _check_known(doc, where, spec, {"from", "measure", "type", "ask"})
    measure = spec.get("measure")
    if measure not in MEASURES:
        raise doc.error(where + ("measure",) if "measure" in spec else where,
                        f"key {name!r}: measure must be one of {', '.join(MEASURES)}, "
                        f"got {measure!r}")
    kind, lo, hi = MEASURES[measure]
    if spec.get("type", kind) != kind:
        raise doc.error(where + ("type",), f"key {name!r}: {measure} is a {kind}")
    return KeySpec(name, kind, str(spec.get("ask", "")), lo, hi, measure=measure)


def _read_colors(doc: Located) -> dict[str, str]:
    raw = doc.data.get("colors") or {}
    if not isinstance(raw, dict):
        raise doc.error(("colors",), "'colors' must map colour names to hex codes")
    out = {}
    for name, hexcode in raw.items():
        if not isinstance(hexcode, str) or not re.fullmatch(r"#[0-9a-fA-F]{6}", hexcode):
            raise doc.error(("colors", name), f"colour {name!r} must be a hex code like '#ffbf00', got {hexcode!r}")
        out[str(name).lower()] = hexcode.lower()
    return out


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
