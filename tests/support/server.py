"""Servers for the remote engine's tests: a real ``mlx_vlm.server``, a scripted
OpenAI-compatible one (chat completions streamed as a script says: text, pauses, a stall,
a dropped connection), and the pieces of hand-written ones."""

import contextlib
import json
import select
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from .peers import free_port


class Scripted(BaseHTTPRequestHandler):
    """Chat completions whose n-th answer is ``script[n]`` (the last one again after the end):
    a list of text chunks, ending in "stop" or "length" (a finish reason), "stall" (no more
    bytes for 8 s), or "drop" (the connection closed mid-answer); a number among them is
    a pause of that many seconds. ``models_delay``: seconds before /v1/models answers."""

    script: list = []
    requests: list = []
    probes: list = []  # the remote engine's start-up probes
    takes: tuple = ("structured_outputs",)  # the request fields it decodes by (vLLM's)
    closed: list = []  # time.monotonic() when a client closed a stalled answer's connection
    models_delay = 0.0
    images = True  # False: a text model's server, which refuses a frame (HTTP 400, as vLLM)
    # Prompt tokens counted where a request asks (stream_options.include_usage), as vLLM
    # does: None, not counted; "sizes", FastVLM's one image token per 64x64 pixels of the
    # frame sent; "scaled", every frame scaled to 1024 px first (256 tokens).
    usage: str | None = None

    def _stall(self, seconds: float) -> None:
        """No bytes for ``seconds``, noting when the client closes the connection."""
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            ready, _, _ = select.select([self.connection], [], [], 0.02)
            if ready and not self.connection.recv(1, socket.MSG_PEEK):
                type(self).closed.append(time.monotonic())
                return

    def log_message(self, *args):
        pass

    def do_GET(self):  # /v1/models
        time.sleep(self.models_delay)
        body = json.dumps({"object": "list", "data": [{"id": "m", "object": "model"}]}).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the client went away meanwhile
            pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        cls = type(self)
        if "pete-osc probe" in json.dumps(body.get("messages")):
            # The remote engine's start-up probe (which field takes a grammar): answered
            # as a server that takes the fields in ``takes`` would, off the script.
            cls.probes.append(body)
            honoured = any(field in body for field in cls.takes)
            self._answer(["pete" if honoured else "anything", "stop"])
            return
        if not cls.images and "image_url" in json.dumps(body.get("messages")):
            error = json.dumps({"object": "error", "type": "BadRequestError", "code": 400,
                                "message": "m is not a multimodal model"}).encode()
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(error)))
            self.end_headers()
            self.wfile.write(error)
            return
        answer = cls.script[min(len(cls.requests), len(cls.script) - 1)]
        cls.requests.append(body)
        self._answer(answer, self._prompt_tokens(body))

    def _prompt_tokens(self, body: dict) -> int | None:
        if not (self.usage and body.get("stream_options", {}).get("include_usage")):
            return None
        import base64

        import cv2
        import numpy as np

        for message in body["messages"]:
            for part in message["content"] if isinstance(message["content"], list) else []:
                if part.get("type") == "image_url":
                    jpeg = base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
                    side = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape[0]
                    side = 1024 if self.usage == "scaled" else side
                    return 100 + (side // 64) ** 2
        return 100

    def _answer(self, answer: list, prompt_tokens: int | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        try:
            for piece in answer:
                if isinstance(piece, (int, float)):
                    time.sleep(piece)
                    continue
                if piece == "stall":
                    self._stall(8.0)
                    return
                if piece == "drop":
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                finish = piece if piece in ("stop", "length") else None
                chunk = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
                         "choices": [{"index": 0, "delta": {"content": "" if finish else piece},
                                      "finish_reason": finish}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
            if prompt_tokens is not None:
                chunk = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
                         "choices": [], "usage": {"prompt_tokens": prompt_tokens,
                                                  "completion_tokens": 1,
                                                  "total_tokens": prompt_tokens + 1}}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")
        except OSError:
            pass


class Server:
    """A :class:`Scripted` server on a free local port (``with``: started and stopped)."""

    def __init__(self, script, models_delay=0.0, images=True, usage=None):
        self.handler = type("Handler", (Scripted,), {"script": script, "requests": [],
                                                     "closed": [], "models_delay": models_delay,
                                                     "probes": [], "images": images,
                                                     "usage": usage})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self.handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@contextlib.contextmanager
def mlx_vlm_server(model, folder: Path, env: dict):
    """``python -m mlx_vlm.server`` serving ``model`` on 127.0.0.1; yields its URL.

    The server's processor sizes images from the model's preprocessor_config.json, so a
    copy of the model folder (in ``folder``) says 64 px (mlx-vlm would otherwise encode
    1024 px frames, which takes a minute on this CPU)."""
    for f in Path(model).iterdir():
        if f.name != "preprocessor_config.json":
            (folder / f.name).symlink_to(f)
    pre = json.loads((Path(model) / "preprocessor_config.json").read_text())
    pre.update(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    (folder / "preprocessor_config.json").write_text(json.dumps(pre))
    port = free_port(kind=1)
    log = open(folder / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "mlx_vlm.server", "--model", str(folder),
                             "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    import urllib.request

    end = time.monotonic() + 120
    try:
        while True:
            try:
                urllib.request.urlopen(url + "/v1/models", timeout=1).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > end:
                    pytest.fail("mlx_vlm.server did not start: "
                                + (folder / "server.log").read_text()[-2000:])
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@contextlib.contextmanager
def serving(handler):
    """A threaded HTTP server on a free local port for the test's duration; yields its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def send_error(handler: BaseHTTPRequestHandler, status: int, message: str) -> None:
    """An OpenAI-style JSON error response."""
    payload = json.dumps({"error": {"message": message}}).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)


def start_events(handler: BaseHTTPRequestHandler) -> None:
    """The head of a server-sent-events answer."""
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.end_headers()
