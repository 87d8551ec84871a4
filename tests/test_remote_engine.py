"""The remote engine against a real mlx_vlm.server, and servers that stall or hang up."""

import json
import os
import time
from http.server import BaseHTTPRequestHandler

import pytest
from support.cli import pete_run
from support.peers import free_port
from support.server import Server, mlx_vlm_server, send_error, serving, start_events


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


def test_a_server_of_a_model_that_takes_no_images_is_one_line_at_start(cli_env):
    """A server of a text model (vLLM answers a frame with HTTP 400, "... is not a
    multimodal model"): one line naming the server, what it said and what it lacks, exit 2;
    not taken for a refused grammar (the same request without the grammar fails too)."""
    with Server([["color: red\n", "stop"]], images=False) as server:
        proc = run("--engine", "remote", "--server", server.url, "--source", "none",
                   "--size", "64", env=cli_env, timeout=60)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last == (f"pete-osc: error: --server {server.url}: server error 400: m is not a "
                    "multimodal model (a 64 px frame at start): it must serve FastVLM, a model "
                    "that takes images; it serves m"), proc.stderr
    assert "refused DIRECTOR.md's language" not in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_server_that_answers_in_another_format_is_one_line_at_start(cli_env):
    """A web server that answers the chat request with a page, not a stream of chat
    completion chunks: one line naming the server and the API it must speak, exit 2."""

    class Page(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            send_error(self, 404, "not found") if "models" not in self.path else self._models()

        def _models(self):
            body = json.dumps({"object": "list", "data": [{"id": "m"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            page = b"<html><body>Welcome to nginx</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

    with serving(Page) as url:
        proc = run("--engine", "remote", "--server", url, "--source", "none", "--size", "64",
                   env=cli_env, timeout=60)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"pete-osc: error: --server {url}: ") and last.endswith(
        "(a 64 px frame at start): no chat-completion stream came back: it must speak "
        "OpenAI's streaming chat API (/v1/chat/completions)"), proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("usage", ["sizes", "scaled", None])
def test_a_server_that_scales_every_frame_to_one_size_is_said_at_start(cli_env, usage):
    """At start the engine asks the server's prompt-token count for a frame at --size and
    at half of it: the same count (a server that scales every frame to 1024 px, as vLLM
    with the checkpoint's processor does) is one line naming the server and the vLLM flag;
    a count that follows the size, or none counted, says nothing. The show goes on."""
    with Server([["color: red\n", "stop"]], usage=usage) as server:
        proc = run("--engine", "remote", "--server", server.url, "--source", "none",
                   "--size", "128", "--max-frames", "1", "--constrain", "off", env=cli_env,
                   timeout=60)
        asked = [r for r in server.handler.requests if r.get("stream_options")]
    assert proc.returncode == 0, proc.stderr
    said = [line for line in proc.stderr.splitlines() if "scales every frame" in line]
    if usage == "scaled":
        assert said == [f"pete-osc: {server.url} scales every frame to one size: a 128 px and "
                        "a 64 px frame are both 356 prompt tokens, so --size 128 does not "
                        "reach the model and each frame costs the server's size (vLLM: "
                        "--mm-processor-kwargs '{\"do_resize\": false, \"do_center_crop\": "
                        "false}', see the README)"], proc.stderr
    else:
        assert said == [], proc.stderr
    assert len(asked) == 2  # the two sizes, once, at start


@pytest.mark.parametrize("takes, dialect", [
    (("structured_outputs",), "structured_outputs grammar"),  # vLLM since 0.12
    (("guided_regex",), "guided_regex"),  # vLLM before
    (("regex",), "regex"),  # SGLang
    ((), None),  # mlx_vlm.server: none
])
def test_the_server_is_asked_once_at_start_what_it_takes(cli_env, director, takes, dialect):
    """The remote engine probes at start which field a server decodes by (a probe language
    whose one answer must come back), says it in one line, and sends DIRECTOR.md's
    language in that field alone; a server that takes none gets plain requests and one
    warning."""
    import re

    from support.events import answer

    with Server([["mood: tense\n", "stop"]]) as server:
        server.handler.takes = takes
        proc = run("--engine", "remote", "--server", server.url, "--model", "m", "--source",
                   "none", "--every-frame", "--size", "64", "--max-frames", "2", "--no-warmup",
                   "--json", env=cli_env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    bodies = server.handler.requests
    fields = ("structured_outputs", "guided_regex", "regex")
    if dialect is None:
        assert "decoding is not constrained: --server" in proc.stderr
        assert "takes no grammar or regex (tried structured_outputs grammar, structured_"\
            "outputs regex, guided_regex, regex)" in proc.stderr
        assert not any(f in b for b in bodies for f in fields)
    else:
        assert proc.stderr.count(f"decoding constrained to the DIRECTOR.md schema by the "
                                 f"server ({dialect})") == 1, proc.stderr
        sent = [[f for f in fields if f in b] for b in bodies]
        assert sent == [[dialect.split()[0]]] * 2  # that field alone, in every request
        if dialect == "structured_outputs grammar":
            lark = bodies[0]["structured_outputs"]["grammar"]
            assert lark.startswith("start: k_color k_mood") and "v_scene" in lark
        else:
            regex = bodies[0][dialect]
            assert re.fullmatch(regex, answer())
            assert not re.fullmatch(regex, answer(energy="7"))
            assert not re.fullmatch(regex, "energy: 0.7\nmood: tense\n")  # keys in order
    # probed once, at start, never during the show
    assert len(server.handler.probes) <= 2 * len(DIALECT_NAMES)
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(e["key"], e["value"]) for e in events] == [("mood", "tense")] * 2


DIALECT_NAMES = ("structured_outputs grammar", "structured_outputs regex", "guided_regex",
                 "regex")


class _Picky(BaseHTTPRequestHandler):
    """Takes structured_outputs at start (the probes), then refuses it (HTTP 400) in the
    show's requests, as a server whose grammar backend fails on a frame would."""

    bodies: list = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self.bodies.append(body)
        probe = "pete-osc probe" in json.dumps(body["messages"])
        if "structured_outputs" in body and not probe:
            send_error(self, 400, "grammar backend failed")
            return
        start_events(self)
        text = "pete" if probe else "mood: tense\n"
        for piece, finish in ((text, None), ("", "stop")):
            chunk = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
                     "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": finish}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")


def test_a_grammar_refused_mid_show_falls_back_to_plain_requests(cli_env):
    handler = type("Handler", (_Picky,), {"bodies": []})
    with serving(handler) as url:
        proc = run("--engine", "remote", "--server", url, "--model", "m", "--source", "none",
                   "--every-frame", "--size", "64", "--max-frames", "2", "--no-warmup", "--json",
                   env=cli_env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    shows = [b for b in handler.bodies if "pete-osc probe" not in json.dumps(b["messages"])]
    # Refused once (400): one warning, then plain requests, and the frames still went on.
    assert proc.stderr.count("refused DIRECTOR.md's language in structured_outputs grammar") == 1
    assert [("structured_outputs" in b) for b in shows] == [True, False, False]
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
