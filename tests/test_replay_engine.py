"""Recording a run and playing it back: same tokens, same events, original timing."""

import json
import subprocess
import sys

import numpy as np
import pytest
from support.answers import answer

from pete_osc.engines.replay import ReplayEngine
from pete_osc.errors import PeteError


def pete_run(*argv, env):
    return subprocess.run([sys.executable, "-m", "pete_osc", "run", *argv], capture_output=True,
                          text=True, env=env, timeout=300)


def test_record_then_replay_gives_the_same_stream(tmp_path, scripted_torch_model, shared_video, cli_env):
    recording = tmp_path / "show.jsonl"
    live = pete_run("--engine", "torch", "--model", str(scripted_torch_model), "--source",
                    str(shared_video), "--size", "64", "--max-frames", "2", "--max-tokens", "14",
                    "--every-frame", "--record", str(recording), env=cli_env)
    assert live.returncode == 0, live.stderr
    records = [json.loads(l) for l in recording.read_text().splitlines()]
    assert [r["frame"] for r in records] == [0] * 15 + [1] * 15  # 14 tokens + the finish record
    assert records[14]["finish"] == "length"
    times = [r["t"] for r in records[:14]]
    assert times == sorted(times) and times[0] > 0

    replay = pete_run("--engine", "replay", "--replay", str(recording), "--max-frames", "2",
                      "--every-frame", env=cli_env)
    assert replay.returncode == 0, replay.stderr
    assert replay.stdout == live.stdout  # token for token, frame marks included
    assert "replay engine" in replay.stderr


def test_replay_keeps_the_recorded_timing(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"frame": 0, "t": 0.30, "text": "energy"}, {"frame": 0, "t": 0.35, "text": ": 0.5\n"},
        {"frame": 0, "t": 0.35, "text": "", "finish": "stop"},
        {"frame": 1, "t": 0.05, "text": "mood: calm\n"}]) + "\n")
    engine = ReplayEngine(path, speed=2.0)
    image = np.zeros((64, 64, 3), np.uint8)
    times = answer(engine, image)
    tokens = times.tokens
    assert [t.text for t in tokens] == ["energy", ": 0.5\n", ""] and tokens[-1].finish == "stop"
    assert tokens[0].at - times.started == pytest.approx(0.15, abs=0.03)  # 0.30 s at speed 2
    assert [t.text for t in answer(engine, image).tokens] == ["mood: calm\n"]
    assert engine.ended == "the recording ended after 2 frames"
    looping = ReplayEngine(path, speed=100.0, loop=True)
    for _ in range(2):
        answer(looping, image).tokens
    assert looping.ended is None
    assert [t.text for t in answer(looping, image).tokens][:1] == ["energy"]  # starts over


def test_replay_of_plain_director_text(tmp_path, cli_env):
    path = tmp_path / "answers.txt"
    path.write_text("--- frame 4\nenergy: high\nmood: tense\n--- frame 5\ncolor: amber\n")
    proc = pete_run("--engine", "replay", "--replay", str(path), "--max-frames", "3", "--fps", "0",
                    "--json", "--loop", env=cli_env)
    assert proc.returncode == 0, proc.stderr
    got = [(e["key"], e["value"] if e["kind"] != "color" else e["value"]["name"])
           for e in map(json.loads, proc.stdout.splitlines())]
    assert got == [("energy", 0.8), ("mood", "tense"), ("color", "amber"),
                   ("energy", 0.8), ("mood", "tense")]  # --loop: the recording starts over


