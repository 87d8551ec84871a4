"""Tests that can tell which frame the model saw: a test model that reads the frame
(support.seeing: its answer is ``color: NAME`` with the picture's colour), through the
engines, the CLI, several sources, the remote engine and a recording.

Break the path on purpose (a stale frame from the capture, a frame sent to another
source's row, a request without its frame) and these fail; a scripted model, which says
the same whatever the picture, could not."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from support.peers import ROOT, free_port

PETE = [sys.executable, "-m", "pete_osc"]
BGR = {"red": (20, 20, 220), "green": (30, 200, 10), "blue": (230, 20, 20),
       "white": (240, 240, 240), "black": (10, 10, 10)}


def picture(name: str, size: int = 128) -> np.ndarray:
    """A frame of one colour (BGR, as a camera gives it), a little noisy."""
    rng = np.random.default_rng(len(name))
    image = np.full((size, size, 3), BGR[name], np.float32) + rng.normal(0, 6, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def patch() -> np.ndarray:
    """Light grey with a red quarter: at 128 px the model's four image tokens see the red
    quarter on its own (red); at 64 px its one token sees it mixed into the grey (white)."""
    image = np.full((128, 128, 3), 205, np.uint8)
    image[64:, 64:] = BGR["red"]
    return image


def stills(folder: Path, *images) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        cv2.imwrite(str(folder / f"{i:02d}.png"), image)
    return folder


def answers(engine, images, size: int) -> list[str]:
    from support.answers import answer

    from pete_osc.engines.base import square_rgb

    out = []
    for image in images:
        text = answer(engine, square_rgb(image, size)).text
        out.append(text)
    return out


def open_engine(name: str, model: Path, size: int):
    from pete_osc.director.schema import load_director
    from pete_osc.engines import GenerationSettings

    d = load_director(ROOT / "DIRECTOR.md")
    settings = GenerationSettings(4, 0.0, size)
    if name == "torch":
        from pete_osc.engines.torch_engine import TorchEngine

        return TorchEngine(str(model), d.prompt, d.instruction, settings)
    from pete_osc.engines.mlx_engine import MlxEngine

    return MlxEngine(str(model), d.prompt, d.instruction, settings)


# ---- the test model itself -------------------------------------------------------------------

@pytest.mark.parametrize("engine", ["torch", "mlx"])
def test_the_test_model_names_the_colour_it_sees(engine, request):
    model = request.getfixturevalue(f"seeing_{engine}_model")
    for size in (64, 128):
        eng = open_engine(engine, model, size)
        try:
            got = answers(eng, [picture(name) for name in BGR] + [patch()], size)
        finally:
            eng.close()
        expected = [f"color: {name}\n" for name in BGR]
        # The red quarter: seen on its own at 128 px, averaged into the grey at 64 px.
        expected.append("color: red\n" if size == 128 else "color: white\n")
        assert got == expected, (size, got)


def test_a_test_model_with_head_dim_64_reads_the_frame_too(tmp_path):
    """vLLM's CPU attention refuses head_dim 16 (the tiny shape's): the same model with
    64-wide heads."""
    pytest.importorskip("torch", reason="the torch engine is not installed")
    from support.models import TextShape
    from support.seeing import build_seeing_torch

    model = build_seeing_torch(tmp_path / "wide", TextShape(128, 2, 256, 2, 1))
    config = json.loads((model / "config.json").read_text())["text_config"]
    assert config["hidden_size"] // config["num_attention_heads"] == 64
    eng = open_engine("torch", model, 64)
    try:
        assert answers(eng, [picture("green"), picture("blue")], 64) == [
            "color: green\n", "color: blue\n"]
    finally:
        eng.close()


# ---- through the command line ------------------------------------------------------------------

def run(*argv, env, timeout=300):
    return subprocess.run(PETE + ["run", *argv], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=timeout)


def colours(stdout: str) -> list[tuple[int, str, str]]:
    """(frame, source, colour name) of every color event in --json output."""
    out = []
    for line in stdout.splitlines():
        e = json.loads(line)
        if e["key"] == "color":
            out.append((e["frame"], e["source"], e["value"]["name"]))
    return out


@pytest.mark.parametrize("engine", ["torch", "mlx"])
def test_the_size_reaches_the_encoder(engine, request, cli_env, tmp_path):
    model = request.getfixturevalue(f"seeing_{engine}_model")
    folder = stills(tmp_path / "patch", patch())
    said = {}
    for size in ("64", "128"):
        proc = run("--engine", engine, "--model", str(model), "--source", str(folder), "--size",
                   size, "--max-tokens", "4", "--constrain", "off", "--no-warmup", "--json",
                   "--every-frame", env=cli_env)
        assert proc.returncode == 0, proc.stderr
        said[size] = [c for _, _, c in colours(proc.stdout)]
    assert said == {"64": ["white"], "128": ["red"]}


def test_several_sources_each_get_their_own_frame(seeing_torch_model, cli_env, tmp_path):
    reds = stills(tmp_path / "reds", *[picture("red")] * 4)
    blues = stills(tmp_path / "blues", *[picture("blue")] * 4)
    proc = run("--model", str(seeing_torch_model), "--source", f"r={reds}", "--source",
               f"b={blues}", "--size", "64", "--max-tokens", "4", "--constrain", "off",
               "--no-warmup", "--json", "--every-frame", env=cli_env)
    assert proc.returncode == 0, proc.stderr
    seen = colours(proc.stdout)
    assert len(seen) == 8, seen
    assert {(s, c) for _, s, c in seen} == {("r", "red"), ("b", "blue")}, seen


class Camera:
    """An MJPEG-over-HTTP camera at 25 frames a second whose colour the test sets."""

    def __init__(self):
        from test_faults import MjpegServer

        self.colour, self.changed_at = "red", 0.0
        port = free_port(kind=1)
        self.server = MjpegServer(port, fps=25, picture=lambda n: picture(self.colour, 96))
        self.server.start()
        self.url = f"http://127.0.0.1:{port}/video.mjpg"

    def show(self, colour: str) -> None:
        self.colour, self.changed_at = colour, time.time()

    def stop(self) -> None:
        self.server.stop()


def test_the_answer_follows_a_camera_within_one_frame(seeing_torch_model, cli_env, tmp_path):
    """The camera turns from red to blue: every frame the model starts on after the
    change (and a camera frame's time) says blue, from the first one on; a stale frame on
    the tick would still say red."""
    camera = Camera()
    metrics = tmp_path / "metrics.jsonl"
    proc = subprocess.Popen(PETE + ["run", "--model", str(seeing_torch_model), "--source",
                                    f"cam={camera.url}", "--size", "64", "--max-tokens", "4",
                                    "--constrain", "off", "--no-warmup", "--json", "--fps", "4",
                                    "--metrics", str(metrics)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env, cwd=ROOT)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        end = time.monotonic() + 120
        while sum('"color"' in l for l in lines) < 3:
            assert proc.poll() is None and time.monotonic() < end, proc.stderr.read()
            time.sleep(0.05)
        camera.show("blue")
        changed = camera.changed_at
        time.sleep(2.0)  # eight ticks
        proc.send_signal(2)
        proc.wait(30)
        reader.join(5)
    finally:
        camera.stop()
        if proc.poll() is None:
            proc.kill()
    started = {r["frame"]: r["started_at"] for r in map(json.loads, metrics.read_text().splitlines())}
    said = {e["frame"]: e["value"]["name"] for e in map(json.loads, lines) if e["key"] == "color"}
    after = [said[f] for f in sorted(said) if started[f] > changed + 0.05]
    before = [said[f] for f in sorted(said) if started[f] < changed]
    assert before and set(before) == {"red"}, (said, started, changed)
    assert len(after) >= 4 and set(after) == {"blue"}, (said, started, changed)


def test_a_recording_keeps_the_answer_each_frame_gave(seeing_torch_model, cli_env, tmp_path):
    folder = stills(tmp_path / "frames", picture("red"), picture("green"), picture("blue"))
    recording = tmp_path / "show.jsonl"
    live = run("--model", str(seeing_torch_model), "--source", str(folder), "--size", "64",
               "--max-tokens", "4", "--constrain", "off", "--no-warmup", "--json",
               "--every-frame", "--record", str(recording), env=cli_env)
    assert live.returncode == 0, live.stderr
    assert [c for _, _, c in colours(live.stdout)] == ["red", "green", "blue"]
    replay = run("--engine", "replay", "--replay", str(recording), "--fps", "0", "--json",
                 env=cli_env)
    assert replay.returncode == 0, replay.stderr
    assert [c for _, _, c in colours(replay.stdout)] == ["red", "green", "blue"]


def test_a_remote_server_answers_from_the_frame_sent(seeing_mlx_model, cli_env, tmp_path):
    """The remote engine against a real mlx_vlm.server serving the mlx test model: each
    request carries its own frame (a dropped or stale image would answer the wrong
    colour)."""
    from support.server import mlx_vlm_server

    folder = stills(tmp_path / "frames", picture("green"), picture("red"), picture("blue"))
    served = tmp_path / "served"
    served.mkdir()
    with mlx_vlm_server(seeing_mlx_model, served, cli_env) as url:
        proc = run("--engine", "remote", "--server", url, "--source", str(folder), "--size", "64",
                   "--max-tokens", "4", "--constrain", "off", "--no-warmup", "--json",
                   "--every-frame", env=cli_env)
    assert proc.returncode == 0, proc.stderr
    assert [c for _, _, c in colours(proc.stdout)] == ["green", "red", "blue"]
