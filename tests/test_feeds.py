"""Several sources for one engine: names, fair turns, a stalled source passed over."""

import threading
import time

import numpy as np
import pytest

from pete_osc.capture.feeds import Feeds, SourceSpec, default_name, parse_sources
from pete_osc.capture.sources import Source
from pete_osc.errors import PeteError


@pytest.mark.parametrize("values, expected", [
    (["0"], [("cam0", "0")]),
    (["stage=0", "crowd=clip.mp4"], [("stage", "0"), ("crowd", "clip.mp4")]),
    (["clips/big buck.mp4", "other/big buck.mp4"], [("big-buck", "clips/big buck.mp4"),
                                                    ("big-buck-2", "other/big buck.mp4")]),
    (["http://10.0.0.5:8080/video?action=stream"],
     [("video", "http://10.0.0.5:8080/video?action=stream")]),
    (["cam=http://10.0.0.5:8080/?a=b"], [("cam", "http://10.0.0.5:8080/?a=b")]),
    (["none", "stills/"], [("blank", "none"), ("stills", "stills/")]),
])
def test_source_names(values, expected):
    assert [(s.name, s.spec) for s in parse_sources(values)] == expected


def test_source_names_refused():
    with pytest.raises(PeteError, match="same name"):
        parse_sources(["a=0", "a=1"])
    with pytest.raises(PeteError, match="letters, digits"):
        parse_sources(["my cam=0"])


def test_default_name_of_a_url_without_path():
    assert default_name("rtsp://192.168.1.20") == "192-168-1-20"


class Counting(Source):
    """A live source of numbered frames; ``stalled`` makes it deliver nothing."""

    live = True
    fps = 100.0

    def __init__(self, name: str, stalled: threading.Event | None = None):
        self.name = name
        self.stalled = stalled or threading.Event()
        self.n = 0

    def read(self):
        time.sleep(0.005)
        if self.stalled.is_set():
            return None
        self.n += 1
        return np.full((8, 8, 3), self.n % 256, np.uint8)

    def reopen(self) -> bool:
        return not self.stalled.is_set()


def take(feeds: Feeds, n: int, stop: threading.Event, pause: float = 0.0) -> list:
    frames = []
    deadline = time.monotonic() + 10
    while len(frames) < n and time.monotonic() < deadline:
        frame = feeds.next(stop, timeout=0.1)
        if frame is not None:
            frames.append(frame)
            time.sleep(pause)
    return frames


def test_sources_take_turns_and_ids_are_unique():
    stop = threading.Event()
    feeds = Feeds([("a", Counting("a")), ("b", Counting("b")), ("c", Counting("c"))])
    try:
        time.sleep(0.1)  # every source has a frame ready...
        # ...and one again by its next turn, as a model slower than the cameras takes them
        # (taken back to back, a busy 2-core machine may pass over a source with nothing
        # new yet, which is the design, not a turn lost)
        frames = take(feeds, 30, stop, pause=0.02)
    finally:
        feeds.close()
    assert [f.source for f in frames[:6]] == ["a", "b", "c", "a", "b", "c"]
    assert {f.source: sum(1 for g in frames if g.source == f.source) for f in frames} == \
        {"a": 10, "b": 10, "c": 10}
    assert [f.id for f in frames] == list(range(30))


def test_a_stalled_source_never_blocks_the_others_and_comes_back():
    stop = threading.Event()
    stalled = threading.Event()
    notices = []
    feeds = Feeds([("a", Counting("a")), ("b", Counting("b", stalled))],
                  notify=lambda source, what, text: notices.append((source, what)))
    try:
        take(feeds, 4, stop)
        stalled.set()
        time.sleep(0.2)
        during = take(feeds, 20, stop)
        assert {f.source for f in during[5:]} == {"a"}  # b delivers nothing: a goes on
        time.sleep(1.5)  # b is silent past LOST_AFTER: announced lost, reopened with backoff
        stalled.clear()  # reopened at the next try of the backoff (0.5, 1, 2 s...)
        back = []
        deadline = time.monotonic() + 10
        while "b" not in {f.source for f in back} and time.monotonic() < deadline:
            back += take(feeds, 10, stop)
    finally:
        feeds.close()
    assert ("b", "lost") in notices and ("b", "back") in notices
    assert notices.count(("b", "lost")) == 1 and notices.count(("b", "back")) == 1
    assert "b" in {f.source for f in back}


