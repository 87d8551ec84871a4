"""Per-frame TTFT and TBT of the mlx engine at several input sizes, through pete-osc's own
frame loop (capture -> square -> engine -> parser), on real footage.

    .venv/bin/python bench/frame_latency.py                 # tiny random FastVLM, 64/128/256 px
    .venv/bin/python bench/frame_latency.py --model mlx-community/FastVLM-0.5B-bf16
    .venv/bin/python bench/frame_latency.py --full          # FastVLM-0.5B shapes, random weights

Prints a Markdown table and, with --write, appends it to docs/benchmarks.md with the
machine, the date and the command. Runs unchanged on an Apple Silicon Mac.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))  # the random-weight model builders (tests/support)

from common import commit, cpu, report  # noqa: E402

from pete_osc.capture.latest import EveryFrame
from pete_osc.capture.sources import open_source  # noqa: E402
from pete_osc.director.schema import load_director  # noqa: E402
from pete_osc.engines import GenerationSettings  # noqa: E402
from pete_osc.engines.mlx_engine import MlxEngine  # noqa: E402
from pete_osc.records import FrameReport  # noqa: E402
from pete_osc.run.frame import frame_records  # noqa: E402

VIDEO = ROOT.parent / "shared" / "data" / "big_buck_bunny.mp4"


def machine() -> str:
    import mlx.core as mx

    return f"{cpu()}, MLX {mx.__version__} on {mx.default_device()}"


def measure(model: str, size: int, frames: int, max_tokens: int, director,
            mode: str = "cached") -> dict:
    import mlx.core as mx

    engine = MlxEngine(model, director.prompt, director.instruction,
                       GenerationSettings(max_tokens=max_tokens, size=size),
                       prefix_cache=mode == "cached")
    engine.warm_up()
    _reset_peak(mx)
    began = time.perf_counter()
    source = open_source(str(VIDEO) if VIDEO.is_file() else "0", 320, 240)
    ttft, tbt, prompt_len = [], [], None
    feed = EveryFrame(source)
    for i, frame in enumerate(feed):
        if i % 24:  # one frame a second of footage: different pictures, same shapes
            continue
        report = [r for r in frame_records(engine, director, frame, size)
                  if isinstance(r, FrameReport)][0]
        ttft.append(report.ttft)
        tbt.extend(report.tbt)
        prompt_len = report.prompt_len
        if len(ttft) >= frames:
            break
    feed.close()
    fps = len(ttft) / (time.perf_counter() - began)
    engine.close()
    tbt_sorted = sorted(tbt)
    return {
        "mode": mode,
        "fps": fps,
        "peak": _peak(mx),
        "size": size,
        "image_tokens": (size // 64) ** 2,
        "prompt_len": prompt_len,
        "ttft": statistics.median(ttft),
        "tbt": statistics.median(tbt),
        "tbt_p90": tbt_sorted[int(0.9 * (len(tbt_sorted) - 1))],
        "frames": len(ttft),
    }


def _reset_peak(mx) -> None:
    reset = getattr(mx, "reset_peak_memory", None) or getattr(getattr(mx, "metal", None), "reset_peak_memory", None)
    if reset:
        reset()


def _peak(mx) -> str:
    peak = getattr(mx, "get_peak_memory", None) or getattr(getattr(mx, "metal", None), "get_peak_memory", None)
    return f"{peak() / 2**30:.2f} GiB" if peak else "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="a model id or folder (default: build a random FastVLM)")
    ap.add_argument("--full", action="store_true", help="random weights at FastVLM-0.5B size")
    ap.add_argument("--sizes", default="64,128,256")
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=50)
    ap.add_argument("--modes", default="cached,noprefix",
                    help="cached: the DIRECTOR prefix's KV cache reused (pete-osc's path); "
                         "noprefix: mlx_vlm.stream_generate on the whole prompt every frame")
    ap.add_argument("--write", action="store_true", help="append the table to docs/benchmarks.md")
    args = ap.parse_args()
    director = load_director(ROOT / "DIRECTOR.md")
    with tempfile.TemporaryDirectory() as tmp:
        model, label = args.model, args.model
        if model is None:
            from support.models import FULL, TINY, build_fastvlm_mlx

            shape = FULL if args.full else TINY
            model = str(build_fastvlm_mlx(Path(tmp) / "fastvlm", shape))
            label = ("random FastVLM-0.5B shapes (Qwen2-0.5B, 24 layers)" if args.full
                     else "tiny random FastVLM (full FastViTHD, 2-layer 64-wide LM)")
        rows = [measure(model, int(s), args.frames, args.max_tokens, director, mode)
                for mode in args.modes.split(",") for s in args.sizes.split(",")]
    command = "python " + " ".join([f"bench/{Path(__file__).name}"] + sys.argv[1:])
    lines = [
        f"### mlx engine, {label}",
        "",
        f"- machine: {machine()}",
        f"- date: {datetime.date.today().isoformat()}, commit {commit()}",
        f"- command: `{command}`",
        f"- {args.frames} frames per size from big_buck_bunny.mp4, DIRECTOR.md prompt, "
        f"{args.max_tokens} tokens per frame, greedy, after one warm-up frame. cached: the "
        "DIRECTOR prefix's KV cache reused (pete-osc's path); noprefix: mlx_vlm.stream_generate "
        "on the whole prompt every frame (the frame still at the chosen size)",
        "",
        "| mode | px | image tokens | prompt positions | TTFT median | TBT median | TBT p90 | frames/s | peak memory |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['size']} | {r['image_tokens']} | {r['prompt_len']} | "
                     f"{r['ttft'] * 1000:.0f} ms | {r['tbt'] * 1000:.1f} ms | "
                     f"{r['tbt_p90'] * 1000:.1f} ms | {r['fps']:.2f} | {r['peak']} |")
    return report(lines, write=args.write)


if __name__ == "__main__":
    sys.exit(main())
