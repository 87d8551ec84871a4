"""The sender in-process: outputs kept across a reload that does not change them, the
bookkeeping the status line and the metrics read while the sender thread writes it."""

from __future__ import annotations

import sys
import threading
import time

from support.peers import free_port, oscdump

from pete_osc.mapping.load import parse_mapping
from pete_osc.outputs.sender import Sender
from pete_osc.records import Event, OscMessage

MAPPING = "osc:\n  main: {port: %d}\nroutes:\n  - {event: energy, address: /e}\n"


def test_a_reload_that_keeps_an_output_keeps_it_open(director):
    port = free_port()
    sender = Sender(parse_mapping(MAPPING % port, director)).start()
    try:
        before = sender.outputs["main"]
        edited = parse_mapping(MAPPING % port + "  - {event: tempo, address: /t}\n", director)
        assert sender.reload(edited) == []  # nothing opened, nothing closed
        time.sleep(0.1)  # (the swap happens on the sender's thread)
        assert sender.outputs["main"] is before
        moved = parse_mapping(MAPPING % free_port(), director)
        assert [c.split(" ")[0] for c in sender.reload(moved)] == ["opened", "closed"]
    finally:
        sender.close()


def test_a_reload_mid_learn_ends_the_learning_and_the_show_is_heard_again(director):
    """The mapping edited while a route is being learnt: the sweep (a route of the mapping
    being replaced) stops there, its closing sent, and the show's events go out again."""
    port = free_port()
    dump = oscdump(port)
    text = MAPPING % port + "  - {event: tempo, address: /t}\n"
    sender = Sender(parse_mapping(text, director)).start()
    try:
        sender.learn(1, seconds=8.0)  # tempo, swept 60 -> 180 -> 60 over 8 s
        began = dump.take(3, timeout=3)
        assert [l.split(" ")[1] for l in began] == ["/t"] * 3, began
        sender.reload(parse_mapping(text.replace("/e", "/energy"), director))
        assert sender.learnt(1.0), "the learning went on after the mapping was reloaded"
        while dump.take(1000, timeout=0.3):  # what left before the reload, until quiet
            pass
        t0 = time.time()
        sender.event(Event("energy", "number", 0.5, "0.5", 1, 1, "cam", t0, t0))
        sender.end_frame(1)
        after = dump.take(1000, timeout=1.0)
    finally:
        sender.close()
        dump.stop()
    assert [l.split(" ")[1] for l in after] == ["/energy"], after


def test_the_first_message_of_a_frame_keeps_its_time(director):
    sender = Sender(parse_mapping(MAPPING % free_port(), director))
    before = time.time()
    sender._sent([OscMessage("main", "/e", (0.1,), frame_id=7)])
    first = time.time()
    time.sleep(0.02)
    sender._sent([OscMessage("main", "/e", (0.2,), frame_id=7)])
    assert before <= sender.first_sent(7) <= first  # the frame's first message, not its last


def test_what_the_status_reads_is_never_half_written(director):
    """The sender thread counts each message and notes it in words; another thread (the
    status line, the monitor page) reads both at any moment and must see them agree."""
    sender = Sender(parse_mapping(MAPPING % free_port(), director))
    done = threading.Event()
    torn = []
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible

    def write():
        for i in range(1, 30001):
            sender._sent([OscMessage("main", "/e", (i,))])
        done.set()

    writer = threading.Thread(target=write)
    try:
        writer.start()
        while not done.is_set():
            seen = sender.activity().get("main")
            if seen is not None and seen[1] != f"/e {seen[0]}":
                torn.append(seen)
    finally:
        writer.join()
        sys.setswitchinterval(interval)
    assert not torn, torn[:3]