def test_fps_paces_each_source():
    stop = threading.Event()
    feeds = Feeds([("a", Counting("a")), ("b", Counting("b"))], fps=5)
    try:
        # Every source has its first frame before the first tick (on a busy machine b's
        # thread may start first: a with nothing yet is passed over, by design, and the
        # turns then run b, a, b...).
        ready = time.monotonic() + 5
        while any(f.latest.waiting_since() is None for f in feeds.feeds) \
                and time.monotonic() < ready:
            time.sleep(0.005)
        t0 = time.monotonic()
        frames = take(feeds, 6, stop)
        took = time.monotonic() - t0
    finally:
        feeds.close()
    # 5 frames a second per source: 6 frames (3 each) need two periods, not six.
    assert [f.source for f in frames] == ["a", "b"] * 3
    assert 0.3 < took < 1.2


class Camera(Counting):
    """A live source at 25 frames a second, as a webcam delivers them."""

    def read(self):
        time.sleep(0.04)
        self.n += 1
        return np.full((8, 8, 3), self.n % 256, np.uint8)


def test_a_paced_tick_takes_the_frame_captured_after_it():
    """At --fps 4 from a 25 fps camera, a tick that finds the engine idle takes the next
    frame the camera delivers, not the one already waiting (up to 40 ms old): every frame
    is only a few ms old when taken, where taking the waiting one gives ages all over
    0..40 ms (the tick's phase against the camera's moves by a quarter frame each tick)."""
    stop = threading.Event()
    feeds = Feeds([("cam", Camera("cam"))], fps=4)
    ages = []
    try:
        time.sleep(0.2)
        for _ in range(9):
            frame = feeds.next(stop, timeout=1.0)
            ages.append(time.time() - frame.captured_at)
    finally:
        feeds.close()
    assert max(ages[1:]) < 0.02, [round(a * 1000, 1) for a in ages]


def test_files_end_and_say_so(tmp_path):
    import cv2

    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((16, 16, 3), i * 40, np.uint8))
    from pete_osc.capture.sources import open_source

    stop = threading.Event()
    notices = []
    feeds = Feeds([("stills", open_source(str(tmp_path))), ("live", Counting("live"))],
                  every_frame=True, notify=lambda s, what, text: notices.append((s, what, text)))
    try:
        frames = take(feeds, 12, stop)
    finally:
        feeds.close()
    assert sum(1 for f in frames if f.source == "stills") == 3
    assert ("stills", "ended", "source stills ended after 3 frames") in notices
    assert not feeds.ended  # the live source goes on


def test_specs_are_frozen():
    spec = SourceSpec("a", "0")
    with pytest.raises(Exception):
        spec.name = "b"


def test_a_tick_waiting_for_its_fresh_frame_keeps_its_turn():
    """A paced camera whose tick waits a few ms for its next frame is not jumped by a
    source whose frame comes sooner: the turns stay cam, other, cam, other."""
    stop = threading.Event()
    feeds = Feeds([("cam", Camera("cam")), ("other", Counting("other"))], fps=4)
    try:
        time.sleep(0.2)
        frames = take(feeds, 8, stop)
    finally:
        feeds.close()
    assert [f.source for f in frames] == ["cam", "other"] * 4


def test_ticks_an_engine_was_too_slow_for_are_not_made_up_in_a_burst():
    """At --fps 5 an engine that takes a second per frame misses ticks; when it is quick
    again it does not get the missed ticks' (stale) frames back to back."""
    stop = threading.Event()
    feeds = Feeds([("a", Counting("a"))], fps=5)
    try:
        take(feeds, 1, stop)
        time.sleep(1.0)  # a slow answer: four ticks go by
        t0 = time.monotonic()
        quick = []
        while time.monotonic() - t0 < 0.3:  # the engine is quick again
            frame = feeds.next(stop, timeout=0.05)
            if frame is not None:
                quick.append(time.monotonic() - t0)
    finally:
        feeds.close()
    # The late tick's frame, then the pace again: not the four missed ticks at once.
    assert len(quick) <= 3, [round(t, 3) for t in quick]
