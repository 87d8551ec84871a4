"""Frame to the first OSC message on the wire, through the CLI a user runs: ``pete-osc
run`` on the shared clip with the torch engine, the default mapping sending to a UDP
socket this script reads, and --metrics giving each frame's capture time and the time its
first message left. One row per --kernels choice and per --fps, in one run.

    python bench/wire.py [--size 128] [--frames 40] [--fps 2,24] [--kernels auto,off] [--qwen] [--write]

FastVLM-0.5B shapes with random weights (Qwen2's tokenizer with --qwen, so answers have
their real token counts), the grammar on (the default), the token limit sized from
DIRECTOR.md. At --fps 24 a frame may wait for the previous answer; at the default 2 it
does not. The first frames (warm-up) are left out.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))  # the random-weight model builders (tests/support)

from common import commit, cpu, report, scratch  # noqa: E402

VIDEO = ROOT.parent / "shared" / "data" / "big_buck_bunny.mp4"


def one_run(model: str, video: Path, size: int, frames: int, fps: float, kernels: str,
            folder: Path) -> dict:
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    port = sink.getsockname()[1]
    received = [0]

    def drain():
        sink.settimeout(0.5)
        while True:
            try:
                sink.recv(65536)
                received[0] += 1
            except socket.timeout:
                if done.is_set():
                    return
            except OSError:
                return

    done = threading.Event()
    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    mapping = folder / f"m-{port}.yaml"
    mapping.write_text(f"osc:\n  main: {{host: 127.0.0.1, port: {port}}}\nroutes:\n"
                       "  - {event: color, address: /pete/color}\n"
                       "  - {event: mood, address: /pete/mood}\n"
                       "  - {event: energy, address: /pete/energy}\n")
    metrics = folder / f"metrics-{fps}-{kernels}.jsonl"
    cmd = [sys.executable, "-m", "pete_osc", "run", "--engine", "torch", "--model", model,
           "--source", str(video), "--size", str(size), "--fps", str(fps), "--mapping",
           str(mapping), "--metrics", str(metrics), "--max-frames", str(frames), "-q",
           "--kernels", kernels]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                              [str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])))
    done.set()
    reader.join(2)
    sink.close()
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    rows = [json.loads(line) for line in metrics.read_text().splitlines()][5:]  # warm-up out
    wire = [r["capture_to_sent"] * 1000 for r in rows if r.get("capture_to_sent") is not None]
    event = [r["capture_to_event"] * 1000 for r in rows if r.get("capture_to_event") is not None]
    ttft = [r["ttft"] * 1000 for r in rows if r.get("ttft") is not None]
    queued = [r["queued"] * 1000 for r in rows if r.get("queued") is not None]
    engine = [(r["first_sent_at"] - r["started_at"]) * 1000 for r in rows
              if r.get("first_sent_at") and r.get("started_at")]
    return dict(wire=statistics.median(wire), wire_p90=sorted(wire)[int(len(wire) * 0.9)],
                event=statistics.median(event), ttft=statistics.median(ttft) if ttft else None,
                queued=statistics.median(queued), engine=statistics.median(engine),
                frames=len(rows), received=received[0],
                stderr=[line for line in proc.stderr.splitlines() if "decode step" in line])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--fps", default="2,24")
    ap.add_argument("--kernels", default="auto,off")
    ap.add_argument("--qwen", action="store_true")
    ap.add_argument("--model", default=None)
    ap.add_argument("--video", type=Path, default=VIDEO)
    ap.add_argument("--out", default=None)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    import torch
    from support.models import FULL, build_fastvlm_torch, qwen_ranks

    folder = scratch("wire-")
    model = args.model or str(build_fastvlm_torch(folder / "model", FULL,
                                                  qwen=qwen_ranks() if args.qwen else None))
    rows = []
    for fps in [float(f) for f in args.fps.split(",")]:
        for kernels in args.kernels.split(","):
            r = one_run(model, args.video, args.size, args.frames, fps, kernels, folder)
            print(f"fps {fps:g} kernels {kernels}: frame -> wire {r['wire']:.1f} ms "
                  f"(p90 {r['wire_p90']:.1f}), {r['frames']} frames, {r['received']} messages "
                  f"{r['stderr']}", file=sys.stderr, flush=True)
            rows.append((fps, kernels, r))
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else cpu()
    lines = [
        "### Frame to the first OSC message on the wire (the CLI, end to end)",
        "",
        f"- machine: {device}",
        f"- date: {datetime.date.today()}, commit {commit()}",
        f"- command: `python bench/wire.py --size {args.size} --frames {args.frames} --fps "
        f"{args.fps} --kernels {args.kernels}{' --qwen' if args.qwen else ''}`",
        f"- `pete-osc run` on the shared clip, torch engine, FastVLM-0.5B shapes with random "
        f"weights, {'Qwen2' if args.qwen else 'the test'} tokenizer, {args.size} px, grammar on, "
        "a mapping sending color, mood and energy to a UDP socket; medians over the frames "
        "after the first five, from --metrics (capture time to the first message's send)",
        "",
        "| --fps | --kernels | frame → first message (median) | p90 | frame → first event "
        "| frame's age when taken | start → first message | TTFT | frames |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ] + [f"| {fps:g} | {k} | {r['wire']:.1f} ms | {r['wire_p90']:.1f} ms | {r['event']:.1f} ms "
         f"| {r['queued']:.1f} ms | {r['engine']:.1f} ms | {r['ttft']:.1f} ms | {r['frames']} |"
         for fps, k, r in rows]
    return report(lines, args.out, args.write)


if __name__ == "__main__":
    sys.exit(main())
