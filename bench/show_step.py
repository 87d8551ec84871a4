"""Where the time of a batched show's step goes (issue 25): ``pete-osc bench`` with the
parts of the loop timed.

    python bench/show_step.py [--mask-threads N] [pete-osc bench arguments, e.g.
                              --engine torch --model FOLDER --sources 8 --frames 10]

Runs ``pete-osc bench`` with the given arguments (one row count per ``--sources``) and,
per run, prints the wall time of each part of the show's loop per step: the model call
(on CUDA only its launch: the GPU runs on), choosing the tokens (the grammar masks, the
copy back, which waits for the GPU), the grammar masks alone, each row's answer after its
token (grammar, forced text, text), the frames joining (vision and prefill), the records
(parser, events, taps), the rest (waiting for frames, the watchdog). Nothing is
synchronised that the show does not synchronise itself. ``--mask-threads N``: the
grammar masks on N of llguidance's threads (default 0: one after another, as the engine
does, see pete_osc.engines.constrain.THREADS).
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TIMES: dict[str, float] = defaultdict(float)
CALLS: dict[str, int] = defaultdict(int)
WIDTHS: list[int] = []


def timed(owner, name: str, label: str) -> None:
    """Wrap ``owner.name`` so its wall time adds to TIMES[label]."""
    inner = getattr(owner, name)

    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            TIMES[label] += time.perf_counter() - t0
            CALLS[label] += 1

    setattr(owner, name, wrapper)


def main() -> int:
    from pete_osc import cli
    from pete_osc.engines import batch, decode, torch_rows
    from pete_osc.run import batched, show

    timed(batched.Batched, "_step", "loop step")
    timed(batched.Batched, "_admit", "frames taken")
    timed(batched.Batched, "_watch", "watchdog")
    timed(batch.Batch, "step", "batch step")
    timed(torch_rows.TorchRows, "run", "model call")
    timed(torch_rows.TorchRows, "choose", "choose")
    timed(torch_rows, "fill_rows", "  of which masks")
    from pete_osc.engines import constrain

    if hasattr(constrain, "Masks"):  # masks kept by grammar state (session 14)
        timed(constrain.Masks, "keep", "  masks computed")
        copy = constrain.Masks.copy

        def counted(self, *args):
            found = copy(self, *args)
            CALLS["  masks copied"] += found
            TIMES.setdefault("  masks copied", 0.0)
            return found

        constrain.Masks.copy = counted
    timed(batch.Batch, "_prefill", "frames joining")
    timed(decode.Answer, "choose", "answers")
    timed(show.Show, "_pass", "records out")
    prefill = torch_rows.TorchRows.prefill

    def prefill_widths(self, rows):
        out = prefill(self, rows)
        WIDTHS.append(max(out[2]))
        return out

    torch_rows.TorchRows.prefill = prefill_widths

    runs = []
    run_bench = cli.__dict__.get("run_bench")  # (imported inside cmd_bench)
    from pete_osc.run import bench

    inner = bench.Show.run

    def run_show(self, *args, **kwargs):
        TIMES.clear()
        CALLS.clear()
        WIDTHS.clear()
        t0 = time.perf_counter()
        try:
            return inner(self, *args, **kwargs)
        finally:
            runs.append((len(self.feeds.feeds), time.perf_counter() - t0, dict(TIMES),
                         dict(CALLS), list(WIDTHS)))

    bench.Show.run = run_show
    del run_bench
    args = sys.argv[1:]
    if "--mask-threads" in args:  # (this bench's own: llguidance's threads for the masks)
        at = args.index("--mask-threads")
        from pete_osc.engines import constrain

        constrain.THREADS = int(args[at + 1])
        del args[at:at + 2]
    code = cli.main(["bench", *args])
    for sources, wall, times, calls, widths in runs:
        steps = calls.get("loop step", 0) or 1
        print(f"\n{sources} source(s): {wall:.2f} s, {steps} steps, "
              f"{wall / steps * 1e3:.2f} ms a step in all", file=sys.stderr)
        print("| part | ms a step | calls |\n| --- | ---: | ---: |", file=sys.stderr)
        for label, seconds in times.items():
            print(f"| {label} | {seconds / steps * 1e3:.3f} | {calls[label]} |", file=sys.stderr)
        if widths:
            print(f"prefill widths (positions, the widest row of each call): "
                  f"{sorted(set(widths))}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
