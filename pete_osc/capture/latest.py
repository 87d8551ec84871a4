"""The capture threads: a live source read at its own rate keeping only the newest frame
(latest-frame-wins, drops counted), a file read frame by frame; each with an owner that
stops it."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Iterator

import numpy as np

from ..records import Frame
from .sources import Source

log = logging.getLogger(__name__)

# A live source that delivers nothing for this long is lost: it is closed and reopened,
# after 0.5 s, then 1, 2 and 4 s, then every REOPEN_MAX s, until it answers again.
LOST_AFTER = 1.0
REOPEN_FIRST = 0.5
REOPEN_MAX = 5.0


class LatestFrame:
    """Reads a source on its own thread and keeps only the newest frame.

    The object that starts it owns it: ``close()`` sets the stop event, joins the thread
    and releases the source. Files play in real time (paced to their frame rate) so a
    video stands in for a camera; ``loop`` restarts a file at its end. A live source
    (camera, stream) that stops delivering is lost, not ended: it is reopened with
    backoff, and ``notify(what, text)`` hears of the loss and of the return, once each.
    ``fresh`` (an Event shared by several grabbers) is set at every new frame.
    """

    def __init__(self, source: Source, loop: bool = False, name: str | None = None,
                 notify: Callable[[str, str], None] | None = None,
                 fresh: threading.Event | None = None,
                 on_image: Callable[[np.ndarray, float], None] | None = None):
        self.source = source
        self.on_image = on_image  # every captured image, on this thread (pixel keys)
        self.name = name or source.name
        self.loop = loop
        self.notify = notify or (lambda what, text: None)
        self.fresh = fresh
        self.captured = 0
        self.dropped = 0
        self.lost = False  # a live source between its loss and its return
        self.ended = threading.Event()
        self.end_reason: str | None = None  # why the source ended by itself, once it has
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._newest: Frame | None = None
        self._taken_id = -1
        # Seconds between captured frames, a running average (0 until two have come).
        self.interval = 0.0
        self._thread = threading.Thread(target=self._run, name=f"capture {self.name}")
        self._thread.start()

    def _run(self) -> None:
        period = 0.0 if self.source.live else 1.0 / self.source.fps
        next_at = time.monotonic()
        silent_since = None
        since_rewind = 0  # a file that gives no frame is not rewound forever
        try:
            while not self._stop.is_set():
                image = self.source.read()
                if image is None:
                    if self.source.live:
                        now = time.monotonic()
                        silent_since = silent_since or now
                        if now - silent_since < LOST_AFTER:
                            self._stop.wait(0.02)  # a camera hiccup: try again shortly
                        elif not self._reconnect(now - silent_since):
                            break
                        continue
                    if self.loop and since_rewind and self.source.rewind():
                        since_rewind = 0
                        continue
                    self.end_reason = f"ended after {self.captured} frames"
                    break
                if self.lost:
                    self.lost = False
                    self.notify("back", f"source {self.name} is back after "
                                        f"{time.monotonic() - silent_since:.1f} s")
                silent_since = None
                since_rewind += 1
                self._publish(image)
                if period:
                    next_at += period
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        self._stop.wait(delay)
                    else:
                        next_at = time.monotonic()
        except Exception as exc:  # a driver error must not kill the show silently
            self.end_reason = f"failed after {self.captured} frames: {exc}"
            self.notify("ended", f"source {self.name} stopped: {exc}")
        finally:
            self.ended.set()
            self._wake()

    def _reconnect(self, silent: float) -> bool:
        """The live source has been silent too long: reopen it with backoff until it
        answers (True) or the grabber is stopped (False)."""
        if not self.lost:
            self.lost = True
            self.notify("lost", f"source {self.name} delivers no frames since {silent:.1f} s; "
                                "reopening it until it answers, the other sources go on")
        wait = REOPEN_FIRST
        while not self._stop.wait(wait):
            if self.source.reopen():
                return True
            wait = min(wait * 2, REOPEN_MAX)
        return False

    def _publish(self, image: np.ndarray) -> None:
        frame = Frame(self.captured, image, time.time(), self.name)
        with self._cond:
            if self._newest is not None:
                gap = frame.captured_at - self._newest.captured_at
                if 0 < gap < 1.0:
                    self.interval = gap if not self.interval else 0.8 * self.interval + 0.2 * gap
            if self._newest is not None and self._newest.id > self._taken_id:
                self.dropped += 1  # replaced before inference took it
            self._newest = frame
            self.captured += 1
            self._cond.notify_all()
        self._wake()
        if self.on_image is not None:
            try:
                self.on_image(image, frame.captured_at)
            except Exception as exc:  # a measure must not stop the camera
                log.warning("source %s: measuring the pixels failed (%s); they are off",
                            self.name, exc)
                self.on_image = None

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()
        if self.fresh is not None:
            self.fresh.set()

    def newest(self, timeout: float | None = None) -> Frame | None:
        """The newest frame not yet taken; waits up to ``timeout``. None: none came."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._newest is None or self._newest.id <= self._taken_id:
                if self.ended.is_set() or self._stop.is_set():
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(0.1 if remaining is None else min(remaining, 0.1))
            self._taken_id = self._newest.id
            return self._newest

    def waiting_since(self) -> float | None:
        """When the newest frame not yet taken was captured (time.time()); None: none."""
        with self._cond:
            if self._newest is None or self._newest.id <= self._taken_id:
                return None
            return self._newest.captured_at

    @property
    def exhausted(self) -> bool:
        """Ended, and its last frame taken."""
        with self._cond:
            return self.ended.is_set() and (self._newest is None or self._newest.id <= self._taken_id)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread, join it and release the device."""
        self._stop.set()
        self._wake()
        self._thread.join(timeout=timeout)
        self.source.close()


class EveryFrame:
    """Every frame of a file or folder, as fast as the consumer takes them (no drops);
    ``loop`` starts again at the end. An iterator; ``end_reason`` says why it ended."""

    dropped = 0  # nothing is ever replaced

    def __init__(self, source: Source, loop: bool = False, name: str | None = None):
        self.source = source
        self.name = name or source.name
        self.loop = loop
        self.end_reason: str | None = None
        self._frames = self._read()

    def __iter__(self) -> "EveryFrame":
        return self

    def __next__(self) -> Frame:
        return next(self._frames)

    def _read(self) -> Iterator[Frame]:
        n = since_rewind = 0
        try:
            while True:
                image = self.source.read()
                if image is None:
                    if self.loop and since_rewind and self.source.rewind():
                        since_rewind = 0  # (a file that gives no frame is not rewound forever)
                        continue
                    break
                since_rewind += 1
                yield Frame(n, image, time.time(), self.name)
                n += 1
            self.end_reason = f"ended after {n} frames"
        finally:
            self.source.close()

    def close(self) -> None:
        try:
            self._frames.close()
        except ValueError:  # running on the main thread while the stop watchdog closes
            pass
        self.source.close()
