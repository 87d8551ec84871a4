"""What the monitor page costs the show: TBT and frame -> first event with the page open in
a browser (headless Chromium) and without, in one run; and the page's picture.

    python bench/monitor.py [--blocks 48] [--block 3] [--size 128] [--tokens 16]
                            [--client chromium|sse] [--nice N] [--model FOLDER]
                            [--screenshot docs/monitor.png] [--write]

One torch engine (FastVLM-0.5B shapes with random weights unless --model), constrained
to DIRECTOR.md, two sources (the shared clip twice), --fps 0, ``--monitor`` serving all
along. The show is cut into blocks of ``--block`` frames; the page is open in the browser
during blocks 1, 4, 5, 8, 9, ... and the browser shows about:blank during the others (open,
closed, closed, open: a drift of the machine's speed weighs on both). A block's first
frame is left out (the page is loading or closing meanwhile). This machine's speed drifts
by 10-30% over tens of seconds, so the conditions alternate every few frames, not in long
rounds; each open block is compared with the closed block beside it, and the difference
comes with a 95% interval (the pairs resampled).

While open, the page must show both sources' frames changing, and the benchmark reads how
far behind the show it was (each update's age when the page has drawn it) and how much
CPU the browser took. ``--client sse`` puts a Python reader in the browser's place (the
event stream read, each new frame fetched): pete-osc's side of the page alone.
Needs selenium, chromium and chromedriver (install.sh --dev).
"""

from __future__ import annotations

import argparse
import datetime
import os
import queue
import random
import shutil
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))  # the random-weight model builders (tests/support)

from common import commit, cpu, report, scratch  # noqa: E402

from pete_osc.capture.sources import open_source  # noqa: E402
from pete_osc.director.schema import load_director  # noqa: E402
from pete_osc.engines import EngineOptions, GenerationSettings, open_engine  # noqa: E402
from pete_osc.mapping.load import parse_mapping  # noqa: E402
from pete_osc.records import FrameReport  # noqa: E402
from pete_osc.run.monitor import Monitor  # noqa: E402
from pete_osc.run.reload import Files  # noqa: E402
from pete_osc.run.show import Show, ShowConfig  # noqa: E402

VIDEO = ROOT.parent / "shared" / "data" / "big_buck_bunny.mp4"
SOURCES = ("stage", "crowd")


def browser(cores: set[int] | None = None, nice: int = 0):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if cores or nice:
        # The browser on cores of its own, or at a lower priority
        wrapper = scratch("placed-chromium-") / "chromium"
        place = f"taskset -c {','.join(map(str, sorted(cores)))} " if cores else ""
        wrapper.write_text(f"#!/bin/sh\nexec {place}nice -n {nice} {binary} \"$@\"\n")
        wrapper.chmod(0o755)
        binary = str(wrapper)
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,900"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


# Run in the page when it opens: it notes each frame it shows and each update's age once
# drawn; read when the page closes (a WebDriver query per frame would make the browser
# work for the benchmark).
WATCH = """
window.__seen = {};
new MutationObserver((changes) => {
  for (const c of changes) {
    const t = c.target;
    if (t.id && t.id.startsWith("frame-")) (window.__seen[t.id] ||= new Set()).add(t.dataset.frame);
  }
}).observe(document.body, {subtree: true, attributes: true, attributeFilter: ["data-frame"]});
window.__lags = [];
events.addEventListener("message", (m) => {
  const sent = JSON.parse(m.data).now;
  setTimeout(() => window.__lags.push(Date.now() / 1000 - sent), 0);
});
"""
READ = ("return [Object.fromEntries(Object.entries(window.__seen || {}).map(([k, v]) => "
        "[k, [...v]])), window.__lags || []]")


class Chromium:
    """The page in headless Chromium, opened and closed (about:blank) on demand."""

    def __init__(self, url: str, cores: set[int] | None, nice: int):
        self.url, self.driver = url, browser(cores, nice)
        self.seen: dict[str, set] = {k: set() for k in SOURCES}
        self.lags: list[float] = []

    def open(self):
        self.driver.get(self.url)
        self.driver.execute_script(WATCH)

    def close(self):
        seen, lags = self.driver.execute_script(READ)
        for k in SOURCES:
            self.seen[k].update(seen.get(f"frame-{k}", []))
        self.lags += lags
        self.driver.get("about:blank")

    def screenshot(self, path: Path):
        self.driver.save_screenshot(str(path))

    def quit(self):
        self.driver.quit()


