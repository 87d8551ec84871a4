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
from pathlib import Path

import cv2
import numpy as np

from ..errors import PeteError

log = logging.getLogger(__name__)

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
