"""Capture: latest-frame-wins on real footage, folders, sizes, and clear errors."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from pete_osc.capture.latest import EveryFrame, LatestFrame
from pete_osc.capture.sources import fit, open_source
from pete_osc.engines import check_size, square_rgb
from pete_osc.errors import PeteError


def test_latest_frame_wins_and_counts_drops(shared_video):
    grabber = LatestFrame(open_source(str(shared_video), 320, 240))
    try:
        first = grabber.newest(timeout=5)
        assert first is not None and first.image.shape == (180, 320, 3)  # 640x360 fit in 320x240
        time.sleep(0.5)  # the file plays at 24 fps: ~12 frames arrive meanwhile
        second = grabber.newest(timeout=5)
        assert second.id - first.id >= 8, "the newest frame, not the next one, is handed out"
        assert grabber.dropped >= second.id - first.id - 1
        assert second.captured_at > first.captured_at
    finally:
        grabber.close()
    assert not grabber._thread.is_alive()


def test_every_frame_mode_loses_nothing(shared_video):
    frames = EveryFrame(open_source(str(shared_video)))
    ids = [next(frames).id for _ in range(30)]
    frames.close()
    assert ids == list(range(30))


def test_folder_of_images(tmp_path):
    for i, colour in enumerate([(0, 0, 255), (0, 255, 0)]):
        cv2.imwrite(str(tmp_path / f"{i:02d}.png"), np.full((100, 200, 3), colour, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    source = open_source(str(tmp_path), 320, 240)
    frames = list(EveryFrame(source))
    assert len(frames) == 2
    assert frames[0].image.shape == (160, 320, 3)
    assert tuple(frames[0].image[0, 0]) == (0, 0, 255)


@pytest.mark.parametrize("spec, message", [
    ("missing.mp4", "missing.mp4: no such file or folder"),
    ("7", "camera 7 could not be opened"),
])
def test_missing_sources_are_named(spec, message):
    with pytest.raises(PeteError, match=message):
        open_source(spec)


def test_empty_folder_and_unreadable_file(tmp_path):
    with pytest.raises(PeteError, match="no images in this folder"):
        open_source(str(tmp_path))
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(PeteError, match="cannot open it as video"):
        open_source(str(bad))


def test_fit_and_square_keep_the_picture():
    image = np.zeros((360, 640, 3), np.uint8)
    image[:, :320] = (255, 0, 0)  # left half blue in BGR
    assert fit(image, 320, 240).shape == (180, 320, 3)
    square = square_rgb(fit(image, 320, 240), 128)
    assert square.shape == (128, 128, 3)
    assert tuple(square[64, 10]) == (0, 0, 255)  # blue, now RGB
    assert tuple(square[2, 64]) == (0, 0, 0)  # black padding above the picture
    # ... and as much below: the picture is centred, as FastVLM's own processor pads it
    rows = np.flatnonzero(square[:, 10].any(axis=1))
    assert (rows[0], 127 - rows[-1]) == (28, 28), (rows[0], rows[-1])


@pytest.mark.parametrize("size, ok", [(64, True), (128, True), (1024, True), (100, False),
                                      (0, False), (1088, False)])
def test_sizes_are_multiples_of_64(size, ok):
    if ok:
        assert check_size(size) == size
    else:
        with pytest.raises(PeteError, match="multiple of 64"):
            check_size(size)


@pytest.mark.parametrize("mode", ["every-frame", "latest-frame"])
def test_loop_over_a_folder_with_no_readable_image_ends(tmp_path, mode):
    """--loop on a source that yields nothing ends instead of rewinding for ever."""
    from pete_osc.capture.latest import EveryFrame, LatestFrame
    from pete_osc.capture.sources import FolderSource

    (tmp_path / "broken.png").write_bytes(b"not a png")
    source = FolderSource(str(tmp_path), 320, 240)
    if mode == "every-frame":
        import threading

        got = []
        reader = threading.Thread(target=lambda: got.extend(EveryFrame(source, loop=True)),
                                  daemon=True)  # a daemon: a broken loop must not hang the suite
        reader.start()
        reader.join(5)
        assert not reader.is_alive(), "still rewinding"
        assert got == []
    else:
        grabber = LatestFrame(source, loop=True)
        try:
            assert grabber.ended.wait(5), "still rewinding"
            assert grabber.end_reason == "ended after 0 frames"
        finally:
            grabber.close()


def test_reopening_a_lost_camera_backs_off_up_to_its_cap(monkeypatch):
    """A camera that never comes back is tried again at growing intervals, but never
    less often than REOPEN_MAX (here made small so that the test takes a second)."""
    import time

    import pete_osc.capture.latest as capture

    monkeypatch.setattr(capture, "LOST_AFTER", 0.05)
    monkeypatch.setattr(capture, "REOPEN_FIRST", 0.01)
    monkeypatch.setattr(capture, "REOPEN_MAX", 0.04)
    tries = []

    class Gone(capture.Source):
        name, fps, live = "gone", 30.0, True

        def read(self):
            time.sleep(0.005)
            return None

        def reopen(self):
            tries.append(time.monotonic())
            return False

    grabber = capture.LatestFrame(Gone(), notify=lambda what, text: None)
    time.sleep(1.0)
    grabber.close()
    gaps = [b - a for a, b in zip(tries, tries[1:])]
    assert len(tries) >= 12, len(tries)  # 0.01, 0.02, then every 0.04 s
    assert max(gaps) < 0.08, gaps
