"""The remote engine against a real mlx_vlm.server, and servers that stall or hang up."""

import json
import os
import time
from http.server import BaseHTTPRequestHandler

import pytest
from support.cli import pete_run
from support.peers import free_port
from support.server import mlx_vlm_server, send_error, serving, start_events


@pytest.fixture(scope="module")
def mlx_server(scripted_mlx_model, tmp_path_factory, cli_env_module):
    """mlx_vlm.server serving the scripted tiny model (see mlx_vlm_server)."""
    with mlx_vlm_server(scripted_mlx_model, tmp_path_factory.mktemp("served-model"),
                        cli_env_module) as url:
        yield url


@pytest.fixture(scope="module")
def cli_env_module():
    return dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")


def run(*argv, env, timeout=300):
    return pete_run("run", *argv, env=env, timeout=timeout)


def test_streams_from_a_real_mlx_vlm_server(mlx_server, shared_video, cli_env):
    proc = run("--engine", "remote", "--server", mlx_server, "--source", str(shared_video),
               "--size", "64", "--max-frames", "2", "--max-tokens", "14", "--every-frame",
               "--json", env=cli_env)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(e["key"], e["value"], e["frame"]) for e in events] == [
        ("energy", 0.7, 0), ("energy", 0.7, 0), ("energy", 0.7, 1), ("energy", 0.7, 1)]
    assert "remote engine" in proc.stderr


class _Fake(BaseHTTPRequestHandler):
    """A chat-completions endpoint that misbehaves as ``mode`` says."""

    mode = "stall"

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.mode == "error":
            send_error(self, 503, "model overloaded")
            return
        start_events(self)
        chunk = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
                 "choices": [{"index": 0, "delta": {"content": "energy: 0.7\n"}, "finish_reason": None}]}
        if self.mode == "drop":
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
            self.close_connection = True  # hang up mid-answer
            return
        time.sleep(5)  # stall: say nothing


@pytest.mark.parametrize("mode,reason", [
    ("stall", "no answer within 1 s (timed out)"),
    ("drop", "the answer stopped after 1 tokens"),
    ("error", "server error 503"),
])
def test_a_failing_server_fails_the_frame_not_the_run(mode, reason, cli_env):
    with serving(type("Handler", (_Fake,), {"mode": mode})) as url:
        proc = run("--engine", "remote", "--server", url, "--model", "m", "--source", "none",
                   "--fps", "0", "--size", "64", "--max-frames", "3", "--timeout", "1",
                   "--no-warmup", "--json", env=cli_env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    failed = [l for l in proc.stderr.splitlines() if "failed: RemoteError" in l]
    # The same failure frame after frame is said once (and counted in the summary), and
    # the loop went on.
    assert len(failed) == 1, proc.stderr
    assert reason in failed[0] and "the show goes on" in failed[0], failed
    assert "3 frames in" in proc.stderr and "failed: 3" in proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    # What arrived before the hang-up is kept: each frame's complete line became an event.
    assert len(events) == (3 if mode == "drop" else 0)


def test_no_server_is_one_line_at_start(cli_env):
    port = free_port(kind=1)
    proc = run("--engine", "remote", "--server", f"http://127.0.0.1:{port}", "--source", "none",
               env=cli_env, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"pete-osc: error: --server http://127.0.0.1:{port}: connection failed")


class _Picky(BaseHTTPRequestHandler):
    """Refuses requests that carry a guided regex (HTTP 400), as a strict server would,
    and answers the others with one DIRECTOR line; keeps the bodies it saw."""

    bodies: list = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self.bodies.append(body)
        if "guided_regex" in body:
            send_error(self, 400, "unknown field guided_regex")
            return
        start_events(self)
        for text, finish in (("mood: tense\n", None), ("", "stop")):
            chunk = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
                     "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")


