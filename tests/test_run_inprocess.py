"""The run in-process: the show, its sender and its watchdog driven by the replay engine (and
the remote engine against a scripted server), the messages read back from a real UDP
socket. The subprocess tests (test_show.py, test_faults.py) run the same through the CLI;
these see the records themselves: which frame each message came from, when it left, what
the watchdog cut and how fast."""

from __future__ import annotations

import json
import os
import socket
import time

from pythonosc.osc_packet import OscPacket
from support.peers import ROOT, free_port
from support.server import Server

from pete_osc.capture.sources import open_source
from pete_osc.engines import EngineOptions, GenerationSettings
from pete_osc.records import Event, FrameReport, FrameStart, Notice
from pete_osc.run.reload import Files
from pete_osc.run.show import Show, ShowConfig
from pete_osc.run.taps import Tap

DIRECTOR = ROOT / "DIRECTOR.md"


class Collect(Tap):
    """Keeps every record the show gives its taps; ``on_report`` hears each frame's end."""

    def __init__(self, on_report=None):
        self.records, self.on_report = [], on_report

    def take(self, record) -> None:
        self.records.append((time.monotonic(), record))
        if isinstance(record, FrameReport) and self.on_report is not None:
            self.on_report(record)

    def of(self, kind) -> list:
        return [r for _, r in self.records if isinstance(r, kind)]


