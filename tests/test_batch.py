"""Several sources decoded together (issue 25): a batch's answers are each source's answer
decoded alone, with rows joining and leaving mid-batch, the grammar and jump-forward on,
contexts of their own; the work is checked (rows per step, the DIRECTOR prefix prefilled
once and read by every row, positions each row prefilled), not only the text. A test model
that reads the frame shows that every row answers its own picture. Through the CLI: two
sources answered together by default and in turn with --no-batch give the same events;
Ctrl-C with four sources mid-batch ends within a second; the watchdog ends each frame
of a batch on its own."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from support.answers import answer

from pete_osc.director.schema import load_director
from pete_osc.engines.base import GenerationSettings, Prompt
from pete_osc.records import OscMessage

ROOT = Path(__file__).resolve().parent.parent
PETE = [sys.executable, "-m", "pete_osc"]
COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255),
           "white": (255, 255, 255), "black": (0, 0, 0)}


def torch_engine(model, max_tokens=48, constrain=True, weights="off"):
    from pete_osc.engines.torch_engine import TorchEngine

    director = load_director(ROOT / "DIRECTOR.md")
    prompt = Prompt.of(director)
    engine = TorchEngine(str(model), prompt.system, prompt.instruction,
                         GenerationSettings(max_tokens=max_tokens), weights=weights)
    if constrain:
        engine.constrain(director)
    return engine, prompt


def mlx_engine(model, max_tokens=48, constrain=True):
    from pete_osc.engines.mlx_engine import MlxEngine

    director = load_director(ROOT / "DIRECTOR.md")
    prompt = Prompt.of(director)
    engine = MlxEngine(str(model), prompt.system, prompt.instruction,
                       GenerationSettings(max_tokens=max_tokens))
    if constrain:
        engine.constrain(director)
    return engine, prompt


def drive(batch, frames, join_at):
    """Run ``frames`` (key -> (image, prompt)) through ``batch``; frame ``key`` joins at
    step ``join_at[key]`` (0: before the first). Returns key -> its tokens."""
    out = {key: [] for key in frames}
    waiting = sorted(frames, key=lambda k: join_at[k])
    step = 0
    while waiting or batch.size:
        while waiting and join_at[waiting[0]] <= step and batch.free > 0:
            key = waiting.pop(0)
            batch.join(key, *frames[key])
        for key, tokens in batch.step():
            out[key] += tokens
        step += 1
    return out


@pytest.mark.parametrize("constrain,bucketed", [(True, False), (False, False), (True, True)],
                         ids=["grammar+jump", "free", "grammar+jump, padded to CUDA's buckets"])
def test_batched_answers_equal_each_answer_alone(qwen_torch_model, constrain, bucketed):
    """(bucketed: each step padded to the rows and width of a recorded CUDA graph, as on
    CUDA, run as it is on the CPU)"""
    engine, prompt = torch_engine(qwen_torch_model, constrain=constrain)
    rng = np.random.default_rng(1)
    contexts = ["", "earlier: color: red\nmood: calm", "", "the stage is dark"]
    frames = {f"s{i}": (rng.integers(0, 255, (128, 128, 3), dtype=np.uint8),
                        Prompt(prompt.system, prompt.instruction, contexts[i % 4]))
              for i in range(6)}
    alone = {}
    for key, (image, p) in frames.items():
        alone[key] = answer(engine, image, p)
    prefixes = engine.prefix_prefills
    batch = engine.batch(4)
    batch.rows.bucketed = bucketed
    # Three start together, one joins at step 2; two more wait for free slots (continuous
    # batching: they join when earlier rows leave).
    got = drive(batch, frames, {"s0": 0, "s1": 0, "s2": 0, "s3": 2, "s4": 3, "s5": 3})
    for key in frames:
        texts = "".join(t.text for t in got[key])
        assert texts == alone[key].text, key
        assert got[key][-1].finish == alone[key].finish
        # Each row prefilled its context, the image and the instruction; not the prefix.
        p = got[key][-1].prefill
        assert p.prompt_len == alone[key].prompt_len
        assert p.prompt_len - batch.rows.prefix_len <= p.prefilled < batch.rows.prefix_len
    # The DIRECTOR prefix was run through the model once (before the batch, by the
    # engine's prefix cache) and read by the batch once, for every row.
    assert engine.prefix_prefills == prefixes and batch.rows.prefix_reads == 1
    assert max(batch.rows_per_step) == 4 and min(batch.rows_per_step) >= 1
    assert sum(batch.prefills) == 6 and batch.prefills[0] == 3
    # Every step ran all the rows in one model call, never one row at a time.
    assert batch.rows.runs == batch.steps + len(batch.prefills)
    assert batch.rows.rows_run == sum(batch.rows_per_step) + 6
    assert sum(batch.rows_per_step) < sum(len(a.tokens) for a in alone.values())
    if bucketed:  # three rows ran in the graph of four, forced runs in a wider one
        assert {(4, 1), (4, 4)} <= set(batch.rows.graphs)


def test_each_row_answers_its_own_frame(seeing_torch_model):
    engine, prompt = torch_engine(seeing_torch_model, max_tokens=12, constrain=False)
    names = ["red", "blue", "green", "white", "black", "red"]
    frames = {i: (np.full((128, 128, 3), COLOURS[n], np.uint8), prompt)
              for i, n in enumerate(names)}
    got = drive(engine.batch(4), frames, {0: 0, 1: 0, 2: 1, 3: 1, 4: 2, 5: 5})
    for i, name in enumerate(names):
        text = "".join(t.text for t in got[i])
        assert text.startswith(f"color: {name}\ncolor: {name}"), (name, text)


def test_mlx_batched_answers_equal_each_answer_alone(qwen_mlx_model):
    """The mlx engine's batch (pete_osc.engines.mlx_rows): the same rules, its own model
    calls; grammar and jump-forward on, contexts of their own, rows joining mid-batch."""
    engine, prompt = mlx_engine(qwen_mlx_model)
    rng = np.random.default_rng(2)
    contexts = ["", "earlier: color: red\nmood: calm", "the stage is dark"]
    frames = {i: (rng.integers(0, 255, (128, 128, 3), dtype=np.uint8),
                  Prompt(prompt.system, prompt.instruction, contexts[i % 3])) for i in range(4)}
    alone = {key: answer(engine, *frame) for key, frame in frames.items()}
    batch = engine.batch(3)
    got = drive(batch, frames, {0: 0, 1: 0, 2: 2, 3: 4})
    for key in frames:
        assert "".join(t.text for t in got[key]) == alone[key].text, key
        assert got[key][-1].prefill.prompt_len == alone[key].prompt_len
    assert batch.rows.prefix_reads == 1 and max(batch.rows_per_step) == 3
    assert batch.rows.runs == batch.steps + len(batch.prefills)


def test_mlx_each_row_answers_its_own_frame(seeing_mlx_model):
    engine, prompt = mlx_engine(seeing_mlx_model, max_tokens=12, constrain=False)
    names = ["red", "blue", "green", "white"]
    frames = {i: (np.full((128, 128, 3), COLOURS[n], np.uint8), prompt)
              for i, n in enumerate(names)}
    got = drive(engine.batch(3), frames, {0: 0, 1: 0, 2: 1, 3: 2})
    for i, name in enumerate(names):
        text = "".join(t.text for t in got[i])
        assert text.startswith(f"color: {name}\ncolor: {name}"), (name, text)


def test_a_rows_own_failure_ends_that_row_only(qwen_torch_model):
    from pete_osc.engines.batch import Ended

    engine, prompt = torch_engine(qwen_torch_model)
    images = [np.full((128, 128, 3), 40 * i, np.uint8) for i in range(3)]
    alone = [answer(engine, image, prompt).text for image in images]
    batch = engine.batch(3)
    fork = engine.constraint.fork
    broken = []

    def failing_fork():
        c = fork()
        if not broken:  # the first row's grammar fails at its fourth token
            broken.append(c)
            follow, calls = c.follow, []

            def follow_then_fail(*args):
                calls.append(1)
                if len(calls) == 4:
                    raise RuntimeError("the grammar broke")
                return follow(*args)
            c.follow = follow_then_fail
        return c

    engine.constraint.fork = failing_fork
    for i, image in enumerate(images):
        batch.join(i, image, prompt)
    texts, ended = {i: "" for i in range(3)}, []
    while batch.size:
        for result in batch.step():
            if isinstance(result, Ended):
                ended.append(result)
                continue
            key, tokens = result
            texts[key] += "".join(t.text for t in tokens)
    assert [e.key for e in ended] == [0] and "the grammar broke" in str(ended[0].error)
    assert texts[1] == alone[1] and texts[2] == alone[2]
    assert 0 < len(texts[0]) < len(alone[0])
    assert batch.rows.free == [0, 1, 2]  # every slot given back


def test_a_dropped_row_leaves_and_its_slot_is_reused(qwen_torch_model):
    engine, prompt = torch_engine(qwen_torch_model)
    image = np.zeros((128, 128, 3), np.uint8)
    alone = answer(engine, image, prompt).text
    batch = engine.batch(2)
    batch.join("a", image, prompt)
    batch.join("b", image, prompt)
    batch.step()
    batch.step()
    closing = batch.drop("a")
    assert closing and closing[-1].finish == "abort"
    batch.join("c", image, prompt)
    texts = {"b": "", "c": ""}
    while batch.size:
        for key, tokens in batch.step():
            texts[key] += "".join(t.text for t in tokens)
    assert texts["c"] == alone and alone.endswith(texts["b"]) and texts["b"]
    # A frame asked with another DIRECTOR prompt cannot join rows that read this one's
    # prefix: it ends alone, the row in flight is answered as before.
    from pete_osc.engines.batch import Ended

    batch.join("a", image, prompt)
    batch.step()
    batch.join("new", image, Prompt("another system prompt", prompt.instruction))
    results = batch.step()
    assert [r.key for r in results if isinstance(r, Ended)] == ["new"]
    text = ""
    while batch.size:
        for key, tokens in batch.step():
            text += "".join(t.text for t in tokens)
    assert alone.endswith(text) and text


def test_interleaved_frames_each_leave_as_their_own_bundle():
    """Answers of two sources arrive interleaved (a batch): with bundle: yes each frame's
    messages still leave as one bundle of their own, when its answer ends."""
    import socket

    from pythonosc.osc_bundle import OscBundle

    from pete_osc.mapping.config import OscTarget
    from pete_osc.outputs.osc import OscOutput

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        out = OscOutput(OscTarget("main", "127.0.0.1", sock.getsockname()[1], "udp"), bundle=True)
        try:
            for frame, address in [(1, "/a1"), (2, "/b1"), (1, "/a2"), (2, "/b2")]:
                assert out.send(OscMessage("main", address, (1,), frame)) == []
            assert [m.address for m in out.end_frame(2)] == ["/b1", "/b2"]
            assert [m.address for m in out.end_frame(1)] == ["/a1", "/a2"]
            bundles = [OscBundle(sock.recv(4096)) for _ in range(2)]
        finally:
            out.close()
    assert [[m.address for m in b] for b in bundles] == [["/b1", "/b2"], ["/a1", "/a2"]]


# ---- through the command line -------------------------------------------------------------
def stills(folder: Path, colour: str, n: int = 3) -> Path:
    folder.mkdir()
    r, g, b = COLOURS[colour]
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:02d}.png"), np.full((96, 96, 3), (b, g, r), np.uint8))
    return folder


def events(stdout: str) -> list[tuple[int, str, str]]:
    out = []
    for line in stdout.splitlines():
        if line.startswith("{"):
            e = json.loads(line)
            out.append((e["frame"], e["source"], e["raw"]))
    return sorted(out)


def test_two_sources_answered_together_or_in_turn_say_the_same(seeing_torch_model, cli_env,
                                                               tmp_path):
    reds, blues = stills(tmp_path / "reds", "red"), stills(tmp_path / "blues", "blue")
    args = ["run", "--model", str(seeing_torch_model), "--source", f"r={reds}", "--source",
            f"b={blues}", "--size", "64", "--max-tokens", "8", "--constrain", "off",
            "--no-warmup", "--json", "--every-frame", "--metrics", str(tmp_path / "m.jsonl")]
    together = subprocess.run(PETE + args, capture_output=True, text=True, env=cli_env, timeout=300)
    assert together.returncode == 0, together.stderr
    assert "2 sources answered together" in together.stderr
    metrics = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    args[-1] = str(tmp_path / "m2.jsonl")
    turns = subprocess.run(PETE + args + ["--no-batch"], capture_output=True, text=True,
                           env=cli_env, timeout=300)
    assert turns.returncode == 0, turns.stderr
    assert "answered together" not in turns.stderr
    got = events(together.stdout)
    assert got == events(turns.stdout)
    assert {(s, raw) for _, s, raw in got} == {("r", "color: red"), ("b", "color: blue")}
    assert len(got) == 12  # 3 frames a source, 2 lines each
    # The two sources' first frames were answered at once: each began before the other ended.
    first = {m["source"]: m for m in metrics if m["frame"] in (0, 1)}
    r, b = first["r"], first["b"]
    assert r["started_at"] < b["started_at"] + b["token_times"][-1]
    assert b["started_at"] < r["started_at"] + r["token_times"][-1]


def test_ctrl_c_with_four_sources_mid_batch_ends_within_a_second(seeing_torch_model, cli_env,
                                                                 tmp_path):
    folders = [stills(tmp_path / c, c) for c in ("red", "green", "blue", "white")]
    argv = PETE + ["run", "--model", str(seeing_torch_model), "--size", "64",
                   "--max-tokens", "20000", "--constrain", "off", "--no-warmup",
                   "--every-frame", "--loop", "--frame-limit", "0", "--stall", "0"]
    for c, f in zip(("red", "green", "blue", "white"), folders):
        argv += ["--source", f"{c}={f}"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env)
    try:
        seen = ""
        deadline = time.monotonic() + 120
        while seen.count("color:") < 40 and time.monotonic() < deadline:
            seen += proc.stdout.read(1) or ""
        assert seen.count("color:") >= 40, seen
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "4 sources answered together" in err
    assert took < 1.0, took
    for c in ("red", "green", "blue", "white"):  # each source's frame is reported
        assert f"({c}):" in err, err
    assert "stopped." in err


def test_the_watchdog_ends_each_frame_of_a_batch_and_the_show_goes_on(seeing_torch_model,
                                                                     cli_env, tmp_path):
    reds, blues = stills(tmp_path / "reds", "red"), stills(tmp_path / "blues", "blue")
    proc = subprocess.run(
        PETE + ["run", "--model", str(seeing_torch_model), "--source", f"r={reds}",
                "--source", f"b={blues}", "--size", "64", "--max-tokens", "5000",
                "--constrain", "off", "--no-warmup", "--every-frame", "--frame-limit", "1",
                "--json"], capture_output=True, text=True, env=cli_env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "2 sources answered together" in proc.stderr
    ended = [line for line in proc.stderr.splitlines()
             if line.startswith("pete-osc: frame") and "ended by the watchdog" in line]
    assert len(ended) == 6, proc.stderr  # every frame of both sources, each on its own
    assert {("(r)" in line, "(b)" in line) for line in ended} == {(True, False), (False, True)}
    # Every frame of both sources was taken, answered and ended on its own (the show went
    # on with the next frames while others were still running).
    assert "ended by the watchdog: 6" in proc.stderr, proc.stderr


# ---- the remote engine: one request in flight per source ----------------------------------
def test_remote_requests_of_several_sources_overlap(cli_env):
    """Two sources on the remote engine: their requests are in flight together (the
    server's own clock says so), each source's events in its order; with --concurrency 1
    they take turns, one request at a time. A stalled request is cut by the watchdog and
    the other source goes on."""
    from support.server import Scripted, Server

    class Timed(Scripted):
        spans: list = []

        def do_POST(self):
            began = time.monotonic()
            super().do_POST()
            type(self).spans.append((began, time.monotonic()))

    def run(*extra, script):
        with Server(script) as server:
            server.handler = type("H", (Timed,), {"script": script, "requests": [],
                                                  "closed": [], "spans": []})
            server.httpd.RequestHandlerClass = server.handler
            proc = subprocess.run(
                PETE + ["run", "--engine", "remote", "--server", server.url, "--model", "m",
                        "--source", "a=none", "--source", "b=none", "--fps", "0", "--size",
                        "64", "--max-frames", "4", "--no-warmup", "--constrain", "off",
                        "--json", "--stall", "1", *extra],
                capture_output=True, text=True, env=cli_env, timeout=120)
        return proc, sorted(server.handler.spans)

    slow = [["color: red\n", 0.4, "mood: calm\n", "stop"]]
    together, spans = run(script=slow)
    assert together.returncode == 0, together.stderr
    assert "2 sources answered together" in together.stderr
    assert len(spans) == 4
    overlapping = sum(1 for (b1, e1), (b2, _) in zip(spans, spans[1:]) if b2 < e1)
    assert overlapping >= 2, spans  # the second request began before the first ended
    got = events(together.stdout)
    for source in ("a", "b"):
        mine = [raw for _, s, raw in got if s == source]
        assert mine == ["color: red", "mood: calm"] * 2
    in_turn, spans = run("--concurrency", "1", script=slow)
    assert in_turn.returncode == 0, in_turn.stderr
    assert "answered together" not in in_turn.stderr
    assert all(b2 >= e1 - 0.01 for (_, e1), (b2, _) in zip(spans, spans[1:])), spans
    # One request stalls: the watchdog cuts it alone, the other source is answered.
    stalled, spans = run(script=[["color: red\n", "stall"], ["color: blue\n", "stop"]])
    assert stalled.returncode == 0, stalled.stderr
    assert stalled.stderr.count("no token for 1 s") >= 1, stalled.stderr
    assert {raw for _, _, raw in events(stalled.stdout)} >= {"color: blue"}
