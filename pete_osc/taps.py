"""Files that only watch the show (--metrics, --record): never a reason for it to stop."""

from __future__ import annotations

import logging
from pathlib import Path

from .errors import PeteError

log = logging.getLogger(__name__)


class TapFile:
    """A file that only watches the show (--metrics, --record): lines appended and flushed
    at once (readable while it runs). When a write fails (a full disk), that is said once
    and the file is switched off; the frames, events and messages go on."""

    def __init__(self, path: str | Path, option: str, mode: str = "a"):
        self.path = path
        self.option = option
        try:
            self._file = open(path, mode, encoding="utf-8")
        except OSError as exc:
            raise PeteError(f"{option} {path}: cannot write: {exc.strerror}") from None

    def write_line(self, line: str, flush: bool = True) -> None:
        """Append ``line`` (with its newline); flush it to the file unless told not to."""
        if self._file is None:
            return
        try:
            self._file.write(line)
            if flush:
                self._file.flush()
        except OSError as exc:
            log.warning("%s %s: cannot write (%s); it is off from now on, the show goes on",
                        self.option, self.path, exc.strerror or exc)
            self._drop()

    def flush(self) -> None:
        self.write_line("", flush=True)

    def close(self) -> None:
        if self._file is not None:
            self.flush()
            self._drop()

    def _drop(self) -> None:
        file, self._file = self._file, None
        try:
            file.close()
        except OSError:  # the buffer it could not write
            pass