class SseClient:
    """The page's traffic without a browser: the event stream read, and each new frame's
    JPEG fetched, as the page does (to tell the server's cost from the browser's)."""

    def __init__(self, url: str, cores: set[int] | None = None, nice: int = 0):
        self.base = url.split("?")[0].rstrip("/") + "/"
        self.seen: dict[str, set] = {k: set() for k in SOURCES}
        self.lags: list[float] = []
        self._stop = threading.Event()
        self._thread = None

    def open(self):
        self._stop.clear()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        import json
        import urllib.request

        with urllib.request.urlopen(self.base + "events", timeout=30) as stream:
            for line in stream:
                if self._stop.is_set():
                    return
                if not line.startswith(b"data: "):
                    continue
                data = json.loads(line[6:])
                for name, source in data.get("sources", {}).items():
                    shown = self.seen.setdefault(name, set())
                    if source["frame"] not in shown:
                        shown.add(source["frame"])
                        urllib.request.urlopen(f"{self.base}frame/{name}", timeout=5).read()
                self.lags.append(time.time() - data["now"])

    def close(self):
        self._stop.set()
        self._thread.join(5)

    def screenshot(self, path: Path):
        pass

    def quit(self):
        pass


def browser_cpu() -> float:
    """CPU seconds used so far by every Chromium process on this machine (user + system)."""
    total, tick = 0, os.sysconf("SC_CLK_TCK")
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if "chrom" in stat[stat.index("(") + 1:stat.rindex(")")].lower():
            fields = stat[stat.rindex(")") + 2:].split()
            total += int(fields[11]) + int(fields[12])
    return total / tick


def is_open(block: int) -> bool:
    return block % 4 in (0, 3)


class Blocks:
    """A tap: each frame report with its block; at a block's end, the switch is asked of
    the benchmark's own thread (the show's thread never waits for the browser)."""

    name = "the benchmark's blocks"

    def __init__(self, size: int, switches: queue.Queue):
        self.size, self.switches = size, switches
        self.frames: list[tuple[int, int, FrameReport]] = []
        self._count = 0

    def take(self, record) -> None:
        if not isinstance(record, FrameReport):
            return
        block, place = divmod(self._count, self.size)
        self.frames.append((block, place, record))
        self._count += 1
        if place == self.size - 1 and is_open(block) != is_open(block + 1):
            self.switches.put(is_open(block + 1))

    def close(self) -> None:
        self.switches.put(None)


def switcher(client, switches: queue.Queue, usage: dict) -> None:
    """Opens and closes the page as the blocks ask; counts the browser's CPU per state."""
    state, since, cpu0 = True, time.monotonic(), browser_cpu()
    while True:
        wanted = switches.get()
        now, cpu1 = time.monotonic(), browser_cpu()
        usage[state][0] += now - since
        usage[state][1] += cpu1 - cpu0
        if wanted is None:
            return
        (client.open if wanted else client.close)()
        state, since, cpu0 = wanted, time.monotonic(), browser_cpu()


def steps(frames) -> list[float]:
    # time per decode step: forced text arrives with the token before it (gap 0)
    return [t for r in frames for t in r.tbt if t > 0]


def to_event(frames) -> list[float]:
    return [r.first_event_at - r.captured_at for r in frames if r.first_event_at]


def start_to_event(frames) -> list[float]:
    """The engine's part of frame -> first event (without the frame's wait to be taken)."""
    return [r.first_event_at - r.started_at for r in frames if r.first_event_at and r.started_at]


