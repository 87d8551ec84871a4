"""Several sources on one engine, and what a DIRECTOR.md reload costs, through the show.

    python bench/sources.py [--engine torch] [--size 128] [--frames 12] [--tokens 24]
                            [--model FOLDER] [--out FILE.md] [--write]

One engine is loaded once (FastVLM-0.5B shapes with random weights unless --model is
given); then, in the same process, the show runs ``--frames`` frames from one source
(the shared clip, looping), then the same number from two sources (the clip twice,
named a and b), as fast as the engine goes (--fps 0). Reported per run: total frames per
second, each source's share of the frames, and frame -> first event per source. Then a
reload: a changed DIRECTOR prompt is made current (its prefix prefilled), three times
with new text and once back to a prompt already seen (kept in the engine's cache).
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))  # the random-weight model builders (tests/support)

from common import FrameReports, commit, cpu, report, scratch  # noqa: E402

from pete_osc.capture.sources import open_source  # noqa: E402
from pete_osc.director.schema import load_director  # noqa: E402
from pete_osc.engines import EngineOptions, Prompt  # noqa: E402
from pete_osc.run.reload import Files  # noqa: E402
from pete_osc.run.show import Show, ShowConfig  # noqa: E402

VIDEO = ROOT.parent / "shared" / "data" / "big_buck_bunny.mp4"


def run_show(engine, files: Files, names: list[str], config: ShowConfig, video: Path) -> dict:
    sources = [(name, open_source(str(video), 320, 240)) for name in names]
    show = Show(config, files, sources)
    reports = FrameReports()
    with show:
        show.subscribe(reports)
        show.attach(engine)
        t0 = time.perf_counter()
        show.run()
        took = time.perf_counter() - t0
        show.engine = None  # the engine stays loaded for the next run (close skips it)
    rs = reports.reports
    out = {"fps": len(rs) / took, "frames": len(rs), "sources": {}}
    for name in names:
        mine = [r for r in rs if r.source == name]
        to_event = [r.first_event_at - r.captured_at for r in mine if r.first_event_at]
        out["sources"][name] = (len(mine) / len(rs),
                                statistics.median(to_event) if to_event else None)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engine", default="torch", choices=("torch", "mlx"))
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--tokens", type=int, default=24)
    ap.add_argument("--model", default=None)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--video", type=Path, default=VIDEO, help="the clip (default ../shared's)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    if not args.video.is_file():
        print(f"{args.video} is absent", file=sys.stderr)
        return 1
    from support.models import FULL, build_fastvlm_mlx, build_fastvlm_torch

    from pete_osc.engines import open_engine

    model = args.model
    if model is None:
        build = build_fastvlm_torch if args.engine == "torch" else build_fastvlm_mlx
        t0 = time.perf_counter()
        model = str(build(scratch("fastvlm-full-"), FULL))
        print(f"built random FastVLM-0.5B in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    director = load_director(ROOT / "DIRECTOR.md")
    files = Files.of(director, None)
    config = ShowConfig(size=args.size, max_tokens=args.tokens, fps=0, loop=True,
                        max_frames=args.frames, reload=False, warm_up=False)
    from pete_osc.engines import GenerationSettings

    engine = open_engine(args.engine, model, director.prompt, director.instruction,
                         GenerationSettings(args.tokens, 0.0, args.size),
                         EngineOptions(compile=not args.no_compile, path=model,
                                       progress=lambda m: print(m, file=sys.stderr)))
    engine.constrain(director)
    print(f"warm-up {engine.warm_up():.1f} s", file=sys.stderr)
    one = run_show(engine, files, ["a"], config, args.video)
    two = run_show(engine, files, ["a", "b"], config, args.video)
    print(one, two, file=sys.stderr)

    # A reload: new DIRECTOR text (its prefix prefilled), then back to a kept prompt.
    import numpy as np


    def one_frame(prompt=None) -> float:
        image = np.zeros((args.size, args.size, 3), np.uint8)
        t0 = time.perf_counter()
        for _ in engine.stream(image, prompt):
            pass
        return time.perf_counter() - t0

    steady = statistics.median(one_frame() for _ in range(3))
    fresh, first = [], []
    for i in range(3):
        changed = Prompt(director.prompt + f"\nThe stage is lit in warm colours ({i}).",
                         director.instruction)
        fresh.append(engine.use_prompt(changed))
        first.append(one_frame(changed))  # the first frame with it (any recompilation too)
    back = engine.use_prompt(Prompt.of(director))
    prefix = getattr(engine, "prefix_len", None)
    engine.close()

    import torch

    device = (torch.cuda.get_device_name(0) if args.engine == "torch" and torch.cuda.is_available()
              else cpu())
    ratio = two["fps"] / one["fps"]
    rows = [
        f"| 1 (a) | {one['frames']} | {one['fps']:.2f} | 100% | a 100% | "
        f"{_ms(one['sources']['a'][1])} |",
        f"| 2 (a, b) | {two['frames']} | {two['fps']:.2f} | {ratio:.0%} | "
        + ", ".join(f"{n} {s[0]:.0%}" for n, s in two["sources"].items()) + " | "
        + ", ".join(f"{n} {_ms(s[1])}" for n, s in two["sources"].items()) + " |",
    ]
    lines = [
        "### Several sources on one engine, and a DIRECTOR.md reload",
        "",
        f"- machine: {device}; host {cpu()}",
        f"- date: {datetime.date.today()}, commit {commit()}",
        f"- command: `python bench/sources.py --engine {args.engine} --size {args.size} "
        f"--frames {args.frames} --tokens {args.tokens}"
        f"{' --no-compile' if args.no_compile else ''}`",
        f"- {args.engine} engine, FastVLM-0.5B shapes with random weights, constrained to "
        f"DIRECTOR.md, {args.size} px, at most {args.tokens} tokens per frame, greedy, "
        "--fps 0 (as fast as the engine goes); one show per row, same engine, same process; "
        "the sources are the shared clip playing in real time (twice for two sources).",
        "",
        "| sources | frames | frames/s (all) | vs one source | share of frames | frame -> first event (median) |",
        "| --- | ---: | ---: | ---: | --- | --- |",
        *rows,
        "",
        f"Reload of DIRECTOR.md (a new prompt made current at a frame boundary; prefix "
        f"{prefix} positions): new text {', '.join(f'{s * 1000:.0f}' for s in fresh)} ms; "
        f"back to a prompt already seen: {back * 1000:.1f} ms"
        + f"; the first frame after each new prompt took "
        f"{', '.join(f'{s * 1000:.0f}' for s in first)} ms against {steady * 1000:.0f} ms "
        "for a frame before the reload"
        + (" (the static CUDA-graph cache keeps one prompt: prefilled again)"
           if args.engine == "torch" and getattr(engine, "static", False) else " (kept)") + ".",
    ]
    return report(lines, args.out, args.write)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


if __name__ == "__main__":
    sys.exit(main())
