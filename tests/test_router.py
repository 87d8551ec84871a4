"""The mapping applied to events, with explicit time: exact messages out."""

import pytest
from support.events import ev
from support.midi import data, midi

from pete_osc.mapping.load import parse_mapping
from pete_osc.mapping.router import Router
from pete_osc.records import Color, OscMessage

HEAD = """
osc:
  main: {host: 127.0.0.1, port: 9000}
midi:
  synth: {port: Pete Sounds, channel: 2}
routes:
"""


def router(director, routes: str) -> Router:
    return Router(parse_mapping(HEAD + routes, director))


AMBER = Color("amber", "#ffbf00", (255, 191, 0))


@pytest.mark.parametrize("routes,event,expected", [
    ("  - {event: energy, address: /pete/energy}", ev("energy", 0.7),
     [OscMessage("main", "/pete/energy", (0.7,), 1, 100.0)]),
    ("  - {event: tempo, address: /t, out: [0, 1]}", ev("tempo", 120.0),
     [OscMessage("main", "/t", (0.5,), 1, 100.0)]),
    ("  - {event: tempo, address: /live/song/set/tempo, quantize: 1}", ev("tempo", 121.6),
     [OscMessage("main", "/live/song/set/tempo", (122,), 1, 100.0)]),
    ("  - {event: mood, address: /pete/mood, args: [$word, $index, $key, $frame]}",
     ev("mood", "tense", "word", frame=7),
     [OscMessage("main", "/pete/mood", ("tense", 3, "mood", 7), 7, 100.0)]),
    ("  - {event: mood, address: /scene, table: {calm: 0, tense: 2}}", ev("mood", "tense", "word"),
     [OscMessage("main", "/scene", (2,), 1, 100.0)]),
    ("  - {event: mood, address: /scene, table: {calm: 0, tense: 2}}", ev("mood", "sad", "word"),
     []),  # not in the table and no default: nothing
    ("  - {event: mood, address: /scene, table: {calm: 0}, default: 9}", ev("mood", "sad", "word"),
     [OscMessage("main", "/scene", (9,), 1, 100.0)]),
    ("  - {event: color, address: /c, args: [$word, $r, $g, $b, $hex, $h]}", ev("color", AMBER, "color"),
     [OscMessage("main", "/c", ("amber", 255, 191, 0, "#ffbf00", 0.1248), 1, 100.0)]),
    ("  - {event: color, address: /t, args: [0, 1, $value, hi]}", ev("color", AMBER, "color"),
     [OscMessage("main", "/t", (0, 1, "amber", "hi"), 1, 100.0)]),
    ("  - {event: energy, cc: 74}", ev("energy", 0.5),
     [midi("synth", 0xB1, 74, 64)]),  # channel 2 from the target; 63.5 rounds to 64
    ("  - {event: energy, cc: 7, channel: 16, invert: yes}", ev("energy", 0.0),
     [midi("synth", 0xBF, 7, 127)]),
    ("  - {event: color, cc: 20, part: h, out: [0, 100]}", ev("color", AMBER, "color"),
     [midi("synth", 0xB1, 20, 12)]),
    ("  - {event: mood, program: {calm: 3, tense: 12}}", ev("mood", "tense", "word"),
     [midi("synth", 0xC1, 12)]),
    ("  - {event: mood, note: {tense: C3}, velocity: 90}", ev("mood", "tense", "word"),
     [midi("synth", 0x91, 60, 90)]),
    ("  - {event: energy, note: C#3}", ev("energy", 1.0),
     [midi("synth", 0x91, 61, 127)]),  # velocity from the value
])
def test_event_to_messages(director, routes, event, expected):
    assert router(director, routes).event(event, now=0.0) == expected


def test_note_off_after_length_and_retrigger(director):
    r = router(director, "  - {event: mood, note: {tense: C3, calm: D3}, length: 0.5}")
    assert r.event(ev("mood", "tense", "word"), 0.0) == [midi("synth", 0x91, 60, 100)]
    assert r.tick(0.4) == []
    assert r.event(ev("mood", "tense", "word"), 0.45) == [
        midi("synth", 0x81, 60, 0), midi("synth", 0x91, 60, 100)]
    assert r.tick(0.9) == []
    assert r.tick(0.95) == [midi("synth", 0x81, 60, 0)]
    assert not r.busy(1.0)