def test_grammar_goes_to_the_server_and_falls_back_when_refused(cli_env, director):
    import re

    handler = type("Handler", (_Picky,), {"bodies": []})
    with serving(handler) as url:
        proc = run("--engine", "remote", "--server", url, "--model", "m", "--source", "none",
                   "--every-frame", "--size", "64", "--max-frames", "2", "--no-warmup", "--json",
                   env=cli_env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    first = handler.bodies[0]
    # The request carried DIRECTOR.md's language as a regex, for vLLM and SGLang alike.
    regex = first["guided_regex"]
    assert first["regex"] == regex and first["structured_outputs"] == {"regex": regex}
    from support.events import answer

    assert re.fullmatch(regex, answer())
    assert not re.fullmatch(regex, answer(energy="7"))
    assert not re.fullmatch(regex, "energy: 0.7\nmood: tense\n")  # keys in order, all there
    # Refused once (400): one warning, then plain requests, and the frames still went on.
    assert proc.stderr.count("does not take a guided regex") == 1
    assert [("guided_regex" in b) for b in handler.bodies] == [True, False, False]
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(e["key"], e["value"]) for e in events] == [("mood", "tense")] * 2


def test_the_request_carries_the_frame_itself(cli_env, tmp_path):
    """A served model answers the same whatever the image, so look at the request: each
    frame's JPEG is that frame (squared and sized to --size), not a blank or a stale one."""
    import base64

    import cv2
    import numpy as np

    from pete_osc.capture.sources import fit
    from pete_osc.engines import square_rgb

    folder = tmp_path / "frames"
    folder.mkdir()
    ramp = np.tile(np.linspace(0, 255, 320, dtype=np.uint8)[None, :, None], (240, 1, 3))
    pictures = [np.dstack([ramp[..., 0], np.full((240, 320), 200, np.uint8), ramp[..., 0][::-1]]),
                np.full((240, 320, 3), (30, 90, 220), np.uint8)]
    for i, picture in enumerate(pictures):
        cv2.imwrite(str(folder / f"{i}.png"), picture)
    handler = type("Handler", (_Picky,), {"bodies": []})
    with serving(handler) as url:
        proc = run("--engine", "remote", "--server", url, "--model", "m", "--source", str(folder),
                   "--every-frame", "--size", "128", "--max-frames", "2", "--no-warmup",
                   "--constrain", "off", "--json", env=cli_env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert len(handler.bodies) == 2
    for body, picture in zip(handler.bodies, pictures):
        part = next(p for p in body["messages"][-1]["content"] if p["type"] == "image_url")
        data = part["image_url"]["url"].removeprefix("data:image/jpeg;base64,")
        sent = cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_COLOR)
        expected = square_rgb(fit(picture, 320, 240), 128)
        assert sent.shape == (128, 128, 3)
        error = np.abs(cv2.cvtColor(sent, cv2.COLOR_BGR2RGB).astype(int) - expected).mean()
        assert error < 6, error  # JPEG's loss only


def test_the_context_goes_before_the_image(cli_env, tmp_path):
    """DIRECTOR.md's context: (with {previous}) is a text part before the image in each
    request, holding the answer of the frame before; the instruction comes after it."""
    import json as _json

    from support.peers import ROOT

    text = (ROOT / "DIRECTOR.md").read_text()
    director = tmp_path / "DIRECTOR.md"
    director.write_text(text.replace("keys:\n", "context: 'Before: {previous}'\nkeys:\n", 1))
    handler = type("Handler", (_Picky,), {"bodies": []})
    with serving(handler) as url:
        proc = run("--engine", "remote", "--server", url, "--model", "m", "--source", "none",
                   "--every-frame", "--size", "64", "--max-frames", "2", "--no-warmup",
                   "--constrain", "off", "--director", str(director), env=cli_env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    contents = [b["messages"][-1]["content"] for b in handler.bodies]
    assert [[p["type"] for p in c] for c in contents] == [["text", "image_url", "text"]] * 2
    assert [c[0]["text"] for c in contents] == ["Before: none yet", "Before: mood tense"]
    assert contents[1][2]["text"] == "Describe this frame."
    assert _json.dumps(contents[1]).count("mood tense") == 1
