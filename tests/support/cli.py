"""The command line as users run it: ``pete-osc`` in a subprocess (to the end, or in the
background with its lines collected), and the files a run is given (a folder of stills, a
mapping to an OSC port, an edit saved as editors save)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from support.peers import ROOT, Lines, stop_process, without_time

PETE = [sys.executable, "-m", "pete_osc"]


def pete_run(*argv: str, env: dict, timeout: float = 300, cwd=ROOT, **kw) -> subprocess.CompletedProcess:
    """``pete-osc ARGV`` to its end; stdout and stderr as text."""
    return subprocess.run(PETE + list(argv), capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=cwd, **kw)


def pete(*argv: str, env: dict, stdin=subprocess.PIPE) -> subprocess.Popen:
    """``pete-osc ARGV`` started, its pipes open (the caller reads and ends it)."""
    return subprocess.Popen(PETE + list(argv), stdin=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def stills(folder, n=4):
    """A folder of ``n`` different images (a slide show source)."""
    folder.mkdir(exist_ok=True)
    for i in range(n):
        image = np.zeros((120, 160, 3), np.uint8)
        image[:, : 40 * (i + 1)] = (40 * i, 200 - 40 * i, 90)
        cv2.imwrite(str(folder / f"{i:02d}.png"), image)
    return folder


def osc_mapping(path, port, address="/pete/{source}/energy", extra=""):
    path.write_text(f"osc:\n  main: {{host: 127.0.0.1, port: {port}}}\nroutes:\n"
                    f"  - {{event: energy, address: '{address}', args: [$value, $frame, $source]}}\n"
                    + extra)
    return path


def replace_text(path, text):
    """Save as editors do: a new file renamed over the old one."""
    tmp = path.with_name(path.name + ".saving")
    tmp.write_text(text)
    os.replace(tmp, path)


class Run:
    """``pete-osc run`` in the background; stdout and stderr lines collected."""

    def __init__(self, *argv, env, cwd=ROOT):
        self.proc = subprocess.Popen(PETE + ["run", *argv], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
        self.out: list[str] = []
        self.err: list[str] = []
        self._threads = [threading.Thread(target=self._read, args=(s, into), daemon=True)
                         for s, into in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for t in self._threads:
            t.start()

    @staticmethod
    def _read(stream, into):
        for line in stream:
            into.append(line.rstrip("\n"))

    def frames(self) -> list[int]:
        return [int(m.group(1)) for m in map(re.compile(r"^--- frame (\d+)").match, list(self.out)) if m]

    def wait_for(self, predicate, timeout=120.0, what="", count=1):
        """Until ``predicate()`` holds, or (a string) stderr has said it ``count`` times."""
        if isinstance(predicate, str):
            text, what = predicate, what or repr(predicate)
            predicate = lambda: sum(text in line for line in list(self.err)) >= count  # noqa: E731
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return
            if self.proc.poll() is not None:
                time.sleep(0.2)
                if predicate():
                    return
                break
            time.sleep(0.05)
        raise AssertionError(f"never saw {what}; stderr:\n" + "\n".join(self.err[-30:]))

    def interrupt(self, timeout=30.0) -> int:
        self.proc.send_signal(signal.SIGINT)
        rc = self.proc.wait(timeout)
        for t in self._threads:
            t.join(5)
        return rc

    def finish(self, timeout=300.0) -> int:
        rc = self.proc.wait(timeout)
        for t in self._threads:
            t.join(5)
        return rc

    stop = interrupt

    def sent(self) -> int:
        """Messages sent, from the closing summary ("... 12 messages sent ...")."""
        found = re.search(r"; (\d+) messages sent", self.err[-1])
        assert found, self.err[-1]
        return int(found.group(1))

    def kill(self):
        if self.proc.poll() is None:
            stop_process(self.proc)


def dumped(dump: Lines, into: list, seconds=0.0) -> list:
    """oscdump's lines so far (without times) added to ``into``."""
    into.extend(without_time(l) for l in dump.take(10_000, timeout=seconds))
    return into


def short_clip(folder: Path, frames: int = 5) -> Path:
    """A clip of ``frames`` frames at 10 fps, each a different grey."""
    import cv2
    import numpy as np

    path = folder / "short.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    for i in range(frames):
        writer.write(np.full((120, 160, 3), 40 * i, np.uint8))
    writer.release()
    return path
