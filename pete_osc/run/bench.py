"""``pete-osc bench``: this machine's speed with the user's own model and engine, as one
block to paste into an issue (or JSON).

The model is loaded once and runs a short show on the frames shipped in the package
(bench_frames/: four stills, no camera and no download needed) or on ``--source``: first
one source, then several at once (``--sources 1,4``), each frame as soon as the engine can
take it. Reported per run: frames per second in all and per source, TTFT, the time of
one decode step (TBT), frame → first event; once: the machine, the engine, the model, the
input size and the peak memory (process, and the GPU's where there is one).
"""

from __future__ import annotations

import math
import platform
import statistics
import sys
import time
from pathlib import Path

from ..records import FrameReport
from .reload import Files
from .show import Show, ShowConfig
from .summary import step_times
from .taps import Tap

FRAMES = Path(__file__).with_name("bench_frames")


class _Reports(Tap):
    """Keeps the frame reports of one run."""

    def __init__(self):
        self.reports: list[FrameReport] = []

    def take(self, record) -> None:
        if isinstance(record, FrameReport):
            self.reports.append(record)


def run_bench(plan, args, load, open_sources, say) -> dict:
    """Load the engine once (``load(show)``), then one short show per count of sources
    (``open_sources(n)``: n named, open sources); the results as a dict."""
    director = plan.director
    engine = None
    runs = []
    for n in args.sources:
        config = ShowConfig(size=plan.size, fps=0, every_frame=True, loop=True,
                            max_frames=args.frames * n, constrain=args.constrain,
                            warm_up=engine is None, reload=False, max_tokens=args.max_tokens,
                            batch=not getattr(args, "no_batch", False))
        show = Show(config, Files.of(director, None), open_sources(n), say)
        tap = _Reports()
        with show:
            show.subscribe(tap)
            if engine is None:
                load(show)
                engine = show.engine
            else:
                show.attach(engine)
            began = time.monotonic()
            show.run()
            took = time.monotonic() - began
            show.engine = None  # kept for the next run; closed at the end
            stopped = show.stop.is_set()
        runs.append(_run(n, tap.reports[n:] or tap.reports, took, show.batched))  # the first round warms
        if stopped:  # Ctrl-C: what was measured so far is the result
            break
    memory = _memory(engine)
    result = {"machine": _machine(), "os": f"{platform.system()} {platform.release()}",
              "python": platform.python_version(), "engine": engine.name,
              "model": engine.model_id, "device": _device(engine), "size": plan.size,
              "frames": args.frames, "runs": runs, **memory}
    engine.close()
    return result


def _run(n: int, reports: list[FrameReport], took: float, batched: bool = False) -> dict:
    answered = [r for r in reports if r.error is None and r.watchdog is None]
    steps = [t for r in answered for t in step_times(r)]
    began = min((r.started_at for r in answered if r.started_at), default=None)
    ended = max((r.started_at + r.token_times[-1] for r in answered
                 if r.started_at and r.token_times), default=None)
    span = (ended - began) if began is not None and ended and ended > began else took
    firsts = [r.first_event_at - r.captured_at for r in answered
              if r.first_event_at is not None]
    per_source: dict[str, int] = {}
    for r in answered:
        per_source[r.source] = per_source.get(r.source, 0) + 1
    return {"sources": n, "together": batched, "frames": len(answered),
            "failed": len(reports) - len(answered),
            "frames_per_s": round(len(answered) / span, 2) if span > 0 else None,
            "per_source": per_source,
            "ttft_ms": _ms([r.ttft for r in answered if r.ttft is not None]),
            "tbt_ms": _ms(steps),
            "tbt_p90_ms": _p90(steps),
            "first_event_ms": _ms(firsts),
            "first_event_p90_ms": _p90(firsts),
            "tokens_per_frame": round(statistics.mean(r.tokens for r in answered), 1)
            if answered else None}


def _ms(values: list[float]) -> float | None:
    return round(statistics.median(values) * 1000, 2) if values else None


def _p90(values: list[float]) -> float | None:
    """The 90th percentile by nearest rank (of 2 values, the larger)."""
    return round(sorted(values)[math.ceil(0.9 * len(values)) - 1] * 1000, 2) if values else None


def cpu_name() -> str:
    """The processor's name as the system says it ("Apple M2 Pro", "AMD EPYC 7B13")."""
    name = platform.processor() or platform.machine()
    if sys.platform == "linux":
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
    elif sys.platform == "darwin":
        import subprocess

        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"],
                                  capture_output=True, text=True, timeout=5).stdout.strip() or name
        except (OSError, subprocess.SubprocessError):
            pass
    return name


def _machine() -> str:
    import os

    return f"{cpu_name()}, {os.cpu_count()} cores, {platform.machine()}"


def _device(engine) -> str:
    device = getattr(engine, "device", None)
    if device is not None and getattr(device, "type", "") == "cuda":
        return engine.torch.cuda.get_device_name(device)
    if device is not None:
        return str(device.type)
    if engine.name == "mlx":
        import mlx.core as mx

        return str(mx.default_device())
    return engine.name


def _memory(engine) -> dict:
    """Peak memory: the process's (RSS), and the GPU's where the engine uses one."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_bytes = peak if sys.platform == "darwin" else peak * 1024  # (macOS: bytes; Linux: kB)
    out = {"peak_rss_mb": round(peak_bytes / 2**20, 1)}
    device = getattr(engine, "device", None)
    if device is not None and getattr(device, "type", "") == "cuda":
        out["peak_gpu_mb"] = round(engine.torch.cuda.max_memory_allocated(device) / 2**20, 1)
    elif engine.name == "mlx":
        import mlx.core as mx

        get_peak = getattr(mx, "get_peak_memory", None) or mx.metal.get_peak_memory
        out["peak_gpu_mb"] = round(get_peak() / 2**20, 1)
    return out


def block(result: dict) -> str:
    """The result as the text block to paste into an issue."""
    lines = ["pete-osc bench",
             f"machine: {result['machine']}; {result['os']}; Python {result['python']}",
             f"engine: {result['engine']} on {result['device']}; model: {result['model']}; "
             f"input {result['size']} px; {result['frames']} frames per source and run",
             "memory: peak " + ", ".join(f"{k.replace('peak_', '').replace('_mb', '')} "
                                         f"{v:g} MB" for k, v in result.items()
                                         if k.startswith("peak_")),
             "| sources | answered | frames/s (all) | per source | TTFT | TBT (one step) | frame → first event "
             "| tokens/frame | failed |",
             "| ---: | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for run in result["runs"]:
        share = ", ".join(f"{name} {count}" for name, count in run["per_source"].items())
        how = "together" if run.get("together") else ("alone" if run["sources"] == 1
                                                       else "in turn")
        lines.append(f"| {run['sources']} | {how} | {_num(run['frames_per_s'])} | {share} | "
                     f"{_num(run['ttft_ms'], ' ms')} | {_num(run['tbt_ms'], ' ms')} "
                     f"(p90 {_num(run.get('tbt_p90_ms'))}) | "
                     f"{_num(run['first_event_ms'], ' ms')} (p90 {_num(run.get('first_event_p90_ms'))}) | "
                     f"{_num(run['tokens_per_frame'])} "
                     f"| {run['failed']} |")
    return "\n".join(lines)


def _num(value, unit: str = "") -> str:
    return "-" if value is None else f"{value:g}{unit}"
