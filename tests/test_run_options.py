"""Options of ``pete-osc run`` checked through the CLI, by the work they cause: the input
size reaching the model, the pace of frames, a looping file. The scripted model answers
the same whatever the frame, so these read --metrics, not the text."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from support.cli import short_clip

ROOT = Path(__file__).resolve().parent.parent


def run_metrics(model, source, tmp_path, *argv, env) -> tuple[list[dict], str]:
    metrics = tmp_path / f"m{len(list(tmp_path.glob('m*.jsonl')))}.jsonl"
    proc = subprocess.run([sys.executable, "-m", "pete_osc", "run", "--model", str(model),
                           "--source", str(source), "--max-tokens", "6", "--no-warmup",
                           "--metrics", str(metrics), *argv],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in metrics.read_text().splitlines()], proc.stderr


def test_size_reaches_the_model(scripted_torch_model, shared_video, cli_env, tmp_path):
    """--size 128 gives 4 image tokens, --size 64 one: the prompt grows by 3 positions."""
    lengths = {}
    for size in (64, 128):
        records, _ = run_metrics(scripted_torch_model, shared_video, tmp_path, "--size", str(size),
                                 "--fps", "0", "--max-frames", "1", env=cli_env)
        lengths[size] = (records[0]["prompt_len"], records[0]["prefilled"])
    assert lengths[128][0] - lengths[64][0] == 3
    assert lengths[128][1] - lengths[64][1] == 3  # and only those were prefilled anew


def test_fps_paces_the_frames(shared_video, cli_env, tmp_path):
    """--fps 4: a frame starts every 0.25 s, though the engine could go faster. The engine
    is a recording answering in 50 ms (the pace is the feature, not this machine's model
    speed); only a machine too loaded to keep even that inside a tick is a skip."""
    answer = tmp_path / "answer.jsonl"
    answer.write_text(json.dumps({"frame": 0, "t": 0.05, "text": "energy: 0.5\n"}) + "\n")
    metrics = tmp_path / "metrics.jsonl"
    proc = subprocess.run([sys.executable, "-m", "pete_osc", "run", "--engine", "replay",
                           "--replay", str(answer), "--loop", "--source", str(shared_video),
                           "--fps", "4", "--max-frames", "6", "--metrics", str(metrics)],
                          capture_output=True, text=True, env=cli_env, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    starts = [r["started_at"] for r in records]
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    busy = max(r["token_times"][-1] for r in records)
    if busy >= 0.2:
        pytest.skip(f"a 50 ms answer took {busy:.2f} s here (the machine is busy): too slow "
                    "to see a 0.25 s pace")
    assert 0.2 < statistics.median(gaps) < 0.32, gaps


@pytest.mark.parametrize("mode", [["--every-frame"], ["--fps", "0"]],
                         ids=["every-frame", "latest-frame"])
def test_loop_starts_the_file_again(scripted_torch_model, cli_env, tmp_path, mode):
    clip = short_clip(tmp_path, frames=5)
    records, err = run_metrics(scripted_torch_model, clip, tmp_path, "--size", "64", "--loop",
                               "--max-frames", "8", *mode, env=cli_env)
    assert len(records) == 8, err  # more frames than the file has
    assert "ended after" not in err
