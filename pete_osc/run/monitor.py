"""``--monitor``: a local page that shows the show as it happens.

A tap (it only watches the records) that keeps a small picture of the show: per source
the latest frame as the model saw it and the tokens of the current answer; the latest
value of every key (with a one-minute history for numbers); the messages sent per target;
TTFT, TBT and frame -> event over the last frames; drops; warnings and errors; the
files that are live. A page served by pete-osc itself (no CDN: a show has no internet)
reads it as server-sent events, 10 times a second, and has a button per route that sends
that route alone for a DAW's learn.

The standard library's ``http.server`` serves it: one page, one event stream and the
frames as JPEG need no framework, and no dependency is added for the show's users. The
server listens on 127.0.0.1 only, and answers only requests whose Host is that address
(so another site in the browser cannot reach it by DNS rebinding); ``--monitor-host``
opens it to the network, with a token in the URL.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, urlparse

import cv2

from ..errors import PeteError
from ..records import Color, Event, FrameReport, FrameStart, Notice, Rejection, Text
from .summary import step_times
from .taps import Tap

log = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("monitor.html")
PUSH_PERIOD = 0.1  # seconds between two updates pushed to the page (10 Hz)
# What the page is sent, each part only when it changed (history at most once a second)
PARTS = ("sources", "values", "history", "frames", "dropped", "log", "files")
HISTORY = 60.0  # seconds of history per number (the sparklines)
HISTORY_STEP = 0.25  # seconds between two points of a sparkline


class Monitor(Tap):
    """The monitor page's state and server; see the module docstring."""

    name = "the monitor page"

    def __init__(self, port: int, host: str = "127.0.0.1",
                 activity: Callable[[], dict] | None = None,
                 learn: Callable[[int], str] | None = None,
                 routes: Callable[[], list[dict]] | None = None,
                 notes: list[str] = (),
                 files: list[str] | None = None):
        self.activity = activity or (lambda: {})
        self.learn = learn
        self.routes = routes or (lambda: [])
        self.token = None if host in ("127.0.0.1", "localhost") else secrets.token_urlsafe(12)
        self._lock = threading.Lock()
        self._version = 0
        self._changed = dict.fromkeys(PARTS, 0)  # part -> its own version
        self._sources: dict[str, dict] = {}
        self._pictures: dict[str, tuple[int, object]] = {}  # source -> (frame, its pixels)
        self._jpeg: dict[str, tuple[int, bytes]] = {}  # source -> (frame, JPEG), once asked
        self._reported = 0  # frame reports so far (each row of the chart carries its number)
        self._values: dict[str, dict] = {}
        self._frames: deque = deque(maxlen=120)
        self._log: deque = deque(maxlen=30)
        for note in notes:  # what was said before the page started (MIDI off, say)
            self._log.append({"at": round(time.time(), 2), "level": "warning", "text": note})
        self._files = {"live": files or [], "reload": None}
        self._dropped = (0, 0)  # frames lost while the engine was busy, skipped by --fps
        self._stop = threading.Event()
        self._handler = _LogToPage(self)
        try:
            self.server = ThreadingHTTPServer((host, port), _handler_for(self))
        except OSError as exc:
            raise PeteError(f"--monitor {port}: cannot listen on {host}:{port}: "
                            f"{exc.strerror or exc} (is another program using it? try "
                            "another port)") from None
        self.server.daemon_threads = True
        self.host, self.port = host, self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="monitor page")

    @property
    def url(self) -> str:
        where = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{where}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    def start(self) -> "Monitor":
        logging.getLogger("pete_osc").addHandler(self._handler)
        self._thread.start()
        return self

    # ---- the tap: records in (on the show's thread) -------------------------------------
    # Only bookkeeping here: the show's thread must not wait for the page. The picture is
    # kept as it is and made a JPEG on the page's side, when a page asks for it.
    def take(self, record) -> None:
        if isinstance(record, FrameStart):
            frame = record.frame
            with self._lock:
                if record.image is not None:
                    self._pictures[frame.source] = (frame.id, record.image)
                self._sources[frame.source] = {"frame": frame.id, "text": "",
                                               "at": frame.captured_at}
                self._touch("sources")
        elif isinstance(record, Text):
            with self._lock:
                source = self._sources.get(record.source)
                if source is not None and source["frame"] == record.frame_id:
                    source["text"] = (source["text"] + record.text)[-4000:]
                    self._touch("sources")
        elif isinstance(record, Event):
            self._event(record)
        elif isinstance(record, Rejection):
            self._note("rejected", f"frame {record.frame_id}: {record.raw!r}: {record.reason}")
        elif isinstance(record, FrameReport):
            self._report(record)
        elif isinstance(record, Notice) and record.what in ("reloaded", "refused"):
            self._note(record.what, record.text)
            with self._lock:
                self._files["reload"] = {"ok": record.what == "reloaded", "text": record.text}
                self._touch("files")

    def _touch(self, *parts: str) -> None:
        for part in parts:
            self._changed[part] += 1
        self._version += 1

    def _event(self, ev: Event) -> None:
        value = ev.value
        now = time.time()
        with self._lock:
            slot = self._values.setdefault(ev.key, {"kind": ev.kind, "history": deque()})
            slot.update(source=ev.source, at=now, frame=ev.frame_id)
            if isinstance(value, Color):
                slot.update(value=value.name, hex=value.hex)
            else:
                slot["value"] = value
            if isinstance(value, float):
                history = slot["history"]
                # At most one point per HISTORY_STEP: pixel keys come at camera rate.
                if history and int(history[-1][0] / HISTORY_STEP) == int(now / HISTORY_STEP):
                    history.pop()
                history.append((now, value))  # (unrounded: the bucket test above uses it)
                while history and history[0][0] < now - HISTORY:
                    history.popleft()
                self._touch("history")
            self._touch("values")

    def _report(self, r: FrameReport) -> None:
        # time per decode step: text the grammar forced arrives with the token before it (0)
        steps = sorted(step_times(r))
        tbt = steps[len(steps) // 2] if steps else None
        with self._lock:
            self._reported += 1
            self._frames.append({
                "n": self._reported, "frame": r.frame_id, "source": r.source,
                "at": round(time.time(), 2), "ttft": r.ttft, "tbt": tbt,
                "to_event": r.first_event_at - r.captured_at if r.first_event_at else None,
                "to_sent": r.first_sent_at - r.captured_at if r.first_sent_at else None,
                "error": r.error or r.watchdog})
            if (r.dropped, r.skipped) != self._dropped:
                self._dropped = (r.dropped, r.skipped)
                self._touch("dropped")
            self._touch("frames")

    def _note(self, level: str, text: str) -> None:
        with self._lock:
            self._log.append({"at": round(time.time(), 2), "level": level, "text": text})
            self._touch("log")

    # ---- the page's side (server threads) ------------------------------------------------
    def parts(self, shown: dict | None = None, frames_after: int = 0,
              history: bool = True) -> tuple[int, dict, dict]:
        """(version, the parts' versions, the parts changed since ``shown``), JSON-ready.
        ``frames`` holds only the chart's rows after row ``frames_after``; ``history`` (the
        sparklines) only where asked. The lock is held for the copies only."""
        shown = shown or {}
        with self._lock:
            versions = dict(self._changed)
            want = {p for p, v in versions.items() if shown.get(p) != v}
            if not history:
                want.discard("history")
            out: dict = {}
            if "sources" in want:
                out["sources"] = {n: dict(s) for n, s in self._sources.items()}
            if "values" in want:
                out["values"] = {k: {n: v for n, v in slot.items() if n != "history"}
                                 for k, slot in self._values.items()}
            if "history" in want:
                out["history"] = {k: [[round(t, 2), v] for t, v in slot["history"]]
                                  for k, slot in self._values.items() if slot["history"]}
            if "frames" in want:
                out["frames"] = [f for f in self._frames if f["n"] > frames_after]
            if "dropped" in want:
                out["dropped"] = {"dropped": self._dropped[0], "skipped": self._dropped[1]}
            if "log" in want:
                out["log"] = list(self._log)
            if "files" in want:
                out["files"] = dict(self._files)
            return self._version, versions, out

    def targets(self) -> dict:
        return {n: {"sent": a[0], "last": a[1], "at": a[2]} for n, a in self.activity().items()}

    def snapshot(self) -> dict:
        """Everything the page shows at once, JSON-ready."""
        version, _, parts = self.parts()
        values = {k: {**v, "history": parts["history"].get(k, [])}
                  for k, v in parts["values"].items()}
        return {**parts, "values": values, "targets": self.targets(), "routes": self.routes(),
                "version": version, "now": time.time()}

    def jpeg(self, source: str) -> bytes | None:
        """The source's latest frame as the model saw it (at --size), as JPEG."""
        with self._lock:
            picture, made = self._pictures.get(source), self._jpeg.get(source)
        if picture is None:
            return None
        if made is not None and made[0] == picture[0]:
            return made[1]
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(picture[1], cv2.COLOR_RGB2BGR))
        if not ok:
            return None
        with self._lock:
            self._jpeg[source] = (picture[0], jpeg.tobytes())
        return self._jpeg[source][1]

    def close(self) -> None:
        self._stop.set()
        logging.getLogger("pete_osc").removeHandler(self._handler)
        if self._thread.is_alive():
            self.server.shutdown()
        self.server.server_close()
        if self._thread.is_alive():
            self._thread.join(2.0)


