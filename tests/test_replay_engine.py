"""Recording a run and playing it back: same tokens, same events, original timing."""

import json
import subprocess
import sys


import numpy as np
import pytest

from pete_osc.engines import FrameTimes
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
    times = FrameTimes()
    tokens = list(engine.stream(image, times))
    assert [t.text for t in tokens] == ["energy", ": 0.5\n", ""] and tokens[-1].finish == "stop"
    assert tokens[0].at - times.started == pytest.approx(0.15, abs=0.03)  # 0.30 s at speed 2
    assert [t.text for t in engine.stream(image, FrameTimes())] == ["mood: calm\n"]
    assert [t.text for t in engine.stream(image, FrameTimes())][:1] == ["energy"]  # starts over


def test_replay_of_plain_director_text(tmp_path, cli_env):
    path = tmp_path / "answers.txt"
    path.write_text("--- frame 4\nenergy: high\nmood: tense\n--- frame 5\ncolor: amber\n")
    proc = pete_run("--engine", "replay", "--replay", str(path), "--max-frames", "3", "--fps", "0",
                    "--json", env=cli_env)
    assert proc.returncode == 0, proc.stderr
    got = [(e["key"], e["value"] if e["kind"] != "color" else e["value"]["name"])
           for e in map(json.loads, proc.stdout.splitlines())]
    assert got == [("energy", 0.8), ("mood", "tense"), ("color", "amber"),
                   ("energy", 0.8), ("mood", "tense")]


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
                           "--max-frames", "3", "--fps", "0", "--json", "--replay-speed", "4"],
                          capture_output=True, text=True, env=cli_env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(e["key"], e["value"]) for e in events] == [
        ("energy", 0.7), ("mood", "tense"), ("energy", 0.2), ("energy", 0.7), ("mood", "tense")]
    for option in ("--record", "--metrics"):
        assert proc.stderr.count(f"{option} /dev/full: cannot write (No space left on device)") == 1
    assert "failed: 0" in proc.stderr and "Traceback" not in proc.stderr
