"""Weighted prompts for live music models (issue 30, item 4): the crossfade's rules for
every sequence of texts, the prompt route in a mapping, and the mrt2 mapping's messages
as a UDP receiver (oscdump) and Pure Data's [oscparse] get them."""

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.peers import ROOT, Lines, free_port, need, oscdump, wait_listening

from pete_osc.director.schema import load_director
from pete_osc.director.values import parse_color
from pete_osc.errors import PeteError
from pete_osc.mapping.load import parse_mapping
from pete_osc.mapping.prompts import Crossfade, prompt_text
from pete_osc.mapping.router import Router
from pete_osc.records import Event, MidiMessage, OscMessage

DIRECTOR = load_director(ROOT / "DIRECTOR.md")
MRT2 = (ROOT / "mappings" / "mrt2.yaml").read_text()


# ---- the crossfade, pure ---------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d"]),
                          st.floats(0.0, 3.0)), min_size=1, max_size=12),
       st.sampled_from([(0, 1), (0, 1, 2), (3, 5)]), st.sampled_from([0.0, 0.5, 2.0]))
def test_crossfade_rules_hold_for_any_changes(changes, slots, fade):
    """Whatever the texts and their times: only the route's slots are used, weights stay
    in 0..weight, a slot's text never changes without the slot being cleared first, and
    once the fades are over exactly the last text stands at full weight, every other
    slot cleared."""
    fader = Crossfade(slots, 0.8, fade, 0.1)
    held: dict[int, str] = {}  # what the receiver holds per slot, from the messages
    weights: dict[int, float] = {}
    now = 0.0

    def take(messages):
        for slot, text, weight in messages:
            assert slot in slots
            if text is None:
                held.pop(slot, None)
                weights.pop(slot, None)
                continue
            assert held.get(slot, text) == text, "a slot took a new text without a clear"
            assert 0.0 <= weight <= 0.8
            held[slot], weights[slot] = text, weight

    for text, wait in changes:
        take(fader.set(text, now))
        end = now + wait
        while now < end:
            now = round(now + 0.05, 6)
            take(fader.due(now))
    now += fade + 1.0
    take(fader.due(now))
    last = changes[-1][0]
    assert held == {next(s for s, t in held.items() if t == last): last}
    assert list(weights.values()) == [0.8]
    assert not fader.busy(now + 1)


def test_a_change_fades_the_old_prompt_down_and_the_new_one_up():
    fader = Crossfade((0, 1), 1.0, 2.0, 0.5)
    assert fader.set("calm orange", 0.0) == [(0, "calm orange", 1.0)]  # the first: at once
    assert fader.set("calm orange", 0.3) == []
    assert fader.set("tense red", 1.0) == [(1, "tense red", 0.0)]
    assert fader.due(1.2) == []  # (a step every 0.5 s)
    assert fader.due(1.5) == [(0, "calm orange", 0.75), (1, "tense red", 0.25)]
    assert fader.due(2.0) == [(0, "calm orange", 0.5), (1, "tense red", 0.5)]
    assert fader.due(3.0) == [(0, None, 0.0), (1, "tense red", 1.0)]  # cleared at 0
    assert fader.due(9.0) == [] and fader.weighted(9.0) == [("tense red", 1.0)]


def test_prompt_text_leaves_out_the_keys_not_yet_seen():
    assert prompt_text("{mood} {color}, {scene}", {}) is None
    assert prompt_text("{mood} {color}, {scene}", {"mood": "tense"}) == "tense"
    assert prompt_text("{mood} {color}, {scene}", {"mood": "tense", "scene": "a street"}) \
        == "tense , a street"


# ---- the mapping ---------------------------------------------------------------------
def events(router, t, **values):
    out = []
    for key, value in values.items():
        kind = DIRECTOR.keys[key].type
        v = parse_color(value) if kind == "color" else value
        out += router.event(Event(key, kind, v, f"{key}: {value}", 1, 1, "cam", t, t), t)
    return out + router.end_frame(t)


def prompts(messages):
    return [m.args for m in messages if isinstance(m, OscMessage) and m.address == "/mrt2/prompt"]


def test_the_mrt2_mapping_settles_then_crossfades_and_its_notes_end():
    router = Router(parse_mapping(MRT2, DIRECTOR))
    first = events(router, 0.0, mood="calm", color="orange", energy=0.5, brightness=0.5,
                   scene="a street")
    assert prompts(first) == [(0, "calm orange", 1.0), (2, "a street", 0.5)]
    notes = [m.message.note for m in first if isinstance(m, MidiMessage)]
    assert len(notes) == 4 and len(set(notes)) == 4  # (energy 0.5: 4 voices)
    second = events(router, 0.5, mood="tense", color="red")
    assert prompts(second) == []  # 1 frame of 3: not settled, waits
    third = events(router, 1.0, mood="tense", color="red")
    assert prompts(third) == [(1, "tense red", 0.0)]
    steps = [router.tick(1.0 + i * 0.25) for i in range(1, 18)]
    ups = [a[2] for s in steps for a in prompts(s) if a[:2] == (1, "tense red")]
    downs = [a[2] for s in steps for a in prompts(s) if a[:2] == (0, "calm orange")]
    assert ups == sorted(ups) and ups[-1] == 1.0 and len(ups) >= 10
    assert downs == sorted(downs, reverse=True) and len(downs) >= 10
    assert (0,) in [a for s in steps for a in prompts(s)]  # the old slot cleared
    sounding: set[int] = set()
    for m in first + second + third + [x for s in steps for x in s] + router.closing():
        if isinstance(m, MidiMessage) and m.message.type == "note_on":
            assert m.message.note not in sounding  # no pitch on twice
            sounding.add(m.message.note)
        elif isinstance(m, MidiMessage) and m.message.type == "note_off":
            sounding.discard(m.message.note)
    assert not sounding  # every note released at the end