class _LogToPage(logging.Handler):
    """Warnings and errors of the show, for the page's log."""

    def __init__(self, monitor: Monitor):
        super().__init__(logging.WARNING)
        self.monitor = monitor

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.monitor._note(record.levelname.lower(), record.getMessage())
        except Exception:
            pass


def _handler_for(monitor: Monitor):

    class Handler(BaseHTTPRequestHandler):
        server_version = "pete-osc"

        def log_message(self, *args):
            pass

        def _allowed(self, query: dict) -> bool:
            if monitor.token is not None:
                return query.get("token", [""])[0] == monitor.token
            # Bound to 127.0.0.1: only a browser on this machine, asking for this address
            # (a page elsewhere cannot rename itself to it by DNS rebinding).
            host = self.headers.get("Host", "")
            return host in (f"127.0.0.1:{monitor.port}", f"localhost:{monitor.port}")

        def do_GET(self):
            url = urlparse(self.path)
            query = parse_qs(url.query)
            if not self._allowed(query):
                self._send(403, b"forbidden: this page is for this computer only "
                                b"(or add the token pete-osc printed)\n", "text/plain")
                return
            if url.path == "/":
                self._send(200, PAGE.read_bytes(), "text/html; charset=utf-8")
            elif url.path == "/events":
                self._events()
            elif url.path.startswith("/frame/"):
                jpeg = monitor.jpeg(url.path[len("/frame/"):])
                if jpeg is None:
                    self._send(404, b"no frame yet\n", "text/plain")
                else:
                    self._send(200, jpeg, "image/jpeg")
            else:
                self._send(404, b"not found\n", "text/plain")

        def do_POST(self):
            url = urlparse(self.path)
            query = parse_qs(url.query)
            if not self._allowed(query) or url.path != "/learn" or monitor.learn is None:
                self._send(403 if not self._allowed(query) else 404, b"no\n", "text/plain")
                return
            try:
                route = int(query.get("route", ["-1"])[0])
                said = monitor.learn(route)
            except (ValueError, IndexError):
                self._send(400, b"no such route\n", "text/plain")
                return
            except PeteError as exc:  # its output is off: nothing could leave
                monitor._note("warning", str(exc))
                self._send(409, f"{exc}\n".encode(), "text/plain")
                return
            monitor._note("learn", f"sending {said} alone")
            self._send(200, json.dumps({"learning": said}).encode(), "application/json")

        def _events(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            # Only what changed goes out, at most 10 times a second, and a beat once a second
            # (the page's clock, its activity lights and ages): a page shares the computer
            # with the model, and every update it draws is time taken from the show.
            shown: dict = {}
            frames_after, targets, routes, second = 0, None, None, None
            try:
                while not monitor._stop.is_set():
                    now = time.time()
                    beat = int(now) != second
                    version, versions, update = monitor.parts(shown, frames_after, history=beat)
                    shown.update({p: versions[p] for p in update})
                    if update.get("frames"):
                        frames_after = update["frames"][-1]["n"]
                    if (found := monitor.targets()) != targets:
                        update["targets"] = targets = found
                    if beat and (found := monitor.routes()) != routes:
                        update["routes"] = routes = found
                    if update or beat:
                        if second is None:
                            update["all"] = True  # the page starts over (a new connection)
                        second = int(now)
                        message = {"version": version, "now": round(now, 3), **update}
                        self.wfile.write(b"data: " + json.dumps(message).encode() + b"\n\n")
                        self.wfile.flush()
                    monitor._stop.wait(PUSH_PERIOD)
            except OSError:
                pass  # the page was closed

        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

    return Handler
