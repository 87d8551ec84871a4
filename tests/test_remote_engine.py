"""The remote engine against a real mlx_vlm.server, and servers that stall or hang up."""

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from peers import free_port


@pytest.fixture(scope="module")
def mlx_server(scripted_mlx_model, tmp_path_factory, cli_env_module):
    """``python -m mlx_vlm.server`` serving the scripted tiny model on 127.0.0.1.

    The server's processor sizes images from the model's preprocessor_config.json, so a
    copy of the model folder says 64 px (mlx-vlm would otherwise encode 1024 px frames,
    which takes a minute on this CPU)."""
    folder = tmp_path_factory.mktemp("served-model")
    for f in Path(scripted_mlx_model).iterdir():
        if f.name != "preprocessor_config.json":
            (folder / f.name).symlink_to(f)
    pre = json.loads((Path(scripted_mlx_model) / "preprocessor_config.json").read_text())
    pre.update(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    (folder / "preprocessor_config.json").write_text(json.dumps(pre))
    port = free_port(kind=1)
    log = open(folder / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "mlx_vlm.server", "--model", str(folder),
                             "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=cli_env_module)
    url = f"http://127.0.0.1:{port}"
    import urllib.request

    end = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url + "/v1/models", timeout=1).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > end:
                proc.kill()
                pytest.fail("mlx_vlm.server did not start: "
                            + (folder / "server.log").read_text()[-2000:])
            time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def cli_env_module():
    return dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")


def run(*argv, env, timeout=300):
    return subprocess.run([sys.executable, "-m", "pete_osc", "run", *argv], capture_output=True,
                          text=True, env=env, timeout=timeout)


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
            body = b'{"error": {"message": "model overloaded"}}'
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
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
    handler = type("Handler", (_Fake,), {"mode": mode})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        proc = run("--engine", "remote", "--server", url, "--model", "m", "--source", "none",
                   "--fps", "0", "--size", "64", "--max-frames", "3", "--timeout", "1",
                   "--no-warmup", "--json", env=cli_env, timeout=120)
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 0, proc.stderr
    failed = [l for l in proc.stderr.splitlines() if "failed: RemoteError" in l]
    assert len(failed) == 3, proc.stderr  # every frame reported, and the loop went on
    assert all(reason in l for l in failed), failed
    assert "3 frames" in proc.stderr and "3 failed" in proc.stderr
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
