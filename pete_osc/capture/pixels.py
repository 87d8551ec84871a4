"""Keys measured from the pixels, on every captured frame: continuous controls at camera
rate beside the model's words a few times a second.

DIRECTOR.md declares them (``from: pixels`` with a ``measure``); they go through the
same mapping as the model's keys. Each measure is a pure function of a small copy of the
frame (80x60: a few hundred microseconds on one core), so it runs in the capture thread
for every frame without holding it up:

- ``brightness``: mean luma (Rec. 601), 0 (black) to 1 (white);
- ``motion``: mean absolute difference of luma from the previous frame of that source,
  0 (still) to 1, scaled so that a fully changed picture is near 1;
- ``warmth``: (red - blue) / (red + blue) over the frame, -1 (blue, cool light) to 1
  (red/amber, warm light);
- ``color``: the dominant colour: the mean colour of the most populated of 12 hue bins
  among pixels with some saturation and light (grey frames give their grey).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import numpy as np

from ..director.schema import Director, KeySpec
from ..records import Color, Event

SMALL = (80, 60)  # the copy measures are taken on (width, height)
MOTION_GAIN = 4.0  # mean |difference| of 0.25 (a quarter of full scale) reads as 1


@dataclass(frozen=True)
class Measures:
    """All measures of one frame (a frame's worth of pixel keys)."""

    brightness: float
    motion: float
    warmth: float
    color: Color


def measure(image_bgr: np.ndarray, previous_grey: np.ndarray | None) -> tuple[Measures, np.ndarray]:
    """The measures of ``image_bgr``, and its small grey copy (the next frame's previous)."""
    small = cv2.resize(image_bgr, SMALL, interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    brightness = float(grey.mean()) / 255.0
    if previous_grey is None:
        motion = 0.0
    else:
        diff = cv2.absdiff(grey, previous_grey)
        motion = min(1.0, float(diff.mean()) / 255.0 * MOTION_GAIN)
    b, _, r = (float(c) for c in small.reshape(-1, 3).mean(axis=0))
    warmth = (r - b) / (r + b) if r + b > 0 else 0.0
    return Measures(round(brightness, 4), round(motion, 4), round(warmth, 4),
                    dominant_color(small)), grey


def dominant_color(small_bgr: np.ndarray) -> Color:
    """The mean colour of the most populated hue bin (see the module docstring)."""
    hsv = cv2.cvtColor(small_bgr, cv2.COLOR_BGR2HSV).reshape(-1, 3)
    pixels = small_bgr.reshape(-1, 3)
    vivid = (hsv[:, 1] > 60) & (hsv[:, 2] > 40)
    if vivid.sum() < len(hsv) * 0.05:  # a grey picture: its mean grey
        chosen = pixels
    else:
        bins = (hsv[vivid, 0].astype(np.int32) * 12) // 180  # OpenCV hue is 0..179
        top = np.bincount(bins, minlength=12).argmax()
        chosen = pixels[vivid][bins == top]
    b, g, r = (int(round(float(c))) for c in chosen.mean(axis=0))
    hexcode = f"#{r:02x}{g:02x}{b:02x}"
    return Color(hexcode, hexcode, (r, g, b))


class PixelKeys:
    """The pixel keys of one source: turns each captured frame into Events."""

    def __init__(self, director: Director, source: str):
        self.director = director
        self.keys: dict[str, KeySpec] = dict(director.pixel_keys)
        self.source = source
        self._previous: np.ndarray | None = None
        self.seconds = 0.0  # time spent measuring (for the benchmark and the metrics)
        self.frames = 0

    def events(self, image_bgr: np.ndarray, captured_at: float) -> list[Event]:
        """One Event per pixel key for this frame (none without pixel keys)."""
        if not self.keys:
            return []
        t0 = time.perf_counter()
        values, self._previous = measure(image_bgr, self._previous)
        now = time.time()
        out = []
        for name, spec in self.keys.items():
            value = getattr(values, spec.measure)
            shown = value.hex if isinstance(value, Color) else f"{value:g}"
            out.append(Event(name, spec.type, value, f"{name}: {shown}", 0, -1, self.source,
                             captured_at, now))
        self.seconds += time.perf_counter() - t0
        self.frames += 1
        return out
