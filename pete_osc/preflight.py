"""Everything a run needs, checked before the slow part starts.

DIRECTOR.md, the mapping, the engine's libraries, the model and the source are each
checked here, before PyTorch or MLX is imported, and every problem found is reported
together (one line each), so a musician fixes them in one go instead of one per start.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .capture.feeds import parse_sources
from .capture.sources import open_source
from .director.schema import Director
from .engines.base import check_size
from .engines.models import (
    check_downloadable,
    default_model,
    download,
    engine_name,
    locate,
)
from .errors import PeteError, Problems
from .shipped import mapping_path, read_director, read_mapping

# What each engine imports; found with importlib (no import, so no cost).
ENGINE_LIBRARIES = {
    "torch": ("torch", "torchvision", "timm", "transformers"),
    "mlx": ("mlx_vlm",),
    "remote": ("openai",),
    "replay": (),
}


@dataclass(frozen=True)
class Prepared:
    """A run's checked inputs: the files read, the source open, the model found."""

    director: Director
    mapping: object | None  # a MappingConfig
    size: int  # the model's input size, checked
    capture_size: tuple[int, int]
    sources: list  # (name, open Source) per --source
    engine: str  # mlx, torch, remote or replay (never auto)
    model: str | None  # as given, or the engine's default (None: remote's served model)
    model_path: str | None  # mlx, torch: the folder to load from


def prepare(args, say: Callable[[str], None]) -> Prepared:
    """Check ``pete-osc run``'s arguments; raise :class:`Problems` naming all that is wrong."""
    problems: list[str] = []

    def attempt(check):
        try:
            return check()
        except Problems as exc:
            problems.extend(exc.lines)
        except PeteError as exc:
            problems.append(str(exc))
        return None

    size = attempt(lambda: check_size(args.size))
    width, height = attempt(lambda: capture_size(args.capture_size)) or (320, 240)
    director = attempt(lambda: read_director(args.director))
    mapping = None
    play = getattr(args, "play", None)
    named = args.mapping or ("play" if play else None)  # --play alone: the shipped 'play'
    if named is not None:
        if director is None:  # the mapping cannot be checked, but can be found
            attempt(lambda: mapping_path(named))
        else:
            mapping = attempt(lambda: read_mapping(named, director))
    synth = mapping is not None and any(t.synth for t in mapping.midi.values())
    sounds = synth or (mapping is not None and bool(mapping.lyria))
    if play or sounds:  # (synth: and lyria: targets without --play: the default device)
        from .outputs.player import refuse

        attempt(lambda: refuse(play or "default", None if play else
                               f"{mapping.path}: its synth: and lyria: targets play on the "
                               "default audio device (--play picks another): "))
        if mapping is not None and not sounds:
            problems.append(f"--play: {mapping.path} has no synth: or lyria: targets to "
                            "play (add one, or leave --mapping out for the shipped 'play')")
    if mapping is not None and mapping.lyria:
        from .outputs.lyria import missing as lyria_missing

        if lyria_missing():
            problems.append(f"{mapping.path}: {lyria_missing()}")
    fluid = synth and next((t for t in mapping.midi.values() if t.engine == "fluidsynth"), None)
    if fluid:
        from .outputs.fluid import missing

        problem = missing(fluid.soundfont)
        if problem:
            problems.append(f"{mapping.path}: synth: {{engine: fluidsynth}}: {problem}")
    engine = engine_name(args.engine)
    attempt(lambda: check_libraries(engine, args.constrain))
    model = args.model
    path = None
    model_named = True  # the model's own check found nothing wrong (yet)
    if engine in ("mlx", "torch"):
        model = model or default_model(engine)
        before = len(problems)
        path = attempt(lambda: locate(model))
        model_named = len(problems) == before
    elif engine == "remote" and not args.server:
        problems.append("--engine remote needs --server URL (such as http://gpu-box:8000)")
    elif engine == "replay":
        if not args.replay:
            problems.append("--engine replay needs --replay FILE (a --record file or DIRECTOR text)")
        elif not Path(args.replay).is_file():
            problems.append(f"--replay {args.replay}: no such file")
    specs = attempt(lambda: parse_sources(args.source or ["none" if engine == "replay" else "0"]))
    sources = []
    for spec in specs or []:
        source = attempt(lambda: open_source(spec.spec, width, height))
        if source is not None:
            sources.append((spec.name, source))
    if engine in ("mlx", "torch") and path is None and model is not None and model_named:
        # An id that is not in the cache yet: fetch it now (fails fast offline); where
        # something else is wrong already, only ask whether it could be fetched, so that
        # an offline machine names the model together with the rest.
        if problems:
            attempt(lambda: check_downloadable(model))
        else:
            path = attempt(lambda: download(model, say))
    if problems:
        for _, source in sources:
            source.close()
        raise Problems(problems)
    return Prepared(director, mapping, size, (width, height), sources, engine, model,
                    str(path) if path is not None else None)


def capture_size(text: str) -> tuple[int, int]:
    """``--capture-size`` WIDTHxHEIGHT."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
        if width < 16 or height < 16:
            raise ValueError
    except ValueError:
        raise PeteError(f"--capture-size {text}: expected WIDTHxHEIGHT such as 320x240") from None
    return width, height


def check_libraries(engine: str, constrain: str) -> None:
    """The engine's packages (and llguidance for --constrain on) are installed."""
    missing = [name for name in ENGINE_LIBRARIES.get(engine, ()) if not _installed(name)]
    if missing:
        raise PeteError(f"the {engine} engine needs {', '.join(missing)}, which "
                        f"{'is' if len(missing) == 1 else 'are'} not installed: "
                        f"pip install 'pete-osc[{engine}]' (or run ./install.sh)")
    if constrain == "on" and engine in ("mlx", "torch") and not _installed("llguidance"):
        raise PeteError("--constrain on needs llguidance, which is not installed: "
                        "pip install llguidance (or --constrain off)")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
