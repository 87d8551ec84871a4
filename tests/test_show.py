"""The show as the user runs it: several sources at once, files edited while it runs, a
stream that goes away and comes back, a stalled answer, Ctrl-C. The CLI as a subprocess,
real sources (the shared clip, a folder of images, an MJPEG-over-HTTP server), a tiny
model through the real engine, and oscdump as the receiver."""

import json
import re
import signal
import subprocess
import time
from http.server import BaseHTTPRequestHandler

from support.cli import PETE, Run, dumped, osc_mapping, replace_text, stills
from support.peers import ROOT, free_port, oscdump
from support.server import serving, start_events

# ---- several sources at once -----------------------------------------------------------

def test_two_sources_reach_the_model_and_their_own_addresses(
        scripted_torch_model, shared_video, cli_env, tmp_path):
    port = free_port()
    dump = oscdump(port)
    mapping = osc_mapping(tmp_path / "m.yaml", port)
    metrics = tmp_path / "metrics.jsonl"
    folder = stills(tmp_path / "stills")
    try:
        # --every-frame: both files always have a frame ready, so the turns are exact.
        run = Run("--model", str(scripted_torch_model), "--size", "64", "--every-frame",
                  "--max-tokens", "8", "--constrain", "off", "--max-frames", "8", "--no-warmup", "--loop",
                  "--source", f"clip={shared_video}", "--source", str(folder),
                  "--mapping", str(mapping), "--metrics", str(metrics), env=cli_env)
        assert run.finish() == 0, "\n".join(run.err)
        got = dumped(dump, [], seconds=1.0)
    finally:
        dump.stop()
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    by_source = {name: [r for r in records if r["source"] == name] for name in ("clip", "stills")}
    # Served in turn, frame ids unique across the run.
    assert [r["source"] for r in records] == ["clip", "stills"] * 4
    assert [r["frame"] for r in records] == list(range(8))
    # Each frame's image went through the model: 64 px is one image token, prefilled
    # with the instruction after the cached DIRECTOR prefix, for both sources alike.
    assert {r["prefilled"] for r in records} == {records[0]["prefilled"]}
    assert records[0]["prefilled"] > 1 and records[0]["prompt_len"] > records[0]["prefilled"]
    addresses = {line.split(" ")[0] for line in got}
    assert addresses == {"/pete/clip/energy", "/pete/stills/energy"}, got
    # Each message names its frame and source: every frame's messages came from it.
    for line in got:
        address, _types, value, frame, source = line.split(" ")
        assert source == f'"{address.split("/")[2]}"'
        assert records[int(frame)]["source"] == address.split("/")[2]
    assert all(len(rs) == 4 and all(r["events"] >= 1 for r in rs) for rs in by_source.values())
    stderr = "\n".join(run.err)
    assert "running on clip (" in stderr and "stills (" in stderr
    assert re.search(r"per source: clip 4 frames \(frame to first event \d+ ms\), "
                     r"stills 4 frames", stderr), stderr


def test_ctrl_c_ends_a_run_with_several_sources_within_a_second(
        shared_video, cli_env, tmp_path):
    folder = stills(tmp_path / "stills")
    text = tmp_path / "answer.txt"
    text.write_text("energy: 0.7\nmood: tense\n" * 20)
    run = Run("--engine", "replay", "--replay", str(text), "--fps", "0",
              "--source", str(shared_video), "--source", str(folder), "--loop",
              "--source", "blank=none", env=cli_env)
    try:
        run.wait_for(lambda: len(run.frames()) >= 3, what="three frames")
        t0 = time.monotonic()
        rc = run.interrupt()
        took = time.monotonic() - t0
    finally:
        run.kill()
    assert rc == 0
    assert took < 1.5, took  # the bound is a second; CI's 2 cores get some slack
    assert any(l.startswith("pete-osc: stopped.") for l in run.err), run.err
    assert not any("Traceback" in l for l in run.err)


# ---- files edited while the show runs --------------------------------------------------