@pytest.mark.parametrize("fps", ["2", "0"])
def test_replay_ends_when_the_recording_ends(tmp_path, cli_env, fps):
    """Without --loop the run ends after the recording's last frame, says so, and its
    summary counts no dropped frames for the blank frames a replay runs on."""
    path = tmp_path / "answers.txt"
    path.write_text("--- frame 0\nenergy: high\n--- frame 1\nmood: calm\n--- frame 2\n"
                    "color: amber\n")
    proc = pete_run("--engine", "replay", "--replay", str(path), "--fps", fps, "--json",
                    env=cli_env)
    assert proc.returncode == 0, proc.stderr
    assert [e["key"] for e in map(json.loads, proc.stdout.splitlines())] == [
        "energy", "mood", "color"]
    err = proc.stderr.splitlines()
    assert f"pete-osc: replay {path}: the recording ended after 3 frames" in err, proc.stderr
    summary = [line for line in err if line.startswith("pete-osc: stopped.")]
    assert summary and "3 frames in" in summary[0], proc.stderr
    assert "frames dropped: 0, " in summary[0] and "skipped" not in summary[0], summary


def test_bad_recording_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"frame": 0, "t": 0.1, "text": "a"}\n{"frame": 0, "text": "b"}\n')
    with pytest.raises(PeteError, match=r"bad.jsonl:2: not a recorded token"):
        ReplayEngine(path)


def test_a_full_disk_switches_the_taps_off_not_the_show(tmp_path, cli_env):
    """--record and --metrics on a full disk (/dev/full): one line each, then the frames,
    the events and the exit code go on as if they were not there."""
    text = tmp_path / "answer.txt"
    text.write_text("energy: 0.7\nmood: tense\n--- frame 1\nenergy: 0.2\n")
    proc = subprocess.run([sys.executable, "-m", "pete_osc", "run", "--engine", "replay",
                           "--replay", str(text), "--record", "/dev/full", "--metrics", "/dev/full",
                           "--max-frames", "3", "--fps", "0", "--json", "--replay-speed", "4",
                           "--loop"],
                          capture_output=True, text=True, env=cli_env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(e["key"], e["value"]) for e in events] == [
        ("energy", 0.7), ("mood", "tense"), ("energy", 0.2), ("energy", 0.7), ("mood", "tense")]
    for option in ("--record", "--metrics"):
        assert proc.stderr.count(f"{option} /dev/full: cannot write (No space left on device)") == 1
    assert "failed: 0" in proc.stderr and "Traceback" not in proc.stderr


def test_frames_skipped_by_fps_are_told_apart_from_frames_dropped(tmp_path, cli_env, shared_video):
    """A 24 fps clip sampled at 2 fps skips about 11 frames a tick by design (not a fault);
    frames that come while a due tick waits for a slow answer are dropped."""
    quick, slow = tmp_path / "quick.jsonl", tmp_path / "slow.jsonl"
    token = {"frame": 0, "text": "energy: 0.5\n"}
    quick.write_text(json.dumps(dict(token, t=0.01)) + "\n")
    slow.write_text(json.dumps(dict(token, t=1.0)) + "\n")  # a second per answer
    runs = {}
    for name, path, fps in (("quick", quick, "2"), ("slow", slow, "2"), ("flat out", slow, "0")):
        metrics = tmp_path / f"{name}.metrics"
        proc = pete_run("--engine", "replay", "--replay", str(path), "--loop", "--source",
                        str(shared_video), "--fps", fps, "--max-frames", "5", "--metrics",
                        str(metrics), env=cli_env)
        assert proc.returncode == 0, proc.stderr
        runs[name] = [json.loads(line) for line in metrics.read_text().splitlines()][-1]
    # 4 ticks after the first at 2 fps: ~11 skipped each, none dropped.
    assert runs["quick"]["dropped"] <= 2 and 30 <= runs["quick"]["skipped"] <= 55, runs
    # An answer takes 1 s, twice the tick: about 12 frames a tick come after it was due.
    assert runs["slow"]["dropped"] >= 30, runs
    # --fps 0 (as fast as the model goes): every frame it did not take is a dropped one.
    assert runs["flat out"]["dropped"] >= 80 and runs["flat out"]["skipped"] == 0, runs
