"""``pete-osc bench``: the user's model measured on the shipped frames, one source then
several, as a block to paste or as JSON. A tiny real model through the torch engine; the
work is checked (frames per source, the warm-up left out, the steps timed), not only that
something was printed."""

from __future__ import annotations

import json

from support.cli import pete_run


def bench(model, *extra, env):
    return pete_run("bench", "--engine", "torch", "--model", str(model), "--size", "64",
                    "--frames", "3", *extra, env=env, timeout=600)


def test_bench_measures_one_and_several_sources_on_the_shipped_frames(tiny_torch_model, cli_env):
    proc = bench(tiny_torch_model, "--sources", "1,3", "--json", env=cli_env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert (result["engine"], result["size"], result["frames"]) == ("torch", 64, 3)
    assert result["model"] == str(tiny_torch_model) and result["peak_rss_mb"] > 0
    one, three = result["runs"]
    # Each source's first frame warms up and is left out: 2 of 3 frames per source count.
    assert one["sources"] == 1 and one["per_source"] == {"s1": 2}
    assert three["sources"] == 3 and three["per_source"] == {"s1": 2, "s2": 2, "s3": 2}
    for run in (one, three):
        assert run["failed"] == 0 and run["frames_per_s"] > 0
        assert 0 < run["tbt_ms"] < run["ttft_ms"] and run["first_event_ms"] > 0
        assert run["tbt_ms"] <= run["tbt_p90_ms"]
        assert run["first_event_ms"] <= run["first_event_p90_ms"]
        assert run["tokens_per_frame"] > 1
    # The model was loaded (and warmed up) once for both runs.
    assert proc.stderr.count("warm-up took") == 1 and proc.stderr.count("loading ") == 1


def test_bench_prints_one_block_to_paste(tiny_torch_model, cli_env):
    proc = bench(tiny_torch_model, "--sources", "1", env=cli_env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "pete-osc bench" and lines[1].startswith("machine: ")
    assert lines[2].startswith("engine: torch on cpu; model: ") and "input 64 px" in lines[2]
    assert lines[3].startswith("memory: peak rss ")
    rows = [line for line in lines if line.startswith("| 1 |")]
    assert len(rows) == 1 and "s1 2" in rows[0], proc.stdout


def test_bench_refuses_bad_counts_and_a_missing_model_in_one_line(cli_env, tmp_path):
    counts = pete_run("bench", "--sources", "0,4", env=cli_env)
    assert counts.returncode == 2 and "each count must be from 1 to 16" in counts.stderr
    missing = pete_run("bench", "--engine", "torch", "--model", str(tmp_path / "no-model"),
                       env=cli_env, timeout=120)
    assert missing.returncode == 2 and missing.stdout == ""
    assert len([line for line in missing.stderr.splitlines() if line.strip()]) == 1, missing.stderr


def test_ctrl_c_ends_the_bench_with_what_was_measured(tiny_torch_model, cli_env):
    import signal
    import time

    from support.cli import pete

    proc = pete("bench", "--engine", "torch", "--model", str(tiny_torch_model), "--size", "64",
                "--frames", "500", "--sources", "1,4", "--json", env=cli_env)
    try:
        for line in proc.stderr:
            if line.startswith("pete-osc: running on s1 "):
                break
        time.sleep(2.0)  # a few frames in
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    runs = json.loads(out)["runs"]
    # The first run ends where it was stopped, and the next (4 sources) never starts.
    assert [r["sources"] for r in runs] == [1] and 0 < runs[0]["frames"] < 499