def test_a_new_key_appears_after_the_director_gains_it_and_sighup_reloads(cli_env, tmp_path):
    director = tmp_path / "DIRECTOR.md"
    original = (ROOT / "DIRECTOR.md").read_text()
    director.write_text(original)
    answer = tmp_path / "answer.txt"
    answer.write_text("energy: 0.7\nglow: 0.5\n")
    run = Run("--engine", "replay", "--replay", str(answer), "--loop", "--fps", "5", "--json",
              "--director", str(director), "--no-reload", "-vv", env=cli_env)
    try:
        run.wait_for(lambda: len([l for l in run.out if '"energy"' in l]) >= 2, what="events")
        assert not any('"glow"' in l for l in run.out)
        # glow added to the schema; --no-reload pins the file until SIGHUP.
        replace_text(director, original.replace(
            "keys:\n", "keys:\n  glow:\n    type: number\n    min: 0\n    max: 1\n", 1))
        time.sleep(1.0)
        assert not any('"glow"' in l for l in run.out)
        run.proc.send_signal(signal.SIGHUP)
        run.wait_for(lambda: any('"glow"' in l for l in run.out), what="a glow event")
        rc = run.interrupt()
    finally:
        run.kill()
    assert rc == 0
    glow = [json.loads(l) for l in run.out if '"glow"' in l]
    assert glow[0]["value"] == 0.5


# ---- a live stream that goes away ------------------------------------------------------

# ---- the watchdog ----------------------------------------------------------------------

class _Stalling(BaseHTTPRequestHandler):
    """An OpenAI-compatible server whose first answer stops mid-stream; later ones finish."""

    requests = 0

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        probe = b"pete-osc probe" in body  # (the remote engine's start-up probe: no grammar)
        type(self).requests += 0 if probe else 1
        first = type(self).requests == 1 and not probe
        start_events(self)

        def chunk(text, finish=None):
            body = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
                    "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}
            self.wfile.write(f"data: {json.dumps(body)}\n\n".encode())
            self.wfile.flush()

        try:
            chunk("energy: 0.7\n" if first else "energy: 0.2\n")
            if first:
                time.sleep(8)  # the answer stalls mid-stream
                return
            chunk("", "stop")
            self.wfile.write(b"data: [DONE]\n\n")
        except OSError:
            pass


def test_the_watchdog_ends_a_stalled_frame_and_the_show_goes_on(cli_env, tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    with serving(type("Handler", (_Stalling,), {"requests": 0})) as url:
        t0 = time.monotonic()
        proc = subprocess.run(PETE + ["run", "--engine", "remote", "--server", url, "--model", "m",
                                      "--source", "none", "--fps", "0", "--size", "64",
                                      "--max-frames", "3", "--stall", "1", "--no-warmup", "--json",
                                      "--metrics", str(metrics)],
                              capture_output=True, text=True, env=cli_env, timeout=120)
        took = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    assert took < 8, took  # did not wait for the stalled answer
    lines = [l for l in proc.stderr.splitlines() if "watchdog" in l]
    assert lines[0] == ("pete-osc: frame 0 (blank): no token for 1 s; ended by the watchdog, "
                        "the show goes on with the next frame"), proc.stderr
    assert "ended by the watchdog: 1" in lines[-1] and "failed: 0" in lines[-1]
    records = [json.loads(l) for l in metrics.read_text().splitlines()]
    assert [r["watchdog"] for r in records] == ["no token for 1 s", None, None]
    # What the stalled frame said before it stalled still went out; the next frames too.
    events = [json.loads(l) for l in proc.stdout.splitlines()]
    assert [(e["frame"], e["value"]) for e in events] == [(0, 0.7), (1, 0.2), (2, 0.2)]


def test_a_director_only_edit_applies_to_the_mapping_too(cli_env, tmp_path):
    """The mapping is read against DIRECTOR.md (a word's $index is its place in the key's
    values): an edit of DIRECTOR.md alone re-applies the mapping."""
    port = free_port()
    dump = oscdump(port)
    director = tmp_path / "DIRECTOR.md"
    director.write_text((ROOT / "DIRECTOR.md").read_text())
    mapping = tmp_path / "m.yaml"
    mapping.write_text(f"osc:\n  main: {{port: {port}}}\nroutes:\n"
                       "  - {event: mood, address: /m, args: [$index]}\n")
    answer = tmp_path / "answer.txt"
    answer.write_text("mood: tense\n")
    run = Run("--engine", "replay", "--replay", str(answer), "--loop", "--fps", "5",
              "--director", str(director), "--mapping", str(mapping), "--quiet", env=cli_env)
    got: list[str] = []
    try:
        run.wait_for(lambda: "/m i 3" in dumped(dump, got), what="tense as value 3")
        replace_text(director, director.read_text().replace(
            "values: [calm, happy, tense,", "values: [tense, calm, happy,"))
        run.wait_for(lambda: "/m i 1" in dumped(dump, got), what="tense as value 1", timeout=20)
        rc = run.interrupt()
    finally:
        run.kill()
        dump.stop()
    assert rc == 0
