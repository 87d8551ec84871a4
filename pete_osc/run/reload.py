"""Hot reload: DIRECTOR.md and the mapping, read again when saved (or on SIGHUP).

The files are looked at (one ``stat`` each, a few microseconds) at every frame boundary
and while the show waits for frames, so an edit applies to the next frame without a
watcher thread. A new version is read and checked in full before anything changes: a
broken edit is refused with the file, the line and the reason, and the running version
stays. Only a change of content counts (an editor that saves twice, or a ``touch``,
reloads nothing).
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

from ..director.schema import Director, parse_director
from ..errors import PeteError
from ..mapping.config import MappingConfig
from ..mapping.load import parse_mapping


@dataclass(frozen=True)
class Files:
    """What a show runs on: DIRECTOR.md and the mapping, read and checked."""

    director: Director
    mapping: MappingConfig | None
    director_text: str = ""
    mapping_text: str = ""

    @classmethod
    def of(cls, director: Director, mapping: MappingConfig | None) -> "Files":
        """Files already read and checked (at start), with the text they were read from."""
        director_text = _read(director.path, "the DIRECTOR file")
        mapping_text = _read(mapping.path, "mapping") if mapping is not None else ""
        return cls(director, mapping, director_text, mapping_text)

    @classmethod
    def read(cls, director_path: Path, mapping_path: Path | None) -> "Files":
        """Both files, read and checked (PeteError naming the file and line)."""
        director_text = _read(director_path, "the DIRECTOR file")
        director = parse_director(director_text, Path(director_path))
        if mapping_path is None:
            return cls(director, None, director_text)
        mapping_text = _read(mapping_path, "mapping")
        mapping = parse_mapping(mapping_text, director, Path(mapping_path))
        return cls(director, mapping, director_text, mapping_text)

    def paths(self) -> list[str]:
        """The files, as the monitor page lists them."""
        mapping = self.mapping
        return [str(self.director.path)] + ([str(mapping.path)] if mapping else [])


class Watch:
    """Notices saved edits of the show's files, and SIGHUP (:meth:`due`)."""

    def __init__(self, director_path: Path, mapping_path: Path | None, enabled: bool = True):
        self.paths = [p for p in (director_path, mapping_path) if p is not None]
        self.enabled = enabled
        self._stamps = [_stamp(p) for p in self.paths]
        self._hup = threading.Event()
        self._old_handler = None

    def due(self) -> bool:
        """Whether a file changed on disk since the last look, or SIGHUP came."""
        hup = self._hup.is_set()
        self._hup.clear()
        if not self.enabled:
            return hup
        stamps = [_stamp(p) for p in self.paths]
        changed = stamps != self._stamps and None not in stamps  # (mid-save: wait)
        if changed:
            self._stamps = stamps
        return changed or hup

    def __enter__(self) -> "Watch":
        if hasattr(signal, "SIGHUP") and threading.current_thread() is threading.main_thread():
            self._old_handler = signal.signal(signal.SIGHUP, lambda *_: self._hup.set())
        return self

    def __exit__(self, *exc) -> None:
        if self._old_handler is not None:
            signal.signal(signal.SIGHUP, self._old_handler)


def _stamp(path: Path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _read(path: Path, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PeteError(f"{path}: cannot read {what}: {exc.strerror}") from None
