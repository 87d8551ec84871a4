"""Frames in: a webcam, a video file, a folder of images, or any URL OpenCV opens.

Live sources are read by a capture thread at the camera's own rate that keeps only the
newest frame (latest-frame-wins). Inference is slower than the camera, so a queue would
grow and every answer would describe the past; keeping one slot means the model always
sees the newest frame and latency never grows. Frames replaced before anyone took them
are counted as drops.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from ..errors import PeteError
from ..records import Frame

log = logging.getLogger(__name__)

# A live source that delivers nothing for this long is lost: it is closed and reopened,
# after 0.5 s, then 1, 2 and 4 s, then every REOPEN_MAX s, until it answers again.
LOST_AFTER = 1.0
REOPEN_FIRST = 0.5
REOPEN_MAX = 5.0
# Seconds OpenCV's FFmpeg backend waits to connect to a stream URL, or for its next frame.
STREAM_TIMEOUT = 2.0

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


class Source:
    """A source of BGR frames with a nominal rate. ``read`` returns None at the end."""

    name: str
    fps: float
    live: bool  # a camera or stream (paced by the device) rather than a file
    # Whether a frame replaced before the engine took it is a frame lost (False for blank
    # frames, which carry no picture to lose).
    counts_drops = True

    def read(self) -> np.ndarray | None:
        raise NotImplementedError

    def rewind(self) -> bool:
        """Start again from the first frame; False where that means nothing (a camera)."""
        return False

    def reopen(self) -> bool:
        """Open a live source again after it stopped delivering; False: not (yet)."""
        return False

    def close(self) -> None:
        pass


class VideoSource(Source):
    """A camera index, a video file or a stream URL, through cv2.VideoCapture."""

    def __init__(self, spec: str, width: int, height: int):
        self.name = spec
        self.live = spec.isdigit() or "://" in spec
        with _opencv_quiet():  # our one line says it better than OpenCV's six
            self._open(spec, width, height)
        self.fps = self._cap.get(cv2.CAP_PROP_FPS) or 30.0
        if not 1.0 <= self.fps <= 240.0:
            self.fps = 30.0
        self._size = (width, height)

    def _open(self, spec: str, width: int, height: int) -> None:
        if not log.isEnabledFor(logging.INFO):
            # FFmpeg's own lines ("[http @ 0x...] Stream ends prematurely") off: a lost
            # stream gets our one line. Read by OpenCV when its FFmpeg backend starts.
            os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
        if "://" in spec:
            # A stream that stops answering must not hold the capture thread for FFmpeg's
            # default 30 s: give up on a connect or a read after STREAM_TIMEOUT.
            ms = int(STREAM_TIMEOUT * 1000)
            self._cap = cv2.VideoCapture(spec, cv2.CAP_FFMPEG, [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
            if not self._cap.isOpened():
                self._cap.release()
                raise PeteError(f"{spec}: the stream does not answer (is the camera or "
                                "server on, and the URL right?)")
            return
        if spec.isdigit():
            self._cap = cv2.VideoCapture(int(spec))
            # Ask the camera for the capture size; many honour it and send less data.
            self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
            what = (f"camera {spec} could not be opened: check that it is connected and that "
                    "this terminal may use the camera (macOS: System Settings > Privacy & "
                    "Security > Camera), or try --source 1, a video file or a folder")
        else:
            if "://" not in spec and not Path(spec).exists():
                raise PeteError(f"{spec}: no such file or folder (--source takes a camera "
                                "number, a video file, a folder of images or a URL)")
            self._cap = cv2.VideoCapture(spec)
            what = f"{spec}: OpenCV cannot open it as video (is it a video file or stream URL?)"
        if not self._cap.isOpened():
            self._cap.release()
            raise PeteError(what)

    def read(self) -> np.ndarray | None:
        ok, image = self._cap.read()
        if not ok:
            return None
        return fit(image, *self._size)

    def rewind(self) -> bool:
        return not self.live and self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)

    def reopen(self) -> bool:
        """Open the camera or stream again (after it stopped delivering); False if it
        cannot be opened yet."""
        self._cap.release()
        try:
            with _opencv_quiet():
                self._open(self.name, *self._size)
        except PeteError:
            return False
        return True

    def close(self) -> None:
        self._cap.release()


class FolderSource(Source):
    """The images of a folder in name order, at ``fps`` (a slide show)."""

    live = False

    def __init__(self, folder: str, width: int, height: int, fps: float = 2.0):
        self.name = folder
        self.fps = fps
        self._paths = sorted(p for p in Path(folder).iterdir()
                             if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self._paths:
            raise PeteError(f"{folder}: no images in this folder "
                            f"(looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
        self._next = 0
        self._size = (width, height)

    def read(self) -> np.ndarray | None:
        while self._next < len(self._paths):
            path = self._paths[self._next]
            self._next += 1
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is not None:
                return fit(image, *self._size)
            log.warning("%s: not a readable image, skipped", path)
        return None

    def rewind(self) -> bool:
        self._next = 0
        return True


class BlankSource(Source):
    """Black frames, for engines that ignore the image (replay) or a test without video."""

    name = "no camera (blank frames)"
    live = False
    counts_drops = False

    def __init__(self, width: int, height: int, fps: float = 10.0):
        self.fps = fps
        self._image = np.zeros((height, width, 3), np.uint8)

    def read(self) -> np.ndarray | None:
        return self._image

    def rewind(self) -> bool:
        return True


@contextlib.contextmanager
def _opencv_quiet():
    """OpenCV's own log lines off for the block, unless pete-osc runs with -v."""
    logging_ = cv2.utils.logging
    before = logging_.getLogLevel()
    if not log.isEnabledFor(logging.INFO):
        logging_.setLogLevel(logging_.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging_.setLogLevel(before)


def open_source(spec: str, width: int = 320, height: int = 240) -> Source:
    """Open ``spec``: a camera number, a folder, a video file, a URL, or 'none'."""
    if spec == "none":
        return BlankSource(width, height)
    if not spec.isdigit() and "://" not in spec and Path(spec).is_dir():
        return FolderSource(spec, width, height)
    return VideoSource(spec, width, height)


def fit(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale ``image`` to fit in width x height, keeping its aspect ratio."""
    h, w = image.shape[:2]
    scale = min(width / w, height / h)
    if abs(scale - 1.0) < 1e-3:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


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


def every_frame(source: Source, loop: bool = False, name: str | None = None) -> EveryFrame:
    """See :class:`EveryFrame`."""
    return EveryFrame(source, loop, name)
