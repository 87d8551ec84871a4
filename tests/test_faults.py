"""The fault table, driven through the real CLI: each fault a show meets on stage, and for
each one the show lives, says one line on stderr, loses nothing already done, and leaves no
note sounding. Real peers: an OpenAI-compatible server that misbehaves on cue, a UDP
receiver that counts every OSC message, an MJPEG-over-HTTP camera, JACK MIDI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from peers import ROOT, free_port

PETE = [sys.executable, "-m", "pete_osc"]


# ---- a server that answers as a script says ------------------------------------------------

class Scripted(BaseHTTPRequestHandler):
    """Chat completions whose n-th answer is ``script[n]`` (the last one again after the end):
    a list of text chunks, ending in "stop" or "length" (a finish reason), "stall" (no more
    bytes for 8 s), or "drop" (the connection closed mid-answer)."""

    script: list = []
    requests: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):  # /v1/models
        body = json.dumps({"object": "list", "data": [{"id": "m", "object": "model"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        cls = type(self)
        answer = cls.script[min(len(cls.requests), len(cls.script) - 1)]
        cls.requests.append(body)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        try:
            for piece in answer:
                if piece == "stall":
                    time.sleep(8)
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
            self.wfile.write(b"data: [DONE]\n\n")
        except OSError:
            pass


class Server:
    """A :class:`Scripted` server on a free local port (``with``: started and stopped)."""

    def __init__(self, script):
        self.handler = type("Handler", (Scripted,), {"script": script, "requests": []})
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


def remote_run(url, *extra, frames=2, env):
    return subprocess.run(
        PETE + ["run", "--engine", "remote", "--server", url, "--model", "m", "--source", "none",
                "--fps", "0", "--size", "64", "--max-frames", str(frames), "--no-warmup",
                "--constrain", "off", "--json", *extra],
        capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)


# ---- a line cut mid-way is never an event ---------------------------------------------------

HALF = ["color: amber\n", "mood: tense\n", "energy: 0."]
WHOLE = ["color: blue\n", "mood: calm\n", "energy: 0.3\n", "stop"]


@pytest.mark.parametrize("how, said", [
    ("stall", "no token for 1 s; ended by the watchdog"),
    ("drop", "failed"),
])
def test_a_line_cut_mid_way_is_reported_as_cut_never_sent(how, said, cli_env, tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    with Server([HALF + [how], WHOLE]) as server:
        proc = remote_run(server.url, "--stall", "1", "--metrics", str(metrics), env=cli_env)
    assert proc.returncode == 0, proc.stderr
    assert said in proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(e["frame"], e["raw"]) for e in events] == [
        (0, "color: amber"), (0, "mood: tense"),  # the cut "energy: 0." is not sent
        (1, "color: blue"), (1, "mood: calm"), (1, "energy: 0.3")]
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["rejected"] for r in records] == [1, 0]  # reported, as a rejected line


def test_a_line_cut_by_the_token_limit_is_never_sent(cli_env, tmp_path):
    with Server([["color: amber\n", "energy: 0.", "length"]]) as server:
        proc = remote_run(server.url, "--max-tokens", "2", frames=1, env=cli_env)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [e["key"] for e in events] == ["color"]
