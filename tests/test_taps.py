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


# ---- the token stream on stdout with several frames at once (a batch) ------------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def echo_of(steps, sources=2, end_lines=False):
    """Feed TokenEcho records: ("start", id), ("text", id, piece), ("end", id)."""
    import io

    import numpy as np

    from pete_osc.records import Frame, FrameReport, FrameStart, Text
    from pete_osc.run.taps import TokenEcho

    out = io.StringIO()
    echo = TokenEcho(out, sources=sources, end_lines=end_lines)
    for step in steps:
        if step[0] == "start":
            echo.take(FrameStart(Frame(step[1], np.zeros((2, 2, 3), np.uint8), 0.0,
                                       f"s{step[1]}"), None))
        elif step[0] == "text":
            echo.take(Text(step[1], f"s{step[1]}", step[2], 0.0))
        else:
            echo.take(FrameReport(step[1], 0.0))
    echo.close()
    return out.getvalue()


def sections(text):
    """Each frame's text, read back as `pete-osc parse` reads stdout (marker lines)."""
    from pete_osc.director.parser import FRAME_MARK

    got, frame = {}, None
    for line in text.splitlines(keepends=True):
        mark = FRAME_MARK.match(line)
        if mark:
            frame = int(mark.group(1))
            assert mark.group(2) == f"s{frame}"
            continue
        got[frame] = got.get(frame, "") + line
    return got


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_frames_answered_together_come_out_whole_line_by_line(data):
    """Any interleaving of two or three frames' tokens: every frame's text comes back
    whole under its own frame lines, no line holds two frames' text, and with one frame
    open at a time the stream is token by token as before (one marker per frame)."""
    n = data.draw(st.integers(1, 3))
    answers = {i: data.draw(st.lists(st.sampled_from(["color: red\n", "mood: calm\n",
                                                       "energy: 0.7\n", "tempo: 12"]),
                                     min_size=1, max_size=4)) for i in range(n)}
    pieces = {}
    for i, lines in answers.items():
        text = "".join(lines)
        cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(text) - 1)), max_size=6)))
        bounds = [0, *cuts, len(text)]
        pieces[i] = [text[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]
    queues = {i: [("start", i)] + [("text", i, p) for p in pieces[i]] + [("end", i)]
              for i in range(n)}
    steps = []
    while any(queues.values()):
        i = data.draw(st.sampled_from([k for k, q in queues.items() if q]))
        steps.append(queues[i].pop(0))
    got = sections(echo_of(steps, sources=n + 1))
    for i, lines in answers.items():
        text = "".join(lines)
        assert got.get(i, "").rstrip("\n") == text.rstrip("\n"), (steps, got)


def test_one_frame_at_a_time_streams_token_by_token():
    steps = [("start", 0), ("text", 0, "color: r"), ("text", 0, "ed\n"), ("end", 0),
             ("start", 1), ("text", 1, "mood"), ("end", 1)]
    assert echo_of(steps) == ("--- frame 0 from s0\ncolor: red\n--- frame 1 from s1\nmood\n")
    # Two at once: frame 1's line waits for frame 0's half-written line.
    steps = [("start", 0), ("text", 0, "color: r"), ("start", 1), ("text", 1, "mood: calm\n"),
             ("text", 0, "ed\nen"), ("end", 1), ("text", 0, "ergy: 1\n"), ("end", 0)]
    assert echo_of(steps) == ("--- frame 0 from s0\ncolor: red\n--- frame 1 from s1\n"
                              "mood: calm\n--- frame 0 from s0\nenergy: 1\n")
    # (frame 1's line left as soon as frame 0's line was whole, before frame 1 ended)
    assert echo_of(steps[:5]).startswith("--- frame 0 from s0\ncolor: red\n--- frame 1")
