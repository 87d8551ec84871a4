"""What the monitor page costs the show: TBT and frame -> first event without the page,
and with it open in a browser (headless Chromium), in one run; and the page's picture.

    python bench/monitor.py [--frames 6] [--rounds 2] [--size 128] [--tokens 16]
                            [--model FOLDER] [--screenshot docs/monitor.png] [--write]

One torch engine (FastVLM-0.5B shapes with random weights unless --model), constrained
to DIRECTOR.md, two sources (the shared clip twice), --fps 0. The rounds alternate: a
show without the page, then a show with --monitor and a browser on it, ``--rounds``
times, ``--frames`` frames each; the medians of each condition are compared. With the
page open the browser must see both sources' frames change (the page stays live).
Needs selenium, chromium and chromedriver (install.sh --dev).
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import FrameReports, commit, cpu, report  # noqa: E402

from pete_osc.capture import open_source  # noqa: E402
from pete_osc.director import load_director  # noqa: E402
from pete_osc.engines import EngineOptions, GenerationSettings, open_engine  # noqa: E402
from pete_osc.mapping.config import parse_mapping  # noqa: E402
from pete_osc.monitor import Monitor  # noqa: E402
from pete_osc.reload import Files  # noqa: E402
from pete_osc.show import Show, ShowConfig  # noqa: E402

VIDEO = ROOT.parent / "shared" / "data" / "big_buck_bunny.mp4"


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,900"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


class SseClient:
    """The page's traffic without a browser: the event stream read, and each new frame's
    JPEG fetched, as the page does (to tell the server's cost from the browser's)."""

    def __init__(self, url: str):
        import threading

        self.base = url.split("?")[0].rstrip("/") + "/"
        self.frames: dict[str, set] = {}
        self._stop = threading.Event()
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
                for name, source in data["sources"].items():
                    shown = self.frames.setdefault(name, set())
                    if source["frame"] not in shown:
                        shown.add(source["frame"])
                        urllib.request.urlopen(f"{self.base}frame/{name}", timeout=5).read()

    def quit(self):
        self._stop.set()


def one_show(engine, files, config, video: Path, page: bool, shot: Path | None,
             client: str = "chromium") -> dict:
    sources = [(name, open_source(str(video), 320, 240)) for name in ("stage", "crowd")]
    show = Show(config, files, sources)
    reports = FrameReports()
    driver = None
    seen: dict[str, set] = {"stage": set(), "crowd": set()}
    with show:
        show.subscribe(reports)
        if page:
            port = _free_port()
            monitor = Monitor(port, size=config.size, activity=show.sender.activity,
                              learn=show.learn, routes=show.routes,
                              files=show.live_files()).start()
            show.subscribe(monitor)
            if client == "chromium":
                driver = browser()
                driver.get(monitor.url)
                # The page itself notes each frame it shows; read once at the end (a
                # WebDriver query per frame would make the browser work for the benchmark)
                driver.execute_script(WATCH)
            else:
                reader = SseClient(monitor.url)
        show.attach(engine)
        show.run()
        if page and client != "chromium":
            time.sleep(0.5)
            reader.quit()
            seen = {k: reader.frames.get(k, set()) for k in seen}
        if driver is not None:
            time.sleep(0.5)
            shown = driver.execute_script(
                "return Object.fromEntries(Object.entries(window.__seen || {}).map("
                "([k, v]) => [k, [...v]]))")
            seen = {k: set(shown.get(f"frame-{k}", [])) for k in seen}
            if shot is not None:
                driver.save_screenshot(str(shot))
            driver.quit()
        show.engine = None  # kept for the next round
    rs = reports.reports
    # time per decode step: forced text arrives with the token before it (gap 0)
    tbt = [t for r in rs for t in r.tbt if t > 0]
    to_event = [r.first_event_at - r.captured_at for r in rs if r.first_event_at]
    return {"tbt": tbt, "to_event": to_event, "frames": len(rs),
            "seen": {k: len(v) for k, v in seen.items()}}


WATCH = """
window.__seen = {};
new MutationObserver((changes) => {
  for (const c of changes) {
    const t = c.target;
    if (t.id && t.id.startsWith("frame-")) (window.__seen[t.id] ||= new Set()).add(t.dataset.frame);
  }
}).observe(document.body, {subtree: true, attributes: true, attributeFilter: ["data-frame"]});
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--model", default=None)
    ap.add_argument("--video", type=Path, default=VIDEO)
    ap.add_argument("--screenshot", type=Path, default=None)
    ap.add_argument("--client", default="chromium", choices=("chromium", "sse"),
                    help="what reads the page: headless Chromium, or a Python client that "
                         "reads the event stream and the frames (the server's cost alone)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    from pete_osc.synthetic import FULL, build_fastvlm_torch

    model = args.model
    if model is None:
        model = str(build_fastvlm_torch(Path(tempfile.mkdtemp(prefix="fastvlm-full-")), FULL))
    director = load_director(ROOT / "DIRECTOR.md")
    text = "osc:\n  main: {port: 9}\nroutes:\n" + "".join(
        f"  - {{event: {key}, address: '/pete/{{source}}/{key}'}}\n" for key in director.keys)
    mapping = parse_mapping(text, director, Path("bench-monitor.yaml"))
    files = Files(director, mapping, "", text)
    config = ShowConfig(size=args.size, max_tokens=args.tokens, fps=0, loop=True,
                        max_frames=args.frames, reload=False, warm_up=False)
    engine = open_engine("torch", model, director.prompt, director.instruction,
                         GenerationSettings(args.tokens, 0.0, args.size),
                         EngineOptions(path=model))
    engine.constrain(director)
    engine.warm_up()
    results = {False: [], True: []}
    for round_ in range(args.rounds):
        for page in (False, True):
            last = round_ == args.rounds - 1 and page
            r = one_show(engine, files, config, args.video, page, args.screenshot if last else None,
                         args.client)
            mid = lambda xs: statistics.median(xs) if xs else float("nan")  # noqa: E731
            print(f"round {round_ + 1}, page {'open' if page else 'closed'}: {r['frames']} frames, "
                  f"TBT {mid(r['tbt']) * 1000:.1f} ms, frame -> event "
                  f"{mid(r['to_event']) * 1000:.0f} ms, page saw {r['seen']}",
                  file=sys.stderr, flush=True)
            results[page].append(r)
    engine.close()

    def med(page, key):
        values = [v for r in results[page] for v in r[key]]
        return statistics.median(values) if values else float("nan")

    rows = []
    for page in (False, True):
        seen = ", ".join(f"{k} {min(r['seen'][k] for r in results[page])}" for k in ("stage", "crowd"))
        reader = "headless Chromium" if args.client == "chromium" else "a Python client"
        rows.append(f"| {'open, ' + reader + ' on it' if page else 'no page'} | "
                    f"{sum(r['frames'] for r in results[page])} | {med(page, 'tbt') * 1000:.1f} ms | "
                    f"{med(page, 'to_event') * 1000:.0f} ms | "
                    f"{seen if page else '-'} |")
    d_tbt = med(True, "tbt") / med(False, "tbt") - 1
    d_event = med(True, "to_event") / med(False, "to_event") - 1
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else cpu()
    lines = [
        "### The monitor page open against closed",
        "",
        f"- machine: {device}; the browser on the same machine",
        f"- date: {datetime.date.today()}, commit {commit()}",
        f"- command: `python bench/monitor.py --frames {args.frames} --rounds {args.rounds} "
        f"--size {args.size} --tokens {args.tokens} --client {args.client}`",
        f"- torch engine, FastVLM-0.5B shapes with random weights, constrained, {args.size} px, "
        f"at most {args.tokens} tokens, two sources (the shared clip twice), --fps 0; rounds "
        "alternate without and with the page, same engine and process",
        "",
        "| page | frames | TBT median | frame -> first event median | frames the page showed per source (fewest in a round) |",
        "| --- | ---: | ---: | ---: | --- |",
        *rows,
        "",
        f"Difference with the page open: TBT {d_tbt:+.1%}, frame -> first event {d_event:+.1%}.",
    ]
    return report(lines, args.out, args.write)


if __name__ == "__main__":
    sys.exit(main())
