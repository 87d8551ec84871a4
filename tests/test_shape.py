"""Value shaping, glides and gates: tables of inputs and expected outputs."""

import math

import pytest

from pete_osc.mapping.config import Shape
from pete_osc.mapping.shape import Gate, Glide, Settle, curve, shape


@pytest.mark.parametrize("kind,x,expected", [
    ("linear", 0.0, 0.0), ("linear", 0.3, 0.3), ("linear", 1.0, 1.0),
    ("exponential", 0.0, 0.0), ("exponential", 1.0, 1.0),
    ("exponential", 0.5, math.expm1(2) / math.expm1(4)),  # 0.1192: slow start
    ("logarithmic", 0.0, 0.0), ("logarithmic", 1.0, 1.0),
    ("logarithmic", 0.5, math.log1p(math.expm1(4) * 0.5) / 4),  # 0.8267: fast start
])
def test_curves(kind, x, expected):
    assert curve(x, kind) == pytest.approx(expected)


def test_logarithmic_undoes_exponential():
    for x in (0.1, 0.37, 0.8):
        assert curve(curve(x, "exponential", 3), "logarithmic", 3) == pytest.approx(x)


@pytest.mark.parametrize("value,kw,expected", [
    (0.5, {}, 63.5),                                   # 0..1 -> 0..127
    (0.0, {}, 0.0), (1.0, {}, 127.0),
    (1.5, {}, 127.0),                                  # clamped
    (-1.0, {}, 0.0),
    (1.5, {"clamp": False}, 190.5),                    # extrapolated
    (0.25, {"invert": True}, 95.25),
    (0.5, {"step": 1}, 64.0),                      # round half to even: 63.5 -> 64
    (0.3, {"step": 10}, 40.0),
    (0.5, {"curve": "exponential"}, 127 * math.expm1(2) / math.expm1(4)),
    (0.5, {"out_lo": 20, "out_hi": 100}, 60.0),
    (0.5, {"out_lo": 100, "out_hi": 20}, 60.0),        # a falling range inverts too
    (0.75, {"out_lo": 100, "out_hi": 20}, 40.0),
    (120, {"lo": 60, "hi": 180}, 63.5),                # BPM in the middle of its range
])
def test_shape_table(value, kw, expected):
    params = dict(lo=0.0, hi=1.0, out_lo=0.0, out_hi=127.0)
    params.update(kw)
    assert shape(value, Shape(**params)) == pytest.approx(expected)


def test_linear_glide_ramps_and_arrives():
    g = Glide("linear", 0.5)
    g.retarget(0.0, now=10.0)           # the first value jumps
    assert g.at(10.0) == 0.0
    g.retarget(100.0, now=10.0)
    assert [round(g.at(10.0 + t), 6) for t in (0, 0.1, 0.25, 0.5, 0.9)] == [0, 20, 50, 100, 100]
    assert g.settled(10.5, 0.01) and not g.settled(10.2, 0.01)


def test_linear_glide_retargets_from_where_it_is():
    g = Glide("linear", 1.0)
    g.retarget(0.0, 0.0)
    g.retarget(100.0, 0.0)
    g.retarget(0.0, 0.5)                # turned round half way, at 50
    assert g.at(0.5) == pytest.approx(50.0)
    assert g.at(1.0) == pytest.approx(25.0)
    assert g.at(1.5) == pytest.approx(0.0)


def test_smooth_glide_is_one_pole():
    g = Glide("smooth", 0.2)
    g.retarget(0.0, 0.0)
    g.retarget(1.0, 0.0)
    assert g.at(0.2) == pytest.approx(1 - math.exp(-1))   # 63% after one time constant
    assert g.at(1.0) == pytest.approx(1 - math.exp(-5))
    steps = [g.at(t / 50) for t in range(20)]
    assert steps == sorted(steps) and len(set(steps)) == 20


def test_gate_change_only():
    gate = Gate(change_only=True)
    assert [gate.offer(v, t) for t, v in enumerate([1, 1, 2, 2, 1])] == [True, False, True, False, True]


def test_gate_rate_limit_keeps_the_last_value():
    gate = Gate(min_interval=0.5)
    assert gate.offer(1, 0.0)
    assert not gate.offer(2, 0.1) and not gate.offer(3, 0.2)   # held back; 3 is pending
    assert gate.due(0.3) is None
    assert gate.due(0.5) == 3                                    # the last word arrives
    assert gate.due(0.6) is None


def test_gate_hold_delays_changes_not_repeats():
    gate = Gate(hold=2.0)
    assert gate.offer("calm", 0.0)
    assert gate.offer("calm", 0.5)          # same value: not a change, goes
    assert not gate.offer("tense", 1.0)     # a change within the hold waits
    assert gate.due(1.9) is None
    assert gate.due(2.0) == "tense"
    assert not gate.offer("calm", 2.5)      # and the new value holds in turn
    assert gate.due(4.0) == "calm"


def test_gate_pending_dropped_when_it_returns_to_the_sent_value():
    gate = Gate(change_only=True, hold=1.0)
    assert gate.offer("calm", 0.0)
    assert not gate.offer("tense", 0.2)
    assert not gate.offer("calm", 0.4)      # back to what was sent: nothing to send
    assert gate.due(1.5) is None


# ---- labels that settle ---------------------------------------------------------------
# (time, value offered) -> what goes out; "." = nothing. A flickering model: calm, with
# one-frame slips to tense, then a real change to tense.
FLICKER = [(0.0, "calm"), (0.5, "tense"), (1.0, "calm"), (1.5, "calm"), (2.0, "tense"),
           (2.5, "tense"), (3.0, "tense"), (3.5, "tense")]


@pytest.mark.parametrize("frames, time, expected", [
    (1, 0.0, ["calm", "tense", "calm", ".", "tense", ".", ".", "."]),  # off: every flip
    (3, 0.0, ["calm", ".", ".", ".", ".", "tense", ".", "."]),  # majority of 3
    (1, 1.0, ["calm", ".", ".", ".", ".", ".", "tense", "."]),  # tense from 2.0, 1 s later
    (3, 1.0, ["calm", ".", ".", ".", ".", ".", ".", "tense"]),  # wins at 2.5, sent at 3.5
])
def test_settle_filters_flicker(frames, time, expected):
    s = Settle(frames, time)
    out = [s.offer(value, t) for t, value in FLICKER]
    assert [o or "." for o in out] == expected


def test_settle_tie_keeps_the_standing_value_and_due_sends_between_frames():
    s = Settle(2, 0.0)
    assert s.offer("calm", 0.0) == "calm"
    assert s.offer("tense", 1.0) is None  # 1:1, calm stands
    assert s.offer("tense", 2.0) == "tense"
    s = Settle(1, 1.0)
    s.offer("calm", 0.0)
    assert s.offer("tense", 0.5) is None
    assert s.due(1.4) is None and s.due(1.5) == "tense" and s.due(2.0) is None
    assert s.offer("calm", 2.5) is None and s.offer("tense", 2.6) is None  # calm lost the wait
    assert s.current == "tense"
