"""What a frame's answer may be, as a grammar built from DIRECTOR.md's schema.

``lark_grammar`` writes it for llguidance (the constraint the local engines apply while
decoding); ``answer_regex`` writes the same language as one regular expression, for
servers that take a guided regex (vLLM, SGLang). Every value the grammar allows is one
the parser accepts, so a constrained answer has no rejected lines.

The answer: the schema's keys in DIRECTOR.md's order, each at most once, one line
``key: value`` each ended by a newline; keys marked ``optional`` may be left out, the
others may not; at most ``max_lines`` lines. It ends after the last key. Values by type:
- number: its level words, or a number in [min, max] (integers; with up to two decimals
  when the range is 10 wide or less, as 0..1 is);
- word: one of its values;
- color: a CSS colour name, one of DIRECTOR.md's stage colours, or #rrggbb;
- text: 1 to max_words words of 1 to 16 lower-case letters.

Given the model's tokenizer (``count``: text -> tokens), every value also gets a token
budget (llguidance's ``max_tokens``), so that the longest answer the grammar allows is
known in tokens (:func:`longest_answer`) and a token limit can be set that never cuts
a complete answer. Text gets two tokens a word (a cut text is still text); the other
values the most tokens their tokenizer spelling of any allowed value takes, plus two,
never more than the value's bytes.
"""

from __future__ import annotations

import json
import re
from typing import Callable

import webcolors

from .schema import Director, KeySpec

# Enumerating integers keeps the range exact; past this many, digits are only bounded in
# count (and the parser still refuses what is out of range).
MAX_ENUMERATED = 2000
# Letters per free-text word: a loose model must not spell one word for ever.
MAX_WORD = 16
# Tokens a free-text word may take (most words of a real vocabulary are one).
TEXT_TOKENS_PER_WORD = 2
# Tokens over a value's usual spelling that the budget allows.
SPELLING_SLACK = 2

Count = Callable[[str], int]  # text -> its number of tokens


def lark_grammar(director: Director, count: Count | None = None) -> str:
    """The llguidance Lark grammar of one frame's answer (token budgets with ``count``)."""
    keys = list(director.model_keys.values())
    counting: list[str] = []
    rules = ["start: " + _sequence(keys, director.max_lines, lambda k: f"k_{k.name}", counting)]
    rules += counting
    for spec in keys:
        budget = f"[max_tokens={value_budget(spec, director, count)}]" if count else ""
        rules.append(f"k_{spec.name}: {_lark_string(spec.name + ':')} v_{spec.name} "
                     '"\\n"')
        rules.append(f"v_{spec.name}{budget}: /" +
                     (" (?:" + value_regex(spec, director) + ")").replace("/", "\\/") + "/")
    return "\n".join(rules) + "\n"


def answer_regex(director: Director) -> str:
    """The same language as one regular expression (for servers' guided decoding)."""
    line = {spec.name: "(?:" + re.escape(spec.name + ": ") + "(?:" +
            value_regex(spec, director) + ")\n)" for spec in director.model_keys.values()}
    keys = list(director.model_keys.values())
    if _simple(keys, director.max_lines):
        return "".join(line[k.name] + ("?" if k.optional else "") for k in keys)
    return _regex_sequence(keys, director.max_lines, line)


def value_budget(spec: KeySpec, director: Director, count: Count) -> int:
    """The most tokens ``spec``'s value (its leading space included) may take."""
    if spec.type == "text":
        return 1 + TEXT_TOKENS_PER_WORD * spec.max_words
    if spec.type == "word":
        spellings = list(spec.values)
    elif spec.type == "color":
        spellings = sorted(set(color_names()) | set(director.colors))
    else:
        spellings = list(spec.levels)
    widest = max(len(" " + s) for s in spellings) if spellings else 0
    usual = max((count(" " + s) for s in spellings), default=0)
    budget = min(widest, usual + SPELLING_SLACK)
    if spec.type == "color":
        budget = max(budget, len(" #000000"))  # a hex code: at most one token a byte
    if spec.type == "number":
        number = _number_regex(spec.min, spec.max)
        if number:  # at most one token a byte, the longest number allowed
            lo, hi = int(spec.min), int(spec.max)
            digits = len(str(hi)) + (3 if hi - lo <= 10 or "\\." in number else 0)
            budget = max(budget, 1 + digits)
    return max(budget, 1)