def test_closing_turns_notes_off_and_sends_exit_values(director):
    r = router(director, "  - {event: mood, note: {tense: C3}, length: 5}\n"
                         "  - {event: energy, cc: 74, exit: 64}")
    r.event(ev("mood", "tense", "word"), 0.0)
    assert r.closing() == [midi("synth", 0x81, 60, 0), midi("synth", 0xB1, 74, 64)]
    assert r.closing() == []  # once


def test_cc_glide_is_a_rising_series_at_the_control_rate(director):
    r = router(director, "  - {event: energy, cc: 74, glide: on}")
    assert r.event(ev("energy", 0.0), 0.0) == [midi("synth", 0xB1, 74, 0)]  # first: jump
    assert r.event(ev("energy", 1.0), 1.0) == []  # the ticks carry it
    values = []
    t = 1.0
    while t <= 1.6:
        values += [data(m)[2] for m in r.tick(t)]
        t += 0.02
    assert values[0] < 10 and values[-1] == 127
    assert values == sorted(values) and len(values) >= 20  # ~25 steps over 0.5 s, no repeats
    assert len(set(values)) == len(values)
    assert not r.busy(1.6)


def test_osc_glide_sends_intermediate_floats(director):
    r = router(director, "  - {event: energy, address: /e, glide: linear, glide_time: 0.1}")
    assert r.event(ev("energy", 0.2), 0.0)[0].args == (0.2,)
    assert r.event(ev("energy", 0.6), 0.0) == []
    steps = [m.args[0] for t in (0.0, 0.05, 0.1, 0.2) for m in r.tick(t)]
    assert steps == pytest.approx([0.4, 0.6])


def test_change_only_and_rate_limit(director):
    r = router(director, "  - {event: energy, cc: 1, change_only: yes, max_rate: 2}")
    sent = []
    for t, v in [(0.0, 0.5), (0.1, 0.5), (0.2, 0.6), (0.3, 0.7)]:
        sent += [data(m)[2] for m in r.event(ev("energy", v), t)]
    assert sent == [64]
    assert [data(m)[2] for m in r.tick(0.4)] == []
    assert [data(m)[2] for m in r.tick(0.5)] == [89]  # 0.7 arrives when allowed; 0.6 is skipped


def test_two_routes_one_event(director):
    r = router(director, "  - {event: energy, address: /a}\n  - {event: energy, cc: 3}")
    assert r.event(ev("energy", 1.0), 0.0) == [
        OscMessage("main", "/a", (1.0,), 1, 100.0), midi("synth", 0xB1, 3, 127)]


@pytest.mark.parametrize("change_only, expected", [(True, [64, 76]), (False, [64, 64, 76])])
def test_change_only_in_a_route_drops_repeats(director, change_only, expected):
    """The route's own change_only setting reaches the gate: a repeated value is not resent."""
    flag = "yes" if change_only else "no"
    r = router(director, f"  - {{event: energy, cc: 1, change_only: {flag}}}")
    sent = [data(m)[2] for t, v in [(0.0, 0.5), (1.0, 0.5), (2.0, 0.6)]
            for m in r.event(ev("energy", v), t)]
    assert sent == expected


def test_hold_in_a_route_delays_a_change_until_the_last_one_stood(director):
    r = router(director, "  - {event: mood, address: /m, hold: 10}")
    assert [m.args for m in r.event(ev("mood", "calm", "word"), 0.0)] == [("calm",)]
    assert r.event(ev("mood", "tense", "word"), 1.0) == []  # calm has stood 1 s of 10
    assert r.tick(9.9) == []
    assert [m.args for m in r.tick(10.0)] == [("tense",)]  # the held value, once allowed
    assert r.tick(11.0) == []


# ---- several sources -------------------------------------------------------------------

def src(key, value, source, frame=1):
    return ev(key, value, "number", frame, source)


def test_source_in_address_and_args_and_a_state_per_source(director):
    r = router(director, "  - {event: energy, address: '/pete/{source}/energy', "
                         "args: [$value, $source], change_only: yes}\n")
    assert r.event(src("energy", 0.5, "stage"), 0.0) == [
        OscMessage("main", "/pete/stage/energy", (0.5, "stage"), 1, 100.0)]
    # Another source with the same value is its own control: change_only does not hide it.
    assert r.event(src("energy", 0.5, "crowd"), 0.1) == [
        OscMessage("main", "/pete/crowd/energy", (0.5, "crowd"), 1, 100.0)]
    assert r.event(src("energy", 0.5, "stage"), 0.2) == []


