"""A target's message-rate cap: what is over it waits, and a newer value for the same
control replaces the waiting one (pure, time passed in); then through a real OSC peer."""

import subprocess
import sys

from support.midi import midi
from support.peers import free_port, oscdump, without_time

from pete_osc.outputs.pace import Pace, control_of
from pete_osc.records import OscMessage


def cc(value, number=74):
    return midi("synth", 0xB0, number, value)


def note(n):
    return midi("synth", 0x90, n, 100)


def test_over_the_cap_the_newest_value_of_each_control_wins_and_notes_wait_in_order():
    pace = Pace(rate=10, burst=1)  # one message per 0.1 s
    assert pace.offer(cc(1), 0.0) == [cc(1)]
    # A flood within the next 0.1 s: CC 74 three times, CC 71 once, two notes.
    for message in (cc(2), note(60), cc(3), cc(5, 71), cc(4), note(62)):
        assert pace.offer(message, 0.01) == []
    assert pace.coalesced == 2 and pace.waiting == 4  # CC 74 = 4 in CC 74 = 2's place
    sent = [m for t in (0.1, 0.2, 0.3, 0.4, 0.5) for m in pace.due(t)]
    assert sent == [cc(4), note(60), cc(5, 71), note(62)]
    assert pace.due(1.0) == [] and pace.offer(cc(9), 1.0) == [cc(9)]  # free again


def test_a_burst_then_the_rate():
    pace = Pace(rate=100, burst=3)
    out = [pace.offer(cc(i, number=i), 0.0) for i in range(5)]
    assert [len(o) for o in out] == [1, 1, 1, 0, 0]
    assert pace.due(0.005) == [] and pace.due(0.01) == [cc(3, 3)] and pace.due(0.02) == [cc(4, 4)]


def test_what_a_control_is():
    assert control_of(OscMessage("m", "/live/device/set/parameter/value", (0, 0, 1, 0.5))) == \
        control_of(OscMessage("m", "/live/device/set/parameter/value", (0, 0, 1, 0.9)))
    assert control_of(OscMessage("m", "/p", (0, 0, 1, 0.5))) != control_of(OscMessage("m", "/p", (0, 0, 2, 0.5)))
    assert control_of(midi("s", 0xC0, 5)) == control_of(midi("s", 0xC0, 9))
    assert control_of(note(60)) is None and control_of(midi("s", 0x80, 60, 0)) is None


def test_a_flood_reaches_oscdump_as_its_first_and_last_values(tmp_path, cli_env):
    port = free_port()
    path = tmp_path / "m.yaml"
    path.write_text(f"osc:\n  main: {{host: 127.0.0.1, port: {port}, max_rate: 20}}\n"
                    "routes:\n  - {event: energy, address: /e}\n  - {event: mood, address: /m}\n")
    lines = "".join(f"energy: {i / 100:.2f}\n" for i in range(100)) + "mood: calm\n"
    dump = oscdump(port)
    try:
        proc = subprocess.run([sys.executable, "-m", "pete_osc", "send", "--mapping", str(path)],
                              input=lines, capture_output=True, text=True, env=cli_env, timeout=60)
        assert proc.returncode == 0, proc.stderr
        import re

        m = re.search(r"(\d+) messages sent, (\d+) merged into newer values over a "
                      r"target's max_rate", proc.stderr)
        assert m, proc.stderr
        sent, merged = int(m[1]), int(m[2])
        assert sent + merged == 101 and merged >= 80  # a flood of 101 in well under a second
        got = [without_time(l) for l in dump.take(sent)]
        assert dump.take(1, timeout=0.5) == []
        energy = [l for l in got if l.startswith("/e ")]
        # The first value at once, the last one always (the newest wins), in order.
        assert energy[0] == "/e f 0.000000" and energy[-1] == "/e f 0.990000"
        assert energy == sorted(energy) and got.count('/m s "calm"') == 1
    finally:
        dump.stop()


def test_a_long_quiet_spell_saves_no_more_than_the_burst():
    pace = Pace(rate=10, burst=2)
    assert pace.offer(cc(0, 1), 0.0) == [cc(0, 1)]
    # Ten seconds of nothing would earn 100 messages; the bucket holds the burst only.
    out = [pace.offer(cc(i, number=10 + i), 10.0) for i in range(6)]
    assert [len(o) for o in out] == [1, 1, 0, 0, 0, 0]
