"""CI, before any dev tool is installed: the user's own path, end to end.

Run with the .venv that `./install.sh --no-model` made (the README's first command, no
--dev extras). A dependency that only the dev extras bring fails here:

1. `pete-osc run --play` as the README shows it, on the shared clip, with the default
   engine and the default --constrain, on a tiny model built here (no weights can be
   downloaded in CI), playing into a WAV file (CI has no sound card): events come out,
   decoding is constrained, the WAV has sound, stderr has no traceback or warning.
2. The wheel, built from the clone and installed in a fresh environment outside it:
   `pete-osc parse` and `pete-osc send --mapping default` work there with the DIRECTOR.md
   and mapping the wheel carries.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the random-weight model builder (tests/support)
VENV = ROOT / ".venv" / "bin"
CLIP = ROOT.parent / "shared" / "data" / "big_buck_bunny.mp4"
# Library noise that means a deprecated call or a broken install, not our own lines.
NOISE = re.compile(r"Traceback|Warning:|warnings.warn|deprecated", re.IGNORECASE)


def check(ok: bool, what: str, detail: str = "") -> None:
    print(f"user path: {'ok  ' if ok else 'FAIL'} {what}", flush=True)
    if not ok:
        if detail:
            print(detail, flush=True)
        sys.exit(1)


def clip(folder: Path) -> Path:
    """The shared clip, or (a clone without ../shared) a short one written here."""
    if CLIP.is_file():
        return CLIP
    import cv2
    import numpy as np

    path = folder / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 24, (320, 240))
    for i in range(96):
        writer.write(np.full((240, 320, 3), (i * 7) % 255, np.uint8))
    writer.release()
    return path


def run_main_job(work: Path) -> Path:
    from support.models import build_fastvlm_torch

    model = build_fastvlm_torch(work / "model", script="energy: 0.7\n")
    metrics = work / "metrics.jsonl"
    sound = work / "show.wav"  # --play: the README's first command plays (here into a file)
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run([str(VENV / "pete-osc"), "run", "--model", str(model),
                           "--source", str(clip(work)), "--size", "64", "--max-frames", "3",
                           "--metrics", str(metrics), "--play", str(sound)],
                          capture_output=True, text=True, env=env, timeout=600)
    check(proc.returncode == 0, "pete-osc run exits 0", proc.stderr)
    check("decoding constrained to the DIRECTOR.md schema" in proc.stderr,
          "decoding is constrained by default", proc.stderr)
    check("token limit" in proc.stderr and "the longest complete answer" in proc.stderr,
          "the token limit is sized from DIRECTOR.md's schema", proc.stderr)
    check(not NOISE.search(proc.stderr), "no traceback or library warning on stderr", proc.stderr)
    parsed = subprocess.run([str(VENV / "pete-osc"), "parse"], input=proc.stdout,
                            capture_output=True, text=True, timeout=120)
    events = [json.loads(line) for line in parsed.stdout.splitlines()]
    from pete_osc.director.schema import load_director

    keys = list(load_director(ROOT / "DIRECTOR.md").model_keys)
    # Constrained, every frame's answer is complete: each key once, in DIRECTOR.md's order.
    check([e["key"] for e in events] == keys * 3,
          f"the token stream on stdout parses into three complete answers ({len(events)} events)",
          proc.stdout)
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    check(len(records) == 3 and all(r["events"] == len(keys) and r["finish"] == "stop"
                                    for r in records),
          "three frames, each a complete answer that ended by itself, in --metrics",
          metrics.read_text())
    import wave

    import numpy as np

    with wave.open(str(sound)) as f:
        pcm = np.frombuffer(f.readframes(f.getnframes()), "<i2")
    check(len(pcm) > 0 and np.abs(pcm).max() > 300,
          f"--play wrote the built-in synth's sound into a WAV ({len(pcm) / 96000:.1f} s)",
          proc.stderr)
    return model


def install_wheel(work: Path) -> Path:
    wheels = work / "wheels"
    subprocess.run([str(VENV / "python"), "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(wheels), str(ROOT)], check=True, timeout=600)
    wheel = next(wheels.glob("pete_osc-*.whl"))
    env_dir = work / "fresh-env"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=300)
    subprocess.run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
                   check=True, timeout=900)
    check(True, f"{wheel.name} installs in a fresh environment")
    return env_dir / "bin" / "pete-osc"


def run_wheel(pete: Path, work: Path) -> None:
    elsewhere = work / "elsewhere"  # no DIRECTOR.md, no mappings/ here: the wheel's own
    elsewhere.mkdir()
    parsed = subprocess.run([str(pete), "parse"], input="energy: 0.7\nmood: tense\n",
                            capture_output=True, text=True, cwd=elsewhere, timeout=120)
    keys = [json.loads(line)["key"] for line in parsed.stdout.splitlines()]
    check(parsed.returncode == 0 and keys == ["energy", "mood"],
          "the installed wheel parses with its own DIRECTOR.md", parsed.stderr)
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        receiver.bind(("127.0.0.1", 9000))  # the default mapping's target
    except OSError:
        receiver.close()
        receiver = None
    sent = subprocess.run([str(pete), "send", "--mapping", "default"], input="energy: 0.7\n",
                          capture_output=True, text=True, cwd=elsewhere, timeout=120)
    check(sent.returncode == 0 and "1 events" in sent.stderr,
          "the installed wheel sends through its shipped default mapping", sent.stderr)
    if receiver is not None:
        receiver.settimeout(5)
        packet = receiver.recv(4096)
        receiver.close()
        check(packet.startswith(b"/pete/energy\0"), "a UDP receiver on port 9000 got /pete/energy",
              repr(packet))


def bench_from_wheel(work: Path, model: Path) -> None:
    """``pete-osc bench`` from the wheel's own files (its shipped frames), outside the
    clone, on the tiny model with this venv's torch (the fresh environment has no engine)."""
    target = work / "wheel-only"
    wheel = next((work / "wheels").glob("pete_osc-*.whl"))
    subprocess.run([str(VENV / "python"), "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(target), str(wheel)], check=True, timeout=600)
    env = dict(os.environ, PYTHONPATH=str(target), HF_HUB_OFFLINE="1")
    where = subprocess.run([str(VENV / "python"), "-c", "import pete_osc; print(pete_osc.__file__)"],
                           capture_output=True, text=True, env=env, cwd=work / "elsewhere")
    check(where.stdout.startswith(str(target)), "the wheel's files are the ones run", where.stdout)
    bench = subprocess.run([str(VENV / "python"), "-m", "pete_osc", "bench", "--engine", "torch",
                            "--model", str(model), "--size", "64", "--frames", "2", "--sources",
                            "1,2", "--json"], capture_output=True, text=True, env=env,
                           cwd=work / "elsewhere", timeout=600)
    check(bench.returncode == 0, "pete-osc bench runs from the wheel", bench.stderr)
    result = json.loads(bench.stdout)
    shares = [run["per_source"] for run in result["runs"]]
    check(shares == [{"s1": 1}, {"s1": 1, "s2": 1}] and all(
        run["frames_per_s"] and run["tbt_ms"] for run in result["runs"]),
        "pete-osc bench measures 1 and 2 sources on the shipped frames", bench.stdout)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="pete-user-path-") as tmp:
        work = Path(tmp)
        model = run_main_job(work)
        run_wheel(install_wheel(work), work)
        bench_from_wheel(work, model)
    print("user path: all checks passed", flush=True)


if __name__ == "__main__":
    main()
