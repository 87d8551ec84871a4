"""What the pixel keys cost per captured frame, and the capture rate with them.

    python bench/pixels.py [--frames 600] [--capture-size 320x240] [--write]

The shared clip is read frame by frame at the capture size (decode and scale, as the
capture thread does); each frame's four measures (brightness, motion, warmth, dominant
colour: DIRECTOR.md keys with ``from: pixels``) are timed alone, and the whole loop
(read + measure) gives the frames per second one capture thread can keep up with.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))  # the random-weight model builders (tests/support)

from common import commit, cpu, report  # noqa: E402

from pete_osc.capture.pixels import PixelKeys  # noqa: E402
from pete_osc.capture.sources import open_source  # noqa: E402
from pete_osc.director.schema import parse_director  # noqa: E402

VIDEO = ROOT.parent / "shared" / "data" / "big_buck_bunny.mp4"
KEYS = """  light: {from: pixels, measure: brightness}
  movement: {from: pixels, measure: motion}
  warm: {from: pixels, measure: warmth}
  hue: {from: pixels, measure: color}
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--capture-size", default="320x240")
    ap.add_argument("--video", type=Path, default=VIDEO)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    width, height = (int(v) for v in args.capture_size.split("x"))
    director = parse_director((ROOT / "DIRECTOR.md").read_text().replace("keys:\n", "keys:\n" + KEYS, 1))
    keys = PixelKeys(director, "clip")
    source = open_source(str(args.video), width, height)
    costs, n = [], 0
    t0 = time.perf_counter()
    while n < args.frames:
        image = source.read()
        if image is None:
            source.rewind()
            continue
        start = time.perf_counter()
        keys.events(image, time.time())
        costs.append(time.perf_counter() - start)
        n += 1
    loop = time.perf_counter() - t0
    source.close()
    costs.sort()
    mean = statistics.mean(costs)
    p99 = costs[int(len(costs) * 0.99)]
    lines = [
        "### Pixel keys: cost per captured frame",
        "",
        f"- machine: {cpu()}",
        f"- date: {datetime.date.today()}, commit {commit()}",
        f"- command: `python bench/pixels.py --frames {args.frames} --capture-size {args.capture_size}`",
        f"- the shared clip decoded and scaled to {args.capture_size} (as the capture thread "
        "does), four pixel keys measured per frame (brightness, motion, warmth, dominant colour)",
        "",
        "| measures per frame: mean | median | p99 | read + measure, one thread |",
        "| ---: | ---: | ---: | ---: |",
        f"| {mean * 1000:.2f} ms | {costs[len(costs) // 2] * 1000:.2f} ms | {p99 * 1000:.2f} ms | "
        f"{n / loop:.0f} frames/s |",
    ]
    return report(lines, write=args.write)


if __name__ == "__main__":
    sys.exit(main())
