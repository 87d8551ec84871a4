"""The pete-osc command line, run as users run it: a subprocess."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
from support.cli import PETE


@pytest.mark.parametrize("max_tokens, clean", [
    (3000, True),  # SIGINT lands mid-decode: the loop ends at the next token
    (20, False),  # mostly prefill (1.3 s a frame on 2 CPU cores): the watchdog ends it
])
def test_run_streams_tokens_and_stops_on_sigint_within_a_second(
        tiny_mlx_model, shared_video, cli_env, max_tokens, clean):
    """Tokens reach stdout while the model writes; SIGINT ends the run within a second,
    with exit code 0 and a summary on stderr."""
    proc = subprocess.Popen(
        PETE + ["run", "--engine", "mlx", "--source", str(shared_video), "--model", str(tiny_mlx_model),
                "--size", "64", "--max-tokens", str(max_tokens), "--fps", "0", "--constrain", "off"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env, cwd=ROOT)
    got = bytearray()
    chunk_times = []

    def read():
        while chunk := proc.stdout.read1(4096):
            got.extend(chunk)
            chunk_times.append(time.monotonic())

    reader = threading.Thread(target=read)
    reader.start()
    deadline = time.monotonic() + 120
    # Wait until the first frame's tokens are flowing.
    while len(got) < len(b"--- frame 0\n") + 20 and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.05)
    assert got.startswith(b"--- frame 0\n"), bytes(got[:200])
    # Streamed: bytes arrived in many separate writes, not one block at frame end.
    assert len(chunk_times) >= 3
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    rc = proc.wait(timeout=10)
    took = time.monotonic() - sent
    reader.join(timeout=5)
    err = proc.stderr.read().decode()
    assert rc == 0, err
    assert took < 1.0, f"SIGINT took {took:.2f} s to end the run:\n{err}"
    assert "SIGINT received, stopping" in err
    assert "pete-osc: stopped" in err and "frames in" in err
    if clean:
        assert "pete-osc: stopped. 1 frames in" in err
    assert "Traceback" not in err


def test_run_json_mode_writes_only_json_lines(tiny_mlx_model, shared_video, cli_env):
    proc = subprocess.run(
        PETE + ["run", "--engine", "mlx", "--source", str(shared_video), "--model", str(tiny_mlx_model),
                "--size", "64", "--max-tokens", "8", "--max-frames", "2", "--json",
                "--no-warmup"],
        capture_output=True, env=cli_env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    for line in proc.stdout.decode().splitlines():
        json.loads(line)  # gibberish from random weights rarely parses; if it does, it is JSON
    assert re.search(r"frame 0 \(big_buck_bunny\): TTFT", proc.stderr.decode())
    assert "2 frames in" in proc.stderr.decode()


# The replay engine needs no model, so each case below has exactly one problem.
REPLAY = ["--engine", "replay", "--replay", str(ROOT / "DIRECTOR.md")]


@pytest.mark.parametrize("args, message", [
    (REPLAY + ["--source", "nothere.mp4"], "pete-osc: error: nothere.mp4: no such file or folder"),
    (REPLAY + ["--source", "9"], "pete-osc: error: camera 9 could not be opened"),
    (REPLAY + ["--size", "100"], "pete-osc: error: --size 100: the model input size must be a multiple of 64"),
    (["--model", "./no-such-model", "--source", "README.md"],
     "pete-osc: error: --model ./no-such-model: no such folder"),
    (REPLAY + ["--director", "nothere.md"], "pete-osc: error: nothere.md: cannot read the DIRECTOR file"),
    (REPLAY + ["--capture-size", "big"], "pete-osc: error: --capture-size big: expected WIDTHxHEIGHT"),
    (REPLAY + ["--source", "pyproject.toml"], "pete-osc: error: pyproject.toml: OpenCV cannot open it"),
    (["--engine", "replay", "--replay", "nothere.txt"], "pete-osc: error: --replay nothere.txt: no such file"),
])
def test_bad_input_gives_one_line_and_exit_code_2(args, message, cli_env):
    proc = subprocess.run(PETE + ["run"] + args, capture_output=True, env=cli_env, cwd=ROOT,
                          timeout=120)
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("pete-osc: error:")]
    if "./no-such-model" in args:  # and README.md is no video: both named at once
        assert lines[1].startswith("pete-osc: error: README.md: OpenCV cannot open it"), err
        lines = lines[:1]
    assert len(lines) == 1, err
    assert lines[0].startswith(message), lines[0]


def test_missing_model_is_named_after_the_source_opens(shared_video, cli_env):
    proc = subprocess.run(PETE + ["run", "--source", str(shared_video), "--model", "./no-such-model"],
                          capture_output=True, env=cli_env, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert "pete-osc: error: --model ./no-such-model: no such folder" in proc.stderr.decode()


def test_parse_reads_stdin_and_prints_events_as_json(cli_env, tmp_path):
    text = "color: amber\nmood: joyful\nenergy: 70%\nenergy: 7\nbanana: yes\ntempo: 12"
    proc = subprocess.run(PETE + ["parse"], input=text.encode(), capture_output=True,
                          env=cli_env, cwd=ROOT, timeout=60)
    assert proc.returncode == 0
    events = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert [(e["key"], e["value"]) for e in events] == [
        ("color", {"name": "amber", "hex": "#ffbf00", "rgb": [255, 191, 0]}),
        ("mood", "happy"), ("energy", 0.7)]
    err = proc.stderr.decode()
    assert "line 4: rejected 'energy: 7': 7 is outside 0..1" in err
    assert "rejected 'banana: yes': unknown key 'banana'" in err
    assert "rejected 'tempo: 12': 12 is outside 60..180" in err  # last line, no newline
    out = tmp_path / "answer.txt"
    out.write_text(text)
    from_file = subprocess.run(PETE + ["parse", str(out), "--rejected"], capture_output=True,
                               env=cli_env, cwd=ROOT, timeout=60)
    assert len(from_file.stdout.decode().splitlines()) == 6


def test_parse_refuses_a_broken_director_with_its_line(cli_env, tmp_path):
    bad = tmp_path / "DIRECTOR.md"
    bad.write_text((ROOT / "DIRECTOR.md").read_text().replace("type: word", "type: wrod", 1))
    proc = subprocess.run(PETE + ["parse", "--director", str(bad)], input=b"", capture_output=True,
                          env=cli_env, cwd=ROOT, timeout=60)
    assert proc.returncode == 2
    line = next(i for i, l in enumerate(bad.read_text().splitlines(), 1) if "type: wrod" in l)
    assert proc.stderr.decode().startswith(f"pete-osc: error: {bad}:{line}: key 'mood': type must be")
