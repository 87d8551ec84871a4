"""What a user meets before and after the live loop: every start-up failure in one line,
fast; the options checked; the summary; stdout closed by its reader; the package's own
DIRECTOR.md and mappings. The CLI runs as a subprocess, as users run it."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.cli import short_clip
from support.peers import free_port

ROOT = Path(__file__).resolve().parent.parent
PETE = [sys.executable, "-m", "pete_osc"]


def pete(*argv, env, cwd=ROOT, timeout=120, **kw):
    return subprocess.run(PETE + list(argv), capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=timeout, **kw)


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("pete-osc: error:")]


# ---- start-up failures: one line each, all at once, fast ---------------------------------

def test_missing_model_offline_is_one_line_within_seconds(shared_video, cli_env, tmp_path):
    """No HF_HUB_OFFLINE, no network, nothing in the cache: the default model is named in
    one line with the fix, without a minute of library retries."""
    env = {k: v for k, v in cli_env.items() if k != "HF_HUB_OFFLINE"}
    env["HF_HOME"] = str(tmp_path / "empty-hf")
    started = time.monotonic()
    proc = pete("run", "--source", str(shared_video), env=env)
    took = time.monotonic() - started
    assert proc.returncode == 2, proc.stderr
    [line] = errors(proc.stderr)
    assert "is not in the Hugging Face cache and could not be downloaded" in line
    assert "pete-osc download" in line and "local folder" in line
    assert "Retrying" not in proc.stderr and "Traceback" not in proc.stderr
    assert took < 5, f"{took:.1f} s to say the model is missing"


def test_missing_model_with_hf_hub_offline(shared_video, cli_env, tmp_path):
    env = dict(cli_env, HF_HOME=str(tmp_path / "empty-hf"))
    proc = pete("run", "--source", str(shared_video), "--engine", "torch", env=env)
    assert proc.returncode == 2
    [line] = errors(proc.stderr)
    assert "HF_HUB_OFFLINE is set" in line and "pete-osc download KamilaMila/FastVLM-0.5B" in line


def test_every_problem_is_named_together(cli_env, tmp_path):
    proc = pete("run", "--source", "7", "--director", "nothere.md", "--mapping", "nosuch",
                "--model", "./no-such-model", env=cli_env, timeout=30)
    assert proc.returncode == 2
    lines = errors(proc.stderr)
    assert len(lines) == 4, proc.stderr
    assert "nothere.md: cannot read the DIRECTOR file" in lines[0]
    assert "--mapping nosuch: no such file, and no shipped mapping" in lines[1]
    assert "--model ./no-such-model: no such folder" in lines[2]
    assert "camera 7 could not be opened" in lines[3]
    # OpenCV's own complaints are not echoed; ours is the one line.
    assert len(proc.stderr.strip().splitlines()) == 4, proc.stderr


def test_a_folder_that_is_no_model_is_named(cli_env, tmp_path, shared_video):
    proc = pete("run", "--source", str(shared_video), "--model", str(tmp_path), env=cli_env)
    assert proc.returncode == 2
    assert "the folder has no config.json" in errors(proc.stderr)[0]


@pytest.mark.parametrize("option, value, message", [
    ("--fps", "-1", "-1 must be 0 or more"),
    ("--max-frames", "-1", "-1 must be 0 or more"),
    ("--max-tokens", "0", "0 must be 1 or more"),
    ("--temperature", "-0.5", "-0.5 must be 0 or more"),
    ("--timeout", "0", "0 must be above 0"),
    ("--replay-speed", "0", "0 must be above 0"),
    ("--size", "big", "'big' is not a whole number"),
    ("--fps", "nan", "'nan' is not a finite number"),
])
def test_number_options_are_checked(option, value, message, cli_env):
    proc = pete("run", option, value, env=cli_env, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"pete-osc: error: argument {option}: {message} (see pete-osc run --help)"]


def test_verbose_after_the_command_and_help_names_the_real_defaults(cli_env):
    proc = pete("run", "-v", "--source", "nothere.mp4", "--engine", "replay", "--replay",
                "DIRECTOR.md", env=cli_env, timeout=30)
    assert proc.returncode == 2
    assert errors(proc.stderr) == [
        "pete-osc: error: nothere.mp4: no such file or folder (--source takes a camera "
        "number, a video file, a folder of images or a URL)"]
    helped = pete("run", "--help", env=cli_env, timeout=30)
    text = " ".join(helped.stdout.split())
    assert "KamilaMila/FastVLM-0.5B for torch" in text and "apple/FastVLM" not in text


# ---- MIDI without its library: OSC goes on ----------------------------------------------

def _libasound() -> Path | None:
    import rtmidi

    out = subprocess.run(["ldd", rtmidi._rtmidi.__file__], capture_output=True, text=True).stdout
    m = re.search(r"libasound\.so\.2 => (\S+)", out)
    return Path(m.group(1)) if m else None


def test_without_alsas_library_midi_is_off_and_osc_goes_on(cli_env, tmp_path):
    """As on a headless server without libasound.so.2: the library is hidden (a private
    mount namespace puts an empty file over it), the shipped default mapping (OSC and
    MIDI) is used, and the OSC still reaches a socket."""
    lib = _libasound()
    if lib is None or shutil.which("unshare") is None:
        pytest.skip("rtmidi is not linked against libasound here, or no unshare")
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare -m needs root (CI runs as root)")
    port = free_port()
    text = (ROOT / "mappings" / "default.yaml").read_text().replace("port: 9000", f"port: {port}")
    mapping = tmp_path / "default.yaml"
    mapping.write_text(text)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", port))
        receiver.settimeout(10)
        script = (f"mount --bind /dev/null {lib} && exec {sys.executable} -m pete_osc send "
                  f"--mapping {mapping}")
        proc = subprocess.run(["unshare", "-m", "sh", "-c", script], input="energy: 0.7\n",
                              capture_output=True, text=True, env=cli_env, cwd=ROOT, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert "MIDI is off, OSC goes on: the MIDI library python-rtmidi cannot load" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert receiver.recv(4096).startswith(b"/pete/energy\0")


# ---- the run's end ---------------------------------------------------------------------

def test_closed_stdout_ends_the_run_quietly(scripted_torch_model, shared_video, cli_env):
    """``pete-osc run | head -2``: the reader leaves, the run ends with exit 0, no frame
    fails and no error is printed."""
    proc = subprocess.Popen(PETE + ["run", "--model", str(scripted_torch_model), "--source",
                                    str(shared_video), "--size", "64", "--fps", "0",
                                    "--max-tokens", "14", "--constrain", "off", "--no-warmup"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env, cwd=ROOT)
    first = [proc.stdout.readline() for _ in range(2)]
    proc.stdout.close()
    rc = proc.wait(120)
    err = proc.stderr.read().decode()
    assert first == [b"--- frame 0\n", b"energy: 0.7\n"]
    assert rc == 0, err
    assert "failed" not in err.replace("failed: 0", "") and "BrokenPipe" not in err, err
    assert "stdout was closed by its reader" in err


def test_summary_counts_from_the_first_frame_and_says_the_source_ended(
        scripted_torch_model, cli_env, tmp_path):
    clip = short_clip(tmp_path)
    metrics = tmp_path / "m.jsonl"
    proc = pete("run", "--model", str(scripted_torch_model), "--source", str(clip), "--size", "64",
                "--fps", "0", "--max-tokens", "6", "--max-frames", "9", "--metrics", str(metrics),
                env=cli_env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"pete-osc: source {clip.stem} ended after 5 frames" in proc.stderr
    summary = next(l for l in proc.stderr.splitlines() if l.startswith("pete-osc: stopped."))
    m = re.search(r"(\d+) frames in ([\d.]+) s from the first frame", summary)
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert m and int(m.group(1)) == len(records) <= 5
    # The seconds are those of the frames, not of loading the model and warming it up.
    frames_took = records[-1]["started_at"] + records[-1]["token_times"][-1] - records[0]["started_at"]
    assert abs(float(m.group(2)) - frames_took) < 0.3, (summary, frames_took)
    for label in ("frames dropped:", "failed:", "tokens:", "events:", "lines rejected:",
                  "median TTFT:", "TBT:", "frame to first event:"):
        assert label in summary, summary


# ---- DIRECTOR.md and mappings travel with the package ----------------------------------

def test_init_copies_the_files_and_a_mapping_is_found_by_name(cli_env, tmp_path):
    proc = pete("init", str(tmp_path / "show"), env=cli_env, timeout=30)
    assert proc.returncode == 0, proc.stderr
    show = tmp_path / "show"
    assert (show / "DIRECTOR.md").read_text() == (ROOT / "DIRECTOR.md").read_text()
    shipped = sorted(p.name for p in (ROOT / "mappings").glob("*.yaml"))
    assert sorted(p.name for p in (show / "mappings").glob("*.yaml")) == shipped
    (show / "DIRECTOR.md").write_text("mine")
    again = pete("init", str(show), env=cli_env, timeout=30)
    assert (show / "DIRECTOR.md").read_text() == "mine" and "kept (already there" in again.stderr
    # In that folder, --mapping default is the copy there, which the user may have edited.
    (show / "mappings" / "default.yaml").write_text("osc: {}\n")
    sent = pete("send", "--mapping", "default", "--director", str(ROOT / "DIRECTOR.md"),
                env=cli_env, cwd=show, input="", timeout=30)
    assert sent.returncode == 2
    assert errors(sent.stderr)[0].startswith("pete-osc: error: mappings/default.yaml:1: no targets")


def test_send_echo_copies_the_text_to_stdout(cli_env, tmp_path):
    text = "--- frame 1\nenergy: 0.7\nmood: tense\n"
    mapping = tmp_path / "osc.yaml"
    mapping.write_text(f"osc:\n  main: {{port: {free_port()}}}\nroutes:\n"
                       "  - {event: energy, address: /e}\n  - {event: mood, address: /m}\n")
    proc = pete("send", "--mapping", str(mapping), "--echo", env=cli_env, input=text, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == text
    assert "2 events, 2 messages sent" in proc.stderr


def test_no_camera_and_no_model_offline_are_named_together(cli_env, tmp_path):
    """No HF_HUB_OFFLINE, no network, an empty cache and a camera that is not there: both
    problems in one go (the model is not skipped because the camera failed)."""
    env = {k: v for k, v in cli_env.items() if k != "HF_HUB_OFFLINE"}
    env["HF_HOME"] = str(tmp_path / "empty-hf")
    proc = pete("run", "--source", "7", "--engine", "torch", env=env)
    assert proc.returncode == 2, proc.stderr
    lines = errors(proc.stderr)
    assert len(lines) == 2, proc.stderr
    assert "camera 7 could not be opened" in lines[0]
    assert ("model KamilaMila/FastVLM-0.5B is not in the Hugging Face cache and could not be "
            "downloaded") in lines[1]
    assert "Traceback" not in proc.stderr