class Receiver:
    """A UDP socket on a free port; ``messages()``: (address, args) of what arrived (OSC
    floats are 32-bit: rounded to 4 places)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def messages(self, wait: float = 0.5) -> list[tuple[str, tuple]]:
        out, deadline = [], time.monotonic() + wait
        self.sock.settimeout(0.05)
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            out += [(m.message.address, tuple(round(a, 4) if isinstance(a, float) else a
                                              for a in m.message.params))
                    for m in OscPacket(data).messages]
        self.sock.close()
        return out


def mapping_for(path, port, address="/pete/energy"):
    path.write_text(f"osc:\n  main: {{host: 127.0.0.1, port: {port}}}\nroutes:\n"
                    f"  - {{event: energy, address: '{address}', args: [$value, $frame]}}\n"
                    "  - {event: color, address: /pete/color, args: [$word, $frame]}\n")
    return path


def a_show(tmp_path, mapping, **config) -> Show:
    settings = dict(size=64, fps=0, warm_up=False, constrain="off") | config
    files = Files.read(DIRECTOR, mapping)
    return Show(ShowConfig(**settings), files, [("cam", open_source("none", 64, 48))])


def test_a_frame_reaches_a_udp_receiver_with_its_frame_number_and_send_time(tmp_path):
    receiver = Receiver()
    answers = tmp_path / "answers.txt"
    answers.write_text("color: amber\nmood: tense\nenergy: 0.7\n--- frame 2\n"
                       "color: blue\nenergy: 0.2\n")
    tap = Collect()
    with a_show(tmp_path, mapping_for(tmp_path / "m.yaml", receiver.port)) as show:
        show.subscribe(tap)
        show.load("replay", None, EngineOptions(replay=str(answers)))
        summary = show.run()
    got = receiver.messages()
    reports = tap.of(FrameReport)
    assert summary.frames == 2 and [r.events for r in reports] == [3, 2]
    first, second = (r.frame_id for r in reports)
    assert got == [("/pete/color", ("amber", first)), ("/pete/energy", (0.7, first)),
                   ("/pete/color", ("blue", second)), ("/pete/energy", (0.2, second))], got
    for report in reports:  # the sender's part of the report: when the first message left
        assert report.sent is not None and report.first_event_at <= report.first_sent_at
        assert report.first_sent_at - report.first_event_at < 0.5
    assert show.sender is not None and show.sender.sent == 4


def test_a_mapping_saved_mid_run_applies_from_the_next_frame(tmp_path):
    receiver = Receiver()
    mapping = mapping_for(tmp_path / "m.yaml", receiver.port, "/before")
    answers = tmp_path / "answers.txt"
    answers.write_text("energy: 0.5\n")
    edited = []

    def edit(report):  # as an editor saves: a new file renamed over the old one
        if not edited:
            edited.append(report.frame_id)
            saving = tmp_path / "m.yaml.saving"
            saving.write_text(mapping.read_text().replace("/before", "/after"))
            os.replace(saving, mapping)

    tap = Collect(on_report=edit)
    with a_show(tmp_path, mapping, max_frames=3) as show:
        show.subscribe(tap)
        show.load("replay", None, EngineOptions(replay=str(answers), loop=True))
        show.run()
    got = [(address, args[1]) for address, args in receiver.messages() if "energy" not in address]
    frames = [r.frame_id for r in tap.of(FrameReport)]
    assert len(frames) == 3 and edited == [frames[0]]
    # The frame that ran when the file was saved went out as it was; every later one
    # through the edited mapping, and the reload was said once.
    assert got == [("/before", frames[0])] + [("/after", f) for f in frames[1:]], got
    assert [n.what for n in tap.of(Notice)] == ["reloaded"]


def test_the_watchdog_ends_a_stalled_replayed_frame_at_once_and_the_show_goes_on(tmp_path):
    recording = tmp_path / "stall.jsonl"
    lines = [{"frame": 0, "t": 0.05, "text": "energy: 0.4\n"},
             {"frame": 0, "t": 6.0, "text": "color: red\n", "finish": "stop"},
             {"frame": 1, "t": 0.05, "text": "energy: 0.6\n", "finish": "stop"}]
    recording.write_text("".join(json.dumps(line) + "\n" for line in lines))
    receiver = Receiver()
    tap = Collect()
    with a_show(tmp_path, mapping_for(tmp_path / "m.yaml", receiver.port), stall=0.5) as show:
        show.subscribe(tap)
        show.load("replay", None, EngineOptions(replay=str(recording)))
        show.run()
    reports = tap.of(FrameReport)
    assert [r.watchdog for r in reports] == ["no token for 0.5 s", None]
    # Ended by the engine's abort, not by the recording's next token 6 s later: the
    # frame took its stall and the watchdog's look (every 50 ms), no more.
    started = [at for at, r in tap.records if isinstance(r, FrameStart)][0]
    ended = [at for at, r in tap.records if isinstance(r, FrameReport)][0]
    assert ended - started < 0.05 + 0.5 + 0.3, ended - started
    assert [(a, args[0]) for a, args in receiver.messages()] == [("/pete/energy", 0.4),
                                                                  ("/pete/energy", 0.6)]


def test_a_stalled_remote_stream_is_cut_and_its_connection_closed(tmp_path):
    from pete_osc.engines.remote import RemoteEngine

    whole = ["color: blue\n", "energy: 0.3\n", "stop"]
    with Server([["energy: 0.9\n", "stall"], whole]) as server:
        tap = Collect()
        show = a_show(tmp_path, mapping_for(tmp_path / "m.yaml", free_port()), stall=1.0,
                      max_frames=2)
        with show:
            show.subscribe(tap)
            # A read timeout far past the stall: only the watchdog's abort can end it soon.
            engine = RemoteEngine(server.url, "m", show.prompt.system, show.prompt.instruction,
                                  GenerationSettings(64, 0.0, 64), read_timeout=30.0)
            show.attach(engine)
            show.run()
        closed = server.handler.closed
    reports = tap.of(FrameReport)
    assert [r.watchdog for r in reports] == ["no token for 1 s", None], reports
    assert [getattr(e.value, "name", e.value) for e in tap.of(Event)] == [0.9, "blue", 0.3]
    token_at = [at for at, r in tap.records if getattr(r, "text", "") == "energy: 0.9\n"][0]
    ended = [at for at, r in tap.records if isinstance(r, FrameReport)][0]
    assert ended - token_at < 1.0 + 0.5, ended - token_at
    assert len(closed) == 1 and closed[0] - token_at < 1.0 + 0.5, (closed, token_at)
