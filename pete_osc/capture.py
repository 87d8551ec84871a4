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
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from .errors import PeteError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class Frame:
    """One captured frame: BGR pixels at capture size, its number and capture time."""

    id: int
    image: np.ndarray
    captured_at: float  # time.time()
    source: str


class Source:
    """A source of BGR frames with a nominal rate. ``read`` returns None at the end."""

    name: str
    fps: float
    live: bool  # a camera or stream (paced by the device) rather than a file

    def read(self) -> np.ndarray | None:
        raise NotImplementedError

    def rewind(self) -> bool:
        """Start again from the first frame; False where that means nothing (a camera)."""
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
    video stands in for a camera; ``loop`` restarts a file at its end.
    """

    def __init__(self, source: Source, loop: bool = False):
        self.source = source
        self.loop = loop
        self.captured = 0
        self.dropped = 0
        self.ended = threading.Event()
        self.end_reason: str | None = None  # why the source ended by itself, once it has
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._newest: Frame | None = None
        self._taken_id = -1
        self._thread = threading.Thread(target=self._run, name="capture", daemon=False)
        self._thread.start()

    def _run(self) -> None:
        period = 0.0 if self.source.live else 1.0 / self.source.fps
        next_at = time.monotonic()
        failures = 0
        since_rewind = 0  # a file that gives no frame is not rewound forever
        try:
            while not self._stop.is_set():
                image = self.source.read()
                if image is None:
                    if self.source.live and failures < 50:
                        failures += 1  # a camera hiccup: try again shortly
                        self._stop.wait(0.02)
                        continue
                    if self.loop and since_rewind and self.source.rewind():
                        since_rewind = 0
                        continue
                    self.end_reason = ("stopped delivering frames" if self.source.live
                                       else f"ended after {self.captured} frames")
                    break
                failures = 0
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
            log.error("capture from %s stopped: %s", self.source.name, exc)
        finally:
            self.ended.set()
            with self._cond:
                self._cond.notify_all()

    def _publish(self, image: np.ndarray) -> None:
        with self._cond:
            if self._newest is not None and self._newest.id > self._taken_id:
                self.dropped += 1  # replaced before inference took it
            self._newest = Frame(self.captured, image, time.time(), self.source.name)
            self.captured += 1
            self._cond.notify_all()

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

    def close(self) -> None:
        """Stop the thread, join it and release the device."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=5.0)
        self.source.close()


class EveryFrame:
    """Every frame of a file or folder, as fast as the consumer takes them (no drops);
    ``loop`` starts again at the end. An iterator; ``end_reason`` says why it ended."""

    dropped = 0  # nothing is ever replaced

    def __init__(self, source: Source, loop: bool = False):
        self.source = source
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
                yield Frame(n, image, time.time(), self.source.name)
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


def every_frame(source: Source, loop: bool = False) -> EveryFrame:
    """See :class:`EveryFrame`."""
    return EveryFrame(source, loop)
