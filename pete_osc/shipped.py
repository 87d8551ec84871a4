"""DIRECTOR.md and the mappings that come with pete-osc, wherever it was installed.

A clone has them at the top of the tree; a wheel (pip, pipx) has them in
``pete_osc/shipped/`` (setup.py copies them there at build time). A DIRECTOR.md in the
current folder wins over the shipped one, and ``mappings/NAME.yaml`` in the current
folder over the shipped mapping NAME, so ``pete-osc init`` then editing works.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .errors import PeteError

PACKAGE = Path(__file__).resolve().parent


def root() -> Path:
    """The folder holding the shipped DIRECTOR.md and mappings/."""
    inside = PACKAGE / "shipped"
    if (inside / "DIRECTOR.md").is_file():
        return inside
    return PACKAGE.parent  # a clone, or an editable install of one


def default_director() -> Path:
    """./DIRECTOR.md if there is one, else the shipped one."""
    here = Path("DIRECTOR.md")
    return here if here.is_file() else root() / "DIRECTOR.md"


def read_director(path: str | Path | None = None):
    """DIRECTOR.md as given (``--director``), else the default one, read and checked."""
    from .director.schema import load_director

    return load_director(path or default_director())


def read_mapping(spec: str | Path, director):
    """``--mapping``'s file or shipped name, read and checked against ``director``."""
    from .mapping.load import load_mapping

    return load_mapping(mapping_path(spec), director)


def mapping_names() -> list[str]:
    """The shipped mappings, by name (default, ableton, ...)."""
    return sorted(p.stem for p in (root() / "mappings").glob("*.yaml"))


def mapping_path(spec: str | Path) -> Path:
    """``--mapping``'s value as a file: a path as given, else a mapping name
    (./mappings/NAME.yaml first, then the shipped one)."""
    path = Path(spec)
    if path.is_file():
        return path
    name = path.name[:-5] if path.name.endswith(".yaml") else path.name
    if path.parent == Path(".") or path.parent == Path("mappings"):
        for folder in (Path("mappings"), root() / "mappings"):
            candidate = folder / f"{name}.yaml"
            if candidate.is_file():
                return candidate
    raise PeteError(f"--mapping {spec}: no such file, and no shipped mapping of that name "
                    f"(shipped: {', '.join(mapping_names()) or 'none'})")


def init(folder: str | Path, force: bool = False) -> list[tuple[Path, bool]]:
    """Copy DIRECTOR.md and mappings/*.yaml into ``folder`` for editing.

    Existing files are kept unless ``force``. Returns (path, copied) per file."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise PeteError(f"{folder}: is a file, not a folder; name a folder to copy "
                        "DIRECTOR.md and the mappings into")
    source = root()
    files = [Path("DIRECTOR.md")] + [Path("mappings") / f"{n}.yaml" for n in mapping_names()]
    done = []
    for relative in files:
        target = folder / relative
        if target.exists() and not force:
            done.append((target, False))
            continue
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / relative, target)
        except OSError as exc:
            raise PeteError(f"{target}: cannot write: {exc.strerror}") from None
        done.append((target, True))
    return done
