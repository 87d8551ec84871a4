"""Keys measured from the pixels: real video written and read back with OpenCV, the
DIRECTOR.md schema, and the capture path at camera rate through a mapping to oscdump."""

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from support.peers import ROOT, free_port, oscdump, without_time

from pete_osc.capture.pixels import PixelKeys, measure
from pete_osc.capture.sources import open_source
from pete_osc.director.grammar import lark_grammar
from pete_osc.director.schema import parse_director
from pete_osc.errors import PeteError

PIXEL_KEYS = """  light:
    from: pixels
    measure: brightness
  movement:
    from: pixels
    measure: motion
  warm:
    from: pixels
    measure: warmth
  hue:
    from: pixels
    measure: color
"""


def director_with_pixels(tmp_path: Path) -> Path:
    text = (ROOT / "DIRECTOR.md").read_text().replace("keys:\n", "keys:\n" + PIXEL_KEYS, 1)
    path = tmp_path / "DIRECTOR.md"
    path.write_text(text)
    return path


def write_clip(path: Path, fps: float = 25.0) -> Path:
    """10 dark still frames, 10 bright still frames, then 10 with a square moving."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (320, 240))
    dark = np.full((240, 320, 3), 20, np.uint8)
    bright = np.full((240, 320, 3), 230, np.uint8)
    for _ in range(10):
        writer.write(dark)
    for _ in range(10):
        writer.write(bright)
    for i in range(10):
        moving = dark.copy()
        x = 20 + 25 * i
        moving[60:180, x:x + 80] = (255, 255, 255)
        writer.write(moving)
    writer.release()
    return path


def read_all(spec: str) -> list:
    source = open_source(spec, 320, 240)
    frames = []
    while (image := source.read()) is not None:
        frames.append(image)
    source.close()
    return frames


def test_brightness_and_motion_follow_the_video_within_two_frames(tmp_path):
    frames = read_all(str(write_clip(tmp_path / "clip.avi")))
    assert len(frames) == 30
    keys = PixelKeys(parse_director(director_with_pixels(tmp_path).read_text()), "clip")
    rows = [{e.key: e.value for e in keys.events(image, 0.0)} for image in frames]
    light = [r["light"] for r in rows]
    movement = [r["movement"] for r in rows]
    assert max(light[:10]) < 0.15 and min(light[12:20]) > 0.8
    assert next(i for i, v in enumerate(light) if v > 0.5) <= 11  # the cut is at frame 10
    # Still frames: no motion (the cut itself is one frame of change); moving: motion.
    assert max(movement[1:10]) < 0.01 and max(movement[12:20]) < 0.01
    assert movement[10] > 0.5
    assert next(i for i in range(20, 30) if movement[i] > 0.05) <= 21
    assert min(movement[21:30]) > 0.05


def test_a_folder_of_identical_stills_has_no_motion(tmp_path):
    image = np.random.default_rng(3).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    for i in range(5):
        cv2.imwrite(str(tmp_path / f"{i}.png"), image)
    text = (ROOT / "DIRECTOR.md").read_text().replace("keys:\n", "keys:\n" + PIXEL_KEYS, 1)
    keys = PixelKeys(parse_director(text), "s")
    frames = read_all(str(tmp_path))
    assert len(frames) == 5
    assert [next(e.value for e in keys.events(f, 0.0) if e.key == "movement") for f in frames] == [0.0] * 5


@pytest.mark.parametrize("bgr,warm,hue", [
    ((0, 0, 220), 1.0, (220, 0, 0)),     # red light: warm, red
    ((220, 0, 0), -1.0, (0, 0, 220)),    # blue light: cool, blue
    ((128, 128, 128), 0.0, (128, 128, 128)),  # grey: neither, its grey
])
def test_warmth_and_the_dominant_colour(bgr, warm, hue):
    image = np.zeros((240, 320, 3), np.uint8)
    image[:] = bgr
    values, _ = measure(image, None)
    assert values.warmth == pytest.approx(warm, abs=0.01)
    assert values.color.rgb == hue


def test_the_dominant_colour_is_the_largest_hue_not_the_mean():
    image = np.zeros((240, 320, 3), np.uint8)
    image[:, :200] = (0, 0, 230)  # red, most of the frame
    image[:, 200:] = (0, 200, 0)  # green
    assert measure(image, None)[0].color.rgb == (230, 0, 0)


def test_pixel_keys_are_not_asked_of_the_model(tmp_path):
    director = parse_director(director_with_pixels(tmp_path).read_text())
    assert set(director.pixel_keys) == {"light", "movement", "warm", "hue"}
    assert "light" in director.keys  # a mapping may route it
    assert "light:" not in director.prompt and "movement" not in director.prompt
    assert "k_light" not in lark_grammar(director)
    from pete_osc.director.parser import parse_line
    from pete_osc.records import FrameInfo

    rejected = parse_line(director, "light: 0.5", 1, FrameInfo(0, "s", 0.0), 0.0)
    assert rejected.reason == "'light' is measured from the pixels, not asked of the model"


@pytest.mark.parametrize("spec,message", [
    ("  glow:\n    from: pixels\n    measure: sparkle\n", "measure must be one of brightness, motion, warmth, color"),
    ("  glow:\n    from: camera\n    measure: motion\n", "'from' can only be 'pixels'"),
    ("  glow:\n    from: pixels\n    measure: color\n    type: number\n", "color is a color"),
])
def test_bad_pixel_keys_are_refused_with_their_line(spec, message):
    text = (ROOT / "DIRECTOR.md").read_text().replace("keys:\n", "keys:\n" + spec, 1)
    with pytest.raises(PeteError, match=message) as err:
        parse_director(text)
    assert str(err.value).startswith("DIRECTOR.md:")


def test_pixel_keys_reach_osc_at_camera_rate(tmp_path, cli_env):
    """The capture path, not the model: a replay engine answers every 0.6 s, while every
    captured frame's brightness goes out through the mapping."""
    clip = write_clip(tmp_path / "clip.avi", fps=25)
    director = director_with_pixels(tmp_path)
    port = free_port()
    mapping = tmp_path / "m.yaml"
    mapping.write_text(f"osc:\n  main: {{port: {port}}}\nroutes:\n"
                       "  - {event: light, address: /light}\n"
                       "  - {event: energy, address: /energy}\n")
    answer = tmp_path / "a.txt"
    answer.write_text("".join(f"--- frame {i}\nenergy: 0.5\n" for i in range(8)))  # outlasts the clip
    dump = oscdump(port)
    try:
        proc = subprocess.run([sys.executable, "-m", "pete_osc", "run", "--engine", "replay",
                               "--replay", str(answer), "--replay-speed", "0.5",
                               "--source", str(clip), "--director", str(director),
                               "--mapping", str(mapping), "--fps", "0", "--quiet"],
                              capture_output=True, text=True, env=cli_env, timeout=60)
        got = [without_time(l) for l in dump.take(500, timeout=1.0)]
    finally:
        dump.stop()
    assert proc.returncode == 0, proc.stderr
    light = [float(l.split(" ")[2]) for l in got if l.startswith("/light ")]
    energy = [l for l in got if l.startswith("/energy ")]
    # Every one of the 30 frames was measured, far more often than the model answered.
    assert len(light) == 30, light
    assert len(energy) < 5
    assert max(light[:10]) < 0.15 and min(light[11:20]) > 0.8
