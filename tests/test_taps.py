"""Taps watch the show and can never stop it; a saved edit is noticed by its content."""

import logging
import time

from pete_osc.run.reload import Watch
from pete_osc.run.taps import Tap, Taps


class Broken(Tap):
    name = "a broken tap"

    def __init__(self):
        self.seen = 0

    def take(self, record):
        self.seen += 1
        raise OSError(28, "No space left on device")


class Counting(Tap):
    name = "counting"

    def __init__(self):
        self.seen = []
        self.closed = False

    def take(self, record):
        self.seen.append(record)

    def close(self):
        self.closed = True


def test_a_failing_tap_is_said_once_and_switched_off(caplog):
    broken, counting = Broken(), Counting()
    taps = Taps([broken, None, counting])
    with caplog.at_level(logging.WARNING):
        for i in range(5):
            taps.take(i)
    taps.close()
    assert broken.seen == 1 and counting.seen == [0, 1, 2, 3, 4] and counting.closed
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["a broken tap failed (OSError: [Errno 28] No space left on device); "
                     "it is off from now on, the show goes on"]


def test_watch_sees_a_saved_edit_once(tmp_path):
    director, mapping = tmp_path / "DIRECTOR.md", tmp_path / "m.yaml"
    director.write_text("a")
    mapping.write_text("b")
    watch = Watch(director, mapping)
    assert not watch.due()
    time.sleep(0.01)
    mapping.write_text("bb")
    assert watch.due() and not watch.due()
    mapping.unlink()  # an editor between deleting and writing: not yet
    assert not watch.due()
    mapping.write_text("ccc")
    assert watch.due()
    pinned = Watch(director, mapping, enabled=False)
    director.write_text("changed")
    assert not pinned.due()
