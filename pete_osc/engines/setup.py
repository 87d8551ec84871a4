"""An engine made ready for a show: loaded with the run's settings, held to DIRECTOR.md's
grammar where it can be (``--constrain``), its token limit sized from the grammar, and
warmed up. The show calls these at start and when DIRECTOR.md is edited."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Callable

from ..errors import PeteError
from . import EngineOptions, GenerationSettings, Prompt, open_engine

log = logging.getLogger(__name__)

# The token limit of an unconstrained answer when --max-tokens is not given: room for
# DIRECTOR.md's nine lines with numbers (55 tokens in Qwen2's vocabulary).
UNCONSTRAINED_TOKENS = 64


def load_engine(name: str, model: str | None, prompt: Prompt, options: EngineOptions, *,
                size: int, temperature: float, max_tokens: int | None, stall: float):
    """Open the engine ``name`` for frames of ``size`` px with the run's settings."""
    settings = GenerationSettings(max_tokens or UNCONSTRAINED_TOKENS, temperature, size)
    if stall:
        # A remote answer that stalls is cut by the watchdog's abort; its read timeout
        # just after is the second line of defence.
        options = replace(options, timeout=min(options.timeout, stall + 0.5))
    return open_engine(name, model, prompt.system, prompt.instruction, settings, options)


def prepare(engine, prompt: Prompt, director, *, size: int, constrain: str,
            max_tokens: int | None, warm_up: bool, say: Callable[[str], None]) -> None:
    """Make ``prompt`` current, constrain the engine (``constrain``: auto, on or off),
    say what runs, and warm it up."""
    engine.use_prompt(prompt)
    if constrain != "off":
        _constrain(engine, director, constrain, max_tokens, say)
    say(f"{engine.name} engine, model {engine.model_id}, input {size} px")
    if warm_up and engine.warms_up:
        say("warming up ...")
        say(f"warm-up took {engine.warm_up():.1f} s")


def constrain_again(engine, director, *, constrain: str, max_tokens: int | None,
                    say: Callable[[str], None]) -> None:
    """An edited DIRECTOR.md: its grammar, where the engine is constrained; a grammar that
    cannot be made is a warning, and the run goes on unconstrained."""
    if constrain == "off" or not engine.supports_constraint:
        return
    try:
        engine.constrain(director)
    except PeteError as exc:
        log.warning("decoding is not constrained for the new DIRECTOR.md: %s", exc)
        return
    _size_limit(engine, director, max_tokens, say)


def _constrain(engine, director, mode: str, max_tokens: int | None, say) -> None:
    """``--constrain``: on where the engine can (auto), required (on)."""
    if not engine.supports_constraint:
        if mode == "on":
            raise PeteError(f"--constrain on: the {engine.name} engine cannot "
                            "constrain decoding; use --constrain off")
        return
    try:
        engine.constrain(director)
    except PeteError as exc:
        if mode == "on":
            raise
        log.warning("decoding is not constrained: %s", exc)
        return
    by = f" by the server ({engine.dialect})" if getattr(engine, "dialect", "") else ""
    say(f"decoding constrained to the DIRECTOR.md schema{by} (--constrain off to free it)")
    _size_limit(engine, director, max_tokens, say)


def _size_limit(engine, director, wanted: int | None, say) -> None:
    """The token limit against the longest complete answer the grammar allows (with the
    model's own tokenizer): set to it when --max-tokens was not given, else a warning
    where the limit would cut answers."""
    # (a server's grammar: its longest answer in bytes, a bound on its tokens)
    served = getattr(engine, "longest_answer", 0)
    if engine.constraint is None and not served:
        return
    longest = engine.constraint.longest if engine.constraint is not None else served
    if wanted is None:
        if longest != engine.settings.max_tokens:
            engine.set_max_tokens(longest)
            say(f"token limit {longest}: the longest complete answer "
                f"{director.path.name} allows" + (" (in bytes: the server's tokenizer is "
                                                  "not known here)" if served and
                                                  engine.constraint is None else "")
                + " (--max-tokens sets another)")
    elif wanted < longest:
        log.warning("--max-tokens %d cannot hold a complete answer: the longest %s allows "
                    "is %d tokens with this model's tokenizer, so the last lines can be "
                    "cut (leave --max-tokens out to size it from the schema)",
                    wanted, director.path, longest)