def difference(kept: dict[int, list], measure, rng: random.Random, draws: int = 4000):
    """The page's effect on a measure, relative, with its 95% interval.

    Each open block is paired with the closed block beside it in its open-closed-closed-
    open group of four (blocks 0 and 1, 3 and 2, 4 and 5, ...): half the pairs run open
    first and half closed first, seconds apart, so the machine's drift cancels. The effect
    is the geometric mean of the pairs' ratios of medians, less 1; the interval comes from
    resampling the pairs."""
    import math

    logs = []
    for block in kept:
        if not is_open(block):
            continue
        other = block + 1 if block % 4 == 0 else block - 1
        a, b = measure(kept[block]), measure(kept.get(other, []))
        if a and b:
            logs.append(math.log(statistics.median(a) / statistics.median(b)))
    if not logs:
        return float("nan"), float("nan"), float("nan")
    mean = lambda xs: math.exp(sum(xs) / len(xs)) - 1  # noqa: E731
    found = mean(logs)
    resampled = sorted(mean(rng.choices(logs, k=len(logs))) for _ in range(draws))
    return found, resampled[int(0.025 * draws)], resampled[int(0.975 * draws) - 1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", type=int, default=48, help="a multiple of 4")
    ap.add_argument("--block", type=int, default=3, help="frames per block (the first left out)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--model", default=None)
    ap.add_argument("--video", type=Path, default=VIDEO)
    ap.add_argument("--screenshot", type=Path, default=None)
    ap.add_argument("--client", default="chromium", choices=("chromium", "sse"),
                    help="what reads the page: headless Chromium, or a Python client that "
                         "reads the event stream and the frames (the server's cost alone)")
    ap.add_argument("--nice", type=int, default=0,
                    help="start the browser at this niceness (19: the lowest priority)")
    ap.add_argument("--split", action="store_true",
                    help="pete-osc and the model (one thread) on the first core, the browser "
                         "on the others: as on a computer with cores to spare")
    ap.add_argument("--page", type=Path, default=None,
                    help="serve this file as the page instead of pete-osc's (to try a variant)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    if args.blocks % 4 or args.block < 2:
        ap.error("--blocks must be a multiple of 4 and --block at least 2")
    import torch

    machine = torch.cuda.get_device_name(0) if torch.cuda.is_available() else cpu()
    browser_cores = None
    if args.split:
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < 2:
            ap.error("--split needs at least 2 cores")
        os.sched_setaffinity(0, {cores[0]})
        torch.set_num_threads(1)
        browser_cores = set(cores[1:])
    if args.page is not None:
        import pete_osc.run.monitor

        pete_osc.run.monitor.PAGE = args.page
    from support.models import FULL, build_fastvlm_torch

    model = args.model
    if model is None:
        model = str(build_fastvlm_torch(scratch("fastvlm-full-"), FULL))
    director = load_director(ROOT / "DIRECTOR.md")
    text = "osc:\n  main: {port: 9}\nroutes:\n" + "".join(
        f"  - {{event: {key}, address: '/pete/{{source}}/{key}'}}\n" for key in director.keys)
    mapping = parse_mapping(text, director, Path("bench-monitor.yaml"))
    files = Files(director, mapping, "", text)
    config = ShowConfig(size=args.size, max_tokens=args.tokens, fps=0, loop=True,
                        max_frames=args.blocks * args.block, reload=False, warm_up=False)
    engine = open_engine("torch", model, director.prompt, director.instruction,
                         GenerationSettings(args.tokens, 0.0, args.size),
                         EngineOptions(path=model))
    engine.constrain(director)
    engine.warm_up()

    sources = [(name, open_source(str(args.video), 320, 240)) for name in SOURCES]
    show = Show(config, files, sources)
    switches: queue.Queue = queue.Queue()
    blocks = Blocks(args.block, switches)
    usage = {True: [0.0, 0.0], False: [0.0, 0.0]}  # state -> [seconds, browser CPU seconds]
    with show:
        monitor = Monitor(_free_port(), activity=show.sender.activity,
                          learn=show.sender.learn, routes=show.sender.routes,
                          files=show.files.paths()).start()
        show.subscribe(monitor)
        show.subscribe(blocks)
        client = (Chromium if args.client == "chromium" else SseClient)(monitor.url, browser_cores, args.nice)
        client.open()  # block 0 is open
        time.sleep(1.0)
        thread = threading.Thread(target=switcher, args=(client, switches, usage),
                                  name="page switcher")
        thread.start()
        show.attach(engine)
        try:
            show.run()
        finally:
            switches.put(None)
            thread.join()
            if args.screenshot is not None:
                client.screenshot(args.screenshot)  # the last block is open
            client.close()
            client.quit()
            monitor.close()
    engine.close()

    by_block: dict[bool, list] = {True: [], False: []}
    kept: dict[int, list] = {}
    for block, place, r in blocks.frames:
        if place > 0:
            kept.setdefault(block, []).append(r)
    for block, frames in sorted(kept.items()):
        by_block[is_open(block)].append(frames)
    rng = random.Random(0)
    d_tbt = difference(kept, steps, rng)
    d_event = difference(kept, to_event, rng)
    d_start = difference(kept, start_to_event, rng)

    def med(state, measure):
        return statistics.median(measure([r for b in by_block[state] for r in b]))

    seconds_open = usage[True][0]
    reader = ("headless Chromium" + (f" (nice {args.nice})" if args.nice else "")
              if args.client == "chromium" else "a Python client")
    rows = []
    for state in (False, True):
        frames = sum(len(b) for b in by_block[state])
        share = (f"{usage[state][1] / usage[state][0]:.1%}"
                 if args.client == "chromium" and usage[state][0] else "-")
        name = ("open, " + reader + " on it" if state else
                "not open" + (" (about:blank)" if args.client == "chromium" else ""))
        if state and args.page:
            name += f" ({args.page.name} in place of the page)"
        rows.append(f"| {name} | {len(by_block[state])} | {frames} | "
                    f"{med(state, steps) * 1000:.1f} ms | {med(state, to_event) * 1000:.0f} ms | "
                    f"{med(state, start_to_event) * 1000:.0f} ms | {share} |")
    lags = sorted(client.lags)
    lag = (f"{statistics.median(lags) * 1000:.0f} ms median, {lags[int(0.9 * len(lags))] * 1000:.0f} ms p90"
           if lags else "-")
    lines = [
        "### The monitor page open against not open",
        "",
        f"- machine: {machine}; the "
        + ("browser" if args.client == "chromium" else "reader") + " on the same machine"
        + (f", pete-osc and the model (1 thread) on core {min(os.sched_getaffinity(0))}, the "
           f"browser on core(s) {','.join(map(str, sorted(browser_cores)))}" if args.split else
           ", every process on every core"),
        f"- date: {datetime.date.today()}, commit {commit()}",
        f"- command: `python bench/monitor.py --blocks {args.blocks} --block {args.block} "
        f"--size {args.size} --tokens {args.tokens} --client {args.client}"
        + (f" --nice {args.nice}" if args.nice else "") + (" --split" if args.split else "")
        + (f" --page {args.page}" if args.page else "") + "`",
        f"- torch engine, FastVLM-0.5B shapes with random weights, constrained, {args.size} px, "
        f"at most {args.tokens} tokens, two sources (the shared clip twice), --fps 0, --monitor "
        f"serving all along; blocks of {args.block} frames, page open in blocks 1, 4, 5, 8, ..., "
        "each block's first frame left out",
        "",
        "| page | blocks | frames | TBT median | frame -> first event median | start -> first event median | browser CPU (of one core) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        f"Difference with the page open, block against the block beside it (geometric mean of "
        f"{len(by_block[True])} pairs): TBT {d_tbt[0]:+.1%} (95% interval {d_tbt[1]:+.1%} to "
        f"{d_tbt[2]:+.1%}), frame -> first event {d_event[0]:+.1%} ({d_event[1]:+.1%} to "
        f"{d_event[2]:+.1%}), start -> first event {d_start[0]:+.1%} ({d_start[1]:+.1%} to "
        f"{d_start[2]:+.1%}).",
        f"While open the page showed {', '.join(f'{k} {len(v)}' for k, v in client.seen.items())} "
        f"frames, {len(lags) / seconds_open if seconds_open else 0:.1f} updates a second, each "
        f"drawn {lag} after pete-osc sent it.",
    ]
    return report(lines, args.out, args.write)


if __name__ == "__main__":
    sys.exit(main())