@pytest.mark.parametrize("old, new, error", [
    ('prompt: "{mood} {color}"', 'prompt: "{mood} {colour}"', "{colour}, which is not a key"),
    ('prompt: "{mood} {color}"', 'prompt: "no keys"', "naming keys in braces"),
    ("slots: [0, 1]", "slots: [0]", "two or more whole numbers"),
    ("fade: 4", "fade: -1", "expected a number"),
    ("weight: 1.0", "weight: 0", "expected a number"),
    ("fade: 4", "fade: 4\n    sloths: 2", "unknown prompt route setting 'sloths'"),
])
def test_a_prompt_route_is_checked_with_its_line(old, new, error):
    assert old in MRT2
    with pytest.raises(PeteError) as info:
        parse_mapping(MRT2.replace(old, new, 1), DIRECTOR, Path("mrt2.yaml"))
    assert error in str(info.value), info.value
    assert re.match(r"mrt2.yaml:(39|4[0-5]): ", str(info.value)), info.value  # its lines


def test_notes_as_osc_must_name_an_osc_target():
    text = MRT2.replace("{osc: mrt2,", "{osc: nowhere,")
    with pytest.raises(PeteError, match=r"mrt2.yaml:\d+: .*'osc:' must name one of the OSC "
                                        r"targets \(mrt2\)"):
        parse_mapping(text, DIRECTOR, Path("mrt2.yaml"))


# ---- on the wire ---------------------------------------------------------------------
def quick(port: int) -> str:
    """The mrt2 mapping at ``port``, fading in 1 s with a step every 0.2 s."""
    return (MRT2.replace("port: 9000", f"port: {port}")
            .replace("fade: 4", "fade: 1\n    step: 0.2").replace("fade: 6", "fade: 1")
            .replace("settle: 3", "settle: 1"))


def send_frames(mapping: Path, frames: list[str], gap: float, env) -> subprocess.CompletedProcess:
    proc = subprocess.Popen([sys.executable, "-m", "pete_osc", "send", "--mapping", str(mapping)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    for frame in frames:
        proc.stdin.write(frame)
        proc.stdin.flush()
        time.sleep(gap)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return err


FRAMES = ["--- frame 1\ncolor: orange\nmood: calm\nenergy: 0.5\nbrightness: 0.5\n"
          "scene: a street\n",
          "--- frame 2\ncolor: red\nmood: tense\nenergy: 0.9\nbrightness: 0.5\n"
          "scene: a street\n"]


def test_a_udp_receiver_gets_string_prompts_and_float_weights_that_fade(tmp_path, cli_env):
    port = free_port()
    path = tmp_path / "mrt2.yaml"
    path.write_text(quick(port))
    dump = oscdump(port)
    try:
        # (a frame's answer ends at the next frame's line: the third starts the fade)
        send_frames(path, FRAMES + [FRAMES[1].replace("frame 2", "frame 3")], 1.5, cli_env)
        lines = dump.take(400, timeout=2)
    finally:
        dump.stop()
    got = [line.split(" ", 1)[1] for line in lines if "/mrt2/prompt" in line]
    assert got[:2] == ['/mrt2/prompt isf 0 "calm orange" 1.000000',
                       '/mrt2/prompt isf 2 "a street" 0.500000']
    up = [float(line.split()[-1]) for line in got if '1 "tense red"' in line]
    down = [float(line.split()[-1]) for line in got if '0 "calm orange"' in line][1:]
    assert up[0] == 0.0 and up[-1] == 1.0 and up == sorted(up) and len(up) >= 4, got
    assert down == sorted(down, reverse=True) and len(down) >= 3, got
    assert "/mrt2/prompt i 0" in got  # the faded slot cleared
    notes = [line for line in lines if "/mrt2/note" in line]
    assert notes and all(" i " in line for line in notes)  # ADDRESS NOTE, an int
    on = [line.split()[-1] for line in notes if "noteon" in line]
    off = [line.split()[-1] for line in notes if "noteoff" in line]
    assert sorted(on) == sorted(off)  # every note released by the end


def test_pure_data_hands_mrt2_its_messages(tmp_path, cli_env):
    """examples/magenta/mrt2.pd in a real Pd (mrt2~ itself absent here): [oscparse] gives
    its [print mrt2] mrt2~'s own messages, the prompt's text as one symbol."""
    pd = need("pd", "puredata-core")
    port = free_port()
    receiver = Lines([pd, "-nogui", "-nosound", "-noprefs", "-stderr", "-send",
                      f"pete-port {port}", str(ROOT / "examples" / "magenta" / "mrt2.pd")],
                     stderr=True)
    try:
        wait_listening(port, "udp", timeout=10)
        path = tmp_path / "mrt2.yaml"
        path.write_text(quick(port))
        send_frames(path, FRAMES[:1], 0.2, cli_env)
        got = [line for line in receiver.take(20, timeout=5) if line.startswith("mrt2:")]
    finally:
        receiver.stop()
    assert got[:3] == ["mrt2: temperature 1.1", "mrt2: prompt 0 calm\\ orange 1",
                       "mrt2: prompt 2 a\\ street 0.5"], got
    assert sum(line.startswith("mrt2: noteon ") for line in got) == 4
    assert sum(line.startswith("mrt2: noteoff ") for line in got) == 4