def longest_answer(director: Director, count: Count) -> int:
    """Tokens in the longest answer the grammar (with budgets) allows, its end included:
    every key's forced ``key:`` and newline, the value's budget, then the end token."""
    lines = sorted((count(spec.name + ":") + count("\n") + value_budget(spec, director, count)
                    for spec in director.model_keys.values()), reverse=True)
    return sum(lines[:director.max_lines]) + 1


def longest_bytes(director: Director) -> int:
    """Bytes in the longest answer the grammar without token budgets allows (a server's,
    whose tokenizer is not known here), plus one for the end: a bound on its tokens with
    any tokenizer, a token being at least one byte."""
    def value(spec: KeySpec) -> int:
        if spec.type == "text":
            return spec.max_words * (MAX_WORD + 1)
        return value_budget(spec, director, lambda text: len(text.encode()))

    lines = sorted((len((spec.name + ":\n").encode()) + value(spec)
                    for spec in director.model_keys.values()), reverse=True)
    return sum(lines[:director.max_lines]) + 1


def _simple(keys: list[KeySpec], max_lines: int) -> bool:
    """The answer is a plain sequence: room for every key and at least one required."""
    return len(keys) <= max_lines and any(not k.optional for k in keys)


def _sequence(keys: list[KeySpec], max_lines: int, item, rules: list[str]) -> str:
    """The start rule's body: keys in order, optional ones with ``?``; where ``max_lines``
    is below the number of keys, or every key is optional, one rule per (key, lines left,
    any line yet) counts the lines (appended to ``rules``)."""
    if _simple(keys, max_lines):
        return " ".join(item(k) + ("?" if k.optional else "") for k in keys)
    made: dict = {}

    def rule(i: int, left: int, some: bool) -> str | None:
        if (i, left, some) in made:
            return made[(i, left, some)]
        name = f"r_{i}_{left}_{int(some)}"
        if i == len(keys):
            body = ['""'] if some else []
        else:
            body = []
            taken = rule(i + 1, left - 1, True) if left else None
            if taken is not None:
                body.append(f"{item(keys[i])} {taken}")
            if keys[i].optional:
                skipped = rule(i + 1, left, some)
                if skipped is not None:
                    body.append(skipped)
        made[(i, left, some)] = name if body else None
        if body:
            rules.append(f"{name}: " + " | ".join(body))
        return made[(i, left, some)]

    return rule(0, max_lines, False) or '""'


def _regex_sequence(keys: list[KeySpec], max_lines: int, line: dict) -> str:
    """The counted sequence as a regex (alternatives written out, depth = keys)."""
    def seq(i: int, left: int, some: bool) -> str | None:
        if i == len(keys):
            return "" if some else None
        options = []
        taken = seq(i + 1, left - 1, True) if left else None
        if taken is not None:
            options.append(line[keys[i].name] + taken)
        if keys[i].optional:
            skipped = seq(i + 1, left, some)
            if skipped is not None:
                options.append(skipped)
        if not options:
            return None
        return options[0] if len(options) == 1 else "(?:" + "|".join(options) + ")"

    return seq(0, max_lines, False) or ""


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


def word_slices() -> list[str]:
    """The text values' words as llguidance "slices": the tokenizer's tokens that are a
    word or a space and a word are grouped once, and where the grammar's state allows every
    token of a group (inside a free-text value) the mask takes the group whole instead of
    walking its tokens one by one. The masks are the same; inside a text value they cost
    a third to a half (docs/benchmarks.md, session 14)."""
    half = MAX_WORD // 2
    return [f"[a-z]{{1,{half}}}", f" [a-z]{{1,{half}}}", f"[a-z]{{1,{MAX_WORD}}}",
            f" [a-z]{{1,{MAX_WORD}}}"]


def color_names() -> list[str]:
    """The CSS colour names the parser resolves."""
    try:
        return list(webcolors.names("css3"))
    except (AttributeError, TypeError):  # webcolors < 24.6
        return list(webcolors.CSS3_NAMES_TO_HEX)


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
