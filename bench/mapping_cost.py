"""Cost of everything between the model and the wire, per event, beside bare python-osc.

    .venv/bin/python bench/mapping_cost.py [--events 20000] [--write]

One run measures, on a local UDP socket:
  - a bare python-osc ``send_message`` (what a hand-written script would do),
  - pete-osc's path for one DIRECTOR line: parse -> map -> build -> send, and its parts,
  - latency to the receiving socket: bare send -> recv, and pete-osc's real path through
    the sender thread (line parsed on this thread, handed over, mapped, sent) -> recv.
Prints a Markdown table; --write appends it to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import socket
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))  # the random-weight model builders (tests/support)

from common import append, commit, cpu  # noqa: E402
from pythonosc.udp_client import SimpleUDPClient  # noqa: E402

from pete_osc.director.parser import LineParser  # noqa: E402
from pete_osc.director.schema import load_director  # noqa: E402
from pete_osc.mapping.load import parse_mapping  # noqa: E402
from pete_osc.mapping.router import Router  # noqa: E402
from pete_osc.outputs.osc import OscOutput  # noqa: E402
from pete_osc.outputs.sender import Sender  # noqa: E402
from pete_osc.records import FrameInfo  # noqa: E402

LINE = "energy: 0.7\n"


def receiver() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2.0)
    return sock


def stats(samples: list[float]) -> tuple[float, float]:
    samples = sorted(samples)
    return statistics.median(samples) * 1e6, samples[int(len(samples) * 0.9)] * 1e6


def timed(fn, n: int) -> list[float]:
    out = []
    clock = time.perf_counter
    for _ in range(n):
        t0 = clock()
        fn()
        out.append(clock() - t0)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    n = args.events

    director = load_director(ROOT / "DIRECTOR.md")
    sink = receiver()
    port = sink.getsockname()[1]
    mapping = parse_mapping(f"osc:\n  main: {{host: 127.0.0.1, port: {port}}}\nroutes:\n"
                            "  - {event: energy, address: /pete/energy}\n", director)
    frame = FrameInfo(1, "bench", time.time())
    parser = LineParser(director, frame)
    router = Router(mapping)
    out = OscOutput(mapping.osc["main"])
    bare = SimpleUDPClient("127.0.0.1", port)

    def drain():
        sink.setblocking(False)
        try:
            while True:
                sink.recv(65536)
        except BlockingIOError:
            pass
        sink.settimeout(2.0)

    def ours():
        for ev in parser.feed(LINE):
            for m in router.event(ev, time.monotonic()):
                out.send(m)

    ev = parser.feed(LINE)[0]
    msg = router.event(ev, 0.0)[0]
    rows = []
    for label, fn in [
        ("bare python-osc `send_message`", lambda: bare.send_message("/pete/energy", 0.7)),
        ("pete-osc: parse -> map -> build -> send", ours),
        ("  parse one line (LineParser.feed)", lambda: parser.feed(LINE)),
        ("  map one event (Router.event)", lambda: router.event(ev, time.monotonic())),
        ("  build + send (OscOutput)", lambda: out.send(msg)),
    ]:
        timed(fn, min(n, 2000))  # warm up
        drain()
        samples = []
        for chunk in range(0, n, 5000):  # drain between chunks so the socket never overflows
            samples += timed(fn, min(5000, n - chunk))
            drain()
        rows.append((label, *stats(samples)))

    # The musical filters on the send path (issue 11): settle, a chord, a paced target.
    from pete_osc.outputs.pace import Pace
    from pete_osc.records import Color, Event

    settled = Router(parse_mapping(
        f"osc:\n  main: {{host: 127.0.0.1, port: {port}}}\nroutes:\n"
        "  - {event: mood, address: /mood, settle: {frames: 3, time: 1}}\n", director))
    moods = [Event("mood", "word", w, "", 1, 1, "bench", 0.0, 0.0) for w in ("calm", "tense", "calm")]
    clock = [0.0]

    def settle_one():
        clock[0] += 0.5
        settled.event(moods[int(clock[0] * 2) % 3], clock[0])

    harmony = Router(parse_mapping((ROOT / "mappings" / "harmony.yaml").read_text(), director))
    colors = [Color("red", "#ff0000", (255, 0, 0)), Color("blue", "#0000ff", (0, 0, 255))]
    frames = [[Event("color", "color", c, "", 1, 1, "bench", 0.0, 0.0),
               Event("mood", "word", m, "", 2, 1, "bench", 0.0, 0.0),
               Event("energy", "number", e, "", 3, 1, "bench", 0.0, 0.0),
               Event("brightness", "number", b, "", 5, 1, "bench", 0.0, 0.0)]
              for c, m, e, b in ((colors[0], "calm", 0.4, 0.5), (colors[1], "sad", 0.9, 0.2))]
    turn = [0]

    def chord_frame():
        turn[0] += 1
        for e in frames[turn[0] % 2]:
            harmony.event(e, float(turn[0]))
        harmony.end_frame(float(turn[0]))

    pace = Pace(rate=1000, burst=20)
    pace_clock = [0.0]

    def paced():
        pace_clock[0] += 0.0005  # twice the cap: half the messages wait and merge
        pace.offer(msg, pace_clock[0])

    for label, fn, per in [
        ("  map one event through settle: {frames: 3, time: 1}", settle_one, 1),
        ("  a chord route, per event (4 inputs, then the frame's chord)", chord_frame, 4),
        ("  a paced target (max_rate 1000, offered at 2000/s)", paced, 1),
    ]:
        timed(fn, min(n, 2000))
        samples = [t / per for t in timed(fn, n)]
        rows.append((label, *stats(samples)))

    # Latency to a receiving socket, one event at a time.
    k = min(n, 3000)
    bare_rtt = []
    for _ in range(k):
        t0 = time.perf_counter()
        bare.send_message("/pete/energy", 0.7)
        sink.recv(65536)
        bare_rtt.append(time.perf_counter() - t0)
    rows.append(("bare python-osc: send -> received by a socket", *stats(bare_rtt)))
    ours_rtt = []
    with Sender(mapping) as sender:
        for _ in range(k):
            t0 = time.perf_counter()
            for e in parser.feed(LINE):
                sender.event(e)
            sink.recv(65536)
            ours_rtt.append(time.perf_counter() - t0)
    rows.append(("pete-osc: line -> parse -> sender thread -> received by a socket", *stats(ours_rtt)))

    table = [
        "### Parse -> map -> send, per event",
        "",
        f"- machine: {cpu()}, Python {sys.version.split()[0]}",
        f"- date: {datetime.date.today()}, commit {commit()}",
        f"- command: `python bench/mapping_cost.py --events {n}{' --write' if args.write else ''}`",
        f"- one OSC route (`energy` -> `/pete/energy`), UDP to 127.0.0.1; {n} events per row, "
        f"{k} for the latency rows",
        "",
        "| path | median | p90 |",
        "| --- | ---: | ---: |",
    ]
    table += [f"| {label} | {med:.1f} µs | {p90:.1f} µs |" for label, med, p90 in rows]
    text = "\n".join(table) + "\n"
    print(text)
    if args.write:
        append(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
