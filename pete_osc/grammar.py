"""What a frame's answer may be, as a grammar built from DIRECTOR.md's schema.

``lark_grammar`` writes it for llguidance (the constraint the local engines apply while
decoding); ``answer_regex`` writes the same language as one regular expression, for
servers that take a guided regex (vLLM, SGLang). Every value the grammar allows is one
the parser accepts, so a constrained answer has no rejected lines.

The answer: 1 to ``max_lines`` lines ``key: value`` with keys from the schema, each ended
by a newline. Values by type:
- number: its level words, or a number in [min, max] (integers; with up to two decimals
  when the range is 10 wide or less, as 0..1 is);
- word: one of its values;
- color: a CSS colour name, one of DIRECTOR.md's stage colours, or #rrggbb;
- text: 1 to max_words words of 1 to 16 lower-case letters.
"""

from __future__ import annotations

import json
import re

import webcolors

from .director import Director, KeySpec

# Enumerating integers keeps the range exact; past this many, digits are only bounded in
# count (and the parser still refuses what is out of range).
MAX_ENUMERATED = 2000
# Letters per free-text word: a loose model must not spell one word for ever.
MAX_WORD = 16


def lark_grammar(director: Director) -> str:
    """The llguidance Lark grammar of one frame's answer."""
    rules = [f"start: line{{1,{director.max_lines}}}",
             "line: (" + " | ".join(f"k_{name}" for name in director.model_keys) + ') "\\n"']
    for name, spec in director.model_keys.items():
        rules.append(f"k_{name}: {_lark_string(name + ': ')} ({_lark_value(spec, director)})")
    return "\n".join(rules) + "\n"


def answer_regex(director: Director) -> str:
    """The same language as one regular expression (for servers' guided decoding)."""
    line = "(?:" + "|".join(re.escape(name + ": ") + "(?:" + value_regex(spec, director) + ")"
                            for name, spec in director.model_keys.items()) + ")\n"
    return f"(?:{line}){{1,{director.max_lines}}}"


def value_regex(spec: KeySpec, director: Director) -> str:
    """A regular expression of the values ``spec`` allows."""
    if spec.type == "number":
        words = [re.escape(w) for w in sorted(spec.levels, key=len, reverse=True)]
        number = _number_regex(spec.min, spec.max)
        return "|".join(([number] if number else []) + words)
    if spec.type == "word":
        return "|".join(re.escape(v) for v in sorted(spec.values, key=len, reverse=True))
    if spec.type == "color":
        names = sorted(set(color_names()) | set(director.colors), key=len, reverse=True)
        return "#[0-9a-f]{6}|" + "|".join(re.escape(n) for n in names)
    return f"[a-z]{{1,{MAX_WORD}}}(?: [a-z]{{1,{MAX_WORD}}}){{0,{spec.max_words - 1}}}"


def color_names() -> list[str]:
    """The CSS colour names the parser resolves."""
    try:
        return list(webcolors.names("css3"))
    except (AttributeError, TypeError):  # webcolors < 24.6
        return list(webcolors.CSS3_NAMES_TO_HEX)


def _lark_value(spec: KeySpec, director: Director) -> str:
    return "/" + value_regex(spec, director).replace("/", "\\/") + "/"


def _lark_string(text: str) -> str:
    return json.dumps(text)


def _number_regex(lo: float, hi: float) -> str:
    """Numbers in [lo, hi] for integer, non-negative bounds ('' when that cannot be said)."""
    if lo < 0 or not float(lo).is_integer() or not float(hi).is_integer():
        return ""
    lo, hi = int(lo), int(hi)
    decimals = hi - lo <= 10
    if hi - lo > MAX_ENUMERATED:
        whole = f"[0-9]{{{len(str(lo))},{len(str(hi))}}}"
        return whole + (r"(?:\.[0-9]{1,2})?" if decimals else "")
    below = "|".join(str(n) for n in range(hi - 1, lo - 1, -1))
    if not decimals:
        return "|".join(str(n) for n in range(hi, lo - 1, -1))
    # Any fraction below the top; the top itself only as hi, hi.0 or hi.00.
    return f"(?:{below})(?:\\.[0-9]{{1,2}})?|{hi}(?:\\.0{{1,2}})?"
