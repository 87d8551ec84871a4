"""Underruns of --play during a long show (issue 30): the torch engine busy on this
machine's cores, the built-in synth playing through a private ``jackd -d dummy`` (48 kHz,
256-frame periods, as a small live setup runs), JACK's own log counting the synth client's
xruns.

    python bench/underruns.py [--minutes 10] [--model FOLDER] [--source FILE]
                              [--mapping play] [--json FILE]

The model is FastVLM-0.5B's shapes with random weights and Qwen2's tokenizer (int8 on the
CPU, as a user's default) unless --model is given; the source is the shared clip, or the
shipped bench frames; the shipped 'play' mapping. Printed: the minutes played, frames
answered, the synth client's xruns (target 0), and any the JACK server had itself.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from common import commit, cpu, report_json, scratch  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--model")
    parser.add_argument("--source")
    parser.add_argument("--mapping", default="play")
    parser.add_argument("--json")
    args = parser.parse_args()
    work = scratch("pete-underruns-")
    model = args.model
    if model is None:
        from support.models import FULL, build_fastvlm_torch, qwen_ranks

        model = str(build_fastvlm_torch(work / "model", FULL, qwen=qwen_ranks()))
    clip = ROOT.parent / "shared" / "data" / "big_buck_bunny.mp4"
    source = args.source or (str(clip) if clip.exists() else str(ROOT / "pete_osc" / "run" /
                                                                 "bench_frames"))
    name = f"pete-underruns-{os.getpid()}"
    env = dict(os.environ, JACK_DEFAULT_SERVER=name, JACK_NO_START_SERVER="1")
    log_path = work / "jackd.log"
    with open(log_path, "w") as log_file:
        server = subprocess.Popen(["jackd", "-n", name, "-d", "dummy", "-r", "48000", "-p",
                                   "256"], stdout=log_file, stderr=subprocess.STDOUT, env=env)
    time.sleep(1.5)
    metrics = work / "metrics.jsonl"
    show = subprocess.Popen([sys.executable, "-m", "pete_osc", "run", "--engine", "torch",
                             "--model", model, "--source", source, "--loop", "--mapping",
                             args.mapping, "--play", "jack", "--metrics", str(metrics)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=work)
    began = None
    try:
        while began is None and show.poll() is None:  # the sound starts with the show
            if metrics.exists() and metrics.stat().st_size:
                began = time.monotonic()
            time.sleep(0.5)
        if began is None:
            raise SystemExit(f"the show ended before it started:\n{show.stderr.read()}")
        ours = "XRun: client = pete-osc"
        before = log_path.read_text().count(ours)
        while time.monotonic() - began < args.minutes * 60 and show.poll() is None:
            time.sleep(1.0)
        played = (time.monotonic() - began) / 60
        text = log_path.read_text()
        xruns = text.count(ours) - before
        other = len(re.findall(r"XRun", text)) - text.count(ours)
    finally:
        show.terminate()
        try:
            _, err = show.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            show.kill()
            _, err = show.communicate()
        server.terminate()
        server.wait(10)
    frames = sum(1 for line in metrics.read_text().splitlines() if '"frame"' in line)
    result = {"machine": cpu(), "commit": commit(), "minutes": round(played, 2),
              "frames": frames, "synth_xruns": xruns, "other_xruns": other,
              "model": args.model or "FastVLM-0.5B shapes, random weights (int8)",
              "source": source, "mapping": args.mapping}
    report_json(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