def test_a_route_for_one_source_ignores_the_others(director):
    r = router(director, "  - {event: energy, cc: 20, source: crowd}\n")
    assert r.event(src("energy", 1.0, "stage"), 0.0) == []
    assert r.event(src("energy", 1.0, "crowd"), 0.0) == [midi("synth", 0xB1, 20, 127)]


def test_a_reloaded_mapping_keeps_unchanged_routes_and_releases_removed_notes(director):
    before = "  - {event: energy, note: C3, length: 5}\n  - {event: tempo, address: /t, change_only: yes}\n"
    r = router(director, before)
    assert data(r.event(ev("energy", 0.5), 0.0)[0])[:2] == (0x91, 60)
    assert r.event(ev("tempo", 120.0), 0.0) != []
    # The note route removed, the tempo route moved up a line (same settings).
    after = parse_mapping(HEAD + "  - {event: tempo, address: /t, change_only: yes}\n", director)
    new, released = r.reloaded(after)
    assert released == [midi("synth", 0x81, 60, 0)]
    assert new.event(ev("tempo", 120.0), 1.0) == []  # its change_only state was kept
    assert new.tick(10.0) == []  # and the released note has no off left to send


def test_settle_in_a_route_votes_on_colours_and_sends_after_the_wait(director):
    r = router(director, "  - {event: color, address: /hue, part: h, settle: {frames: 3, time: 0.5}}\n")
    red = Color("red", "#ff0000", (255, 0, 0))
    crimson = Color("crimson", "#dc143c", (220, 20, 60))
    assert [m.args for m in r.event(ev("color", red, "color"), 0.0)] == [(0.0,)]
    assert r.event(ev("color", crimson, "color"), 0.5) == []  # a slip
    assert r.event(ev("color", red, "color"), 1.0) == []
    assert r.event(ev("color", AMBER, "color"), 1.5) == []
    assert r.event(ev("color", AMBER, "color"), 2.0) == []  # amber wins 2 of 3 from now...
    assert r.busy(2.1) and r.tick(2.4) == []
    sent = r.tick(2.5)  # ...and has kept winning 0.5 s: sent by the tick, amber's hue
    assert len(sent) == 1 and sent[0].args[0] == pytest.approx(45 / 360, abs=0.01)
    assert not r.busy(2.6)


def test_bad_settle_is_refused_with_its_line(director):
    from pete_osc.errors import PeteError

    with pytest.raises(PeteError, match=r":\d+: settle must be a number of frames 1..100"):
        router(director, "  - {event: mood, address: /m, settle: 0}\n")
    with pytest.raises(PeteError, match=r"unknown settle setting 'votes'"):
        router(director, "  - {event: mood, address: /m, settle: {votes: 3}}\n")


def test_heartbeat_sends_the_last_value_again_for_late_listeners(director):
    r = router(director, "  - {event: mood, address: /m, heartbeat: 2}\n"
                         "  - {event: energy, cc: 74, to: synth, heartbeat: 1}\n")
    first = r.event(ev("mood", "calm", "word"), 0.0) + r.event(ev("energy", 0.5), 0.0)
    assert [type(m).__name__ for m in first] == ["OscMessage", "MidiMessage"]
    assert r.tick(0.9) == [] and r.busy(0.95)
    assert r.tick(1.0) == [first[1]]  # the CC again after 1 s
    again = r.tick(2.0)
    assert again == [OscMessage("main", "/m", ("calm",)), first[1]]  # unframed: not bundled
    assert first[0].frame_id == 1 and again[0].frame_id is None
    assert [m.args for m in r.event(ev("mood", "tense", "word"), 2.5)] == [("tense",)]
    assert r.tick(4.0) == [first[1]] and [m.args for m in r.tick(4.5)] == [("tense",)]


def test_heartbeat_on_notes_is_refused(director):
    from pete_osc.errors import PeteError

    with pytest.raises(PeteError, match=r":\d+: a note route cannot have a heartbeat"):
        router(director, "  - {event: energy, note: C3, to: synth, heartbeat: 1}\n")


def test_target_max_rate_is_read_with_a_midi_default(director):
    r = router(director, "  - {event: mood, address: /m}\n")
    assert r.mapping.osc["main"].max_rate == 0 and r.mapping.midi["synth"].max_rate == 1000
