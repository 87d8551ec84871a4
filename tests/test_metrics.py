"""Per-frame metrics: the file written by `run --metrics`, and the live status line."""

import io
import json
import subprocess
import sys

from support.peers import ROOT, free_port, oscdump

from pete_osc.run.metrics import StatusLine


def test_metrics_file_times_each_frame_to_the_wire(tmp_path, cli_env, scripted_torch_model, shared_video):
    port = free_port()
    mapping = tmp_path / "m.yaml"
    mapping.write_text((ROOT / "mappings" / "default.yaml").read_text()
                       .replace("port: 9000", f"port: {port}"))
    metrics = tmp_path / "metrics.jsonl"
    dump = oscdump(port)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pete_osc", "run", "--engine", "torch", "--model",
             str(scripted_torch_model), "--source", str(shared_video), "--size", "64",
             "--max-frames", "3", "--max-tokens", "14", "--constrain", "off", "--mapping", str(mapping),
             "--metrics", str(metrics), "--fps", "4"],
            capture_output=True, text=True, env=cli_env, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert len(dump.take(6)) == 6  # 2 events a frame reached the receiver
    finally:
        dump.stop()
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert len(records) == 3
    for r in records:
        assert r["tokens"] == 14 and len(r["token_times"]) == 14
        assert r["token_times"] == sorted(r["token_times"]) and r["token_times"][0] == r["ttft"]
        assert r["vision"] is not None and 0 < r["vision"] < r["ttft"]
        assert r["captured_at"] <= r["started_at"] < r["first_event_at"] <= r["first_sent_at"]
        # The first line (energy: 0.7) completes at its 6th token: the event follows it.
        assert r["capture_to_event"] >= r["queued"] + r["token_times"][5]
        assert r["capture_to_sent"] - r["capture_to_event"] < 0.05
        assert (r["events"], r["rejected"], r["finish"], r["error"]) == (2, 1, "length", None)
    assert [r["frame"] for r in records] == sorted(r["frame"] for r in records)
    assert "frame to first event: " in proc.stderr


def test_status_line_shows_rolling_medians():
    out = io.StringIO()
    status = StatusLine(out, window=3)
    base = {"ttft": 0.1, "token_times": [0.1, 0.12, 0.14], "capture_to_event": 0.3,
            "dropped": 0, "error": None}
    for i, ttft in enumerate([0.1, 0.2, 0.3, 0.4]):
        line = status.update(dict(base, frame=i, ttft=ttft, captured_at=100 + i * 0.5,
                                  dropped=i), sent=10 * i)
    # the window keeps the last 3 frames: TTFT median of 0.2, 0.3, 0.4
    assert line == ("frame 3 | TTFT 300 ms | TBT 20 ms | frame->event 300 ms | 2.0 fps | "
                    "dropped 3 | sent 30")
    assert out.getvalue().count("\r\x1b[2K") == 4  # rewritten in place
    assert not StatusLine.wanted(io.StringIO())  # only on a terminal


def test_tbt_is_the_time_per_decode_step_not_zero_on_forced_text(tmp_path, cli_env):
    """A constrained answer: each chosen token brings the grammar's forced text with it
    (zero gaps). The status line and the summary give the time per decode step (20 ms),
    not 0 ms; the metrics keep every token's time."""
    pieces = []
    t = 0.1
    for line in ("color: red", "mood: calm", "energy: 0.5"):
        key, value = line.split(": ")
        pieces += [(t, key), (t, ":"), (t, " ")]  # a step's token, then forced text
        t += 0.02
        pieces += [(t, value), (t, "\n")]
        t += 0.02
    recording = tmp_path / "forced.jsonl"
    recording.write_text("".join(json.dumps({"frame": f, "t": round(at, 3), "text": text})
                                 + "\n" for f in range(2) for at, text in pieces))
    metrics = tmp_path / "metrics.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "pete_osc", "run", "--engine", "replay", "--replay", str(recording),
         "--fps", "0", "--metrics", str(metrics)],
        capture_output=True, text=True, env=cli_env, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    status = [line for line in proc.stderr.splitlines() if ": TTFT" in line]
    assert len(status) == 2 and all("TBT 20 ms" in line for line in status), proc.stderr
    assert "TBT: 20 ms" in proc.stderr.splitlines()[-1], proc.stderr
    record = json.loads(metrics.read_text().splitlines()[0])
    assert len(record["token_times"]) == len(pieces)  # every token's time is kept


def test_on_one_terminal_the_status_line_never_shares_a_line_with_the_tokens(tmp_path, cli_env):
    """stdout and stderr on one terminal (a real pty): each status line is a line of its
    own, and each frame's tokens start on a fresh line, even after an answer whose last
    line had no newline."""
    import os
    import pty
    import re

    recording = tmp_path / "r.jsonl"
    recording.write_text("".join(json.dumps(r) + "\n" for f in range(3) for r in (
        {"frame": f, "t": 0.01, "text": "energy: 0.5\n"}, {"frame": f, "t": 0.02, "text": "mood: calm"},
        {"frame": f, "t": 0.02, "text": "", "finish": "stop"})))
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "pete_osc", "run", "--engine", "replay",
                             "--replay", str(recording), "--fps", "0"],
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=cli_env, cwd=ROOT)
    os.close(slave)
    got = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        got += chunk
    assert proc.wait(30) == 0, got.decode()
    os.close(master)
    lines = [line.split("\r")[-1] for line in got.decode().replace("\r\n", "\n").split("\n")]
    status = [line for line in lines if "| TTFT" in line]
    assert len(status) == 3, lines
    assert all(re.match(r"^pete-osc: frame \d \(blank\) \| TTFT", line) for line in status), status
    assert [line for line in lines if "--- frame" in line] == [f"--- frame {i}" for i in range(3)]
    assert lines.count("mood: calm") == 3, lines  # the answers' last lines, ended


def test_piped_stdout_is_the_stream_unchanged(tmp_path, cli_env):
    recording = tmp_path / "r.jsonl"
    recording.write_text("".join(json.dumps(r) + "\n" for f in range(2) for r in (
        {"frame": f, "t": 0.01, "text": "energy: 0.5\n"}, {"frame": f, "t": 0.02, "text": "mood: calm"},
        {"frame": f, "t": 0.02, "text": "", "finish": "stop"})))
    proc = subprocess.run([sys.executable, "-m", "pete_osc", "run", "--engine", "replay",
                           "--replay", str(recording), "--fps", "0"],
                          capture_output=True, text=True, env=cli_env, cwd=ROOT, timeout=60)
    assert proc.stdout == ("--- frame 0\nenergy: 0.5\nmood: calm\n--- frame 1\n"
                           "energy: 0.5\nmood: calm\n")
