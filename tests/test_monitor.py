"""The monitor page in a real browser (headless Chromium, driven by Selenium) during a run
with a tiny model on the shared clip; who may open it; and learn mode on real receivers
(oscdump, the JACK MIDI loopback)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from support.cli import Run
from support.peers import (
    ROOT,
    free_port,
    jack_backend,
    oscdump,
    wait_for_port,
    without_time,
)

PETE = [sys.executable, "-m", "pete_osc"]


def browser():
    """Headless Chromium through chromedriver (Debian's chromium and chromium-driver)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is a dev extra")
    chrome = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chrome or not driver:
        pytest.skip("chromium and chromium-driver are not installed (Debian packages; "
                    "install.sh --dev installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = chrome
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,900"):
        options.add_argument(flag)
    from selenium.webdriver.chrome.service import Service

    return webdriver.Chrome(service=Service(driver), options=options)


def wait(predicate, timeout=60.0, what=""):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            value = predicate()
        except Exception:
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"never saw {what}")


def test_the_page_shows_frames_tokens_and_values_changing(
        tiny_torch_model, shared_video, cli_env, tmp_path):
    port = free_port(kind=socket.SOCK_STREAM)
    osc = free_port()
    mapping = tmp_path / "m.yaml"
    from pete_osc.director.schema import load_director

    keys = list(load_director(ROOT / "DIRECTOR.md").keys)  # a random model says any of them
    mapping.write_text(f"osc:\n  main: {{port: {osc}}}\nroutes:\n" + "".join(
        f"  - {{event: {key}, address: /{key}}}\n" for key in keys))
    dump = oscdump(osc)
    run = Run("--model", str(tiny_torch_model), "--source", f"clip={shared_video}",
              "--size", "64", "--fps", "0", "--max-tokens", "24", "--constrain", "on",
              "--no-warmup", "--loop", "--mapping", str(mapping), "--monitor", str(port),
              env=cli_env)
    page = None
    try:
        run.wait_for(lambda: any("monitor page: http://127.0.0.1:" in l for l in run.err),
                     what="the monitor's address")
        page = browser()
        page.get(f"http://127.0.0.1:{port}/")
        from selenium.webdriver.common.by import By

        image = wait(lambda: page.find_element(By.ID, "frame-clip"), what="the frame")
        wait(lambda: image.get_attribute("data-frame"), what="a frame drawn")
        # The picture as the model saw it: 64 px, and the clip's pixels (not a blank canvas)
        assert page.execute_script("return arguments[0].width", image) == 64
        lit = page.execute_script("const d = arguments[0].getContext('2d').getImageData(0, 0, 64, "
                                  "64).data; let n = 0; for (let i = 0; i < d.length; i += 4) "
                                  "n += d[i] + d[i + 1] + d[i + 2] > 60; return n", image)
        assert lit > 64 * 64 // 4, lit
        first_frame = image.get_attribute("data-frame")
        first_text = page.find_element(By.ID, "tokens-clip").text
        values = wait(lambda: {e.get_attribute("id"): e.get_attribute("data-frame") for e in
                               page.find_elements(By.CSS_SELECTOR, "[id^=value-]")},
                      what="a value")
        # It stays live: a newer frame, its tokens, and values from newer frames.
        wait(lambda: image.get_attribute("data-frame") != first_frame, what="a newer frame")
        wait(lambda: page.find_element(By.ID, "tokens-clip").text != first_text,
             what="new tokens")
        wait(lambda: any(page.find_element(By.ID, key).get_attribute("data-frame") != frame
                         for key, frame in values.items()), what="a value from a newer frame")
        assert first_text.startswith(f"frame {first_frame}")
        # The latency chart and the sent messages have something to show.
        wait(lambda: "TTFT" in page.find_element(By.ID, "medians").text and
             "ms" in page.find_element(By.ID, "medians").text, what="latency")
        wait(lambda: page.find_element(By.ID, "target-main"), what="the OSC target")
        shot = tmp_path / "monitor.png"
        page.save_screenshot(str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
        if os.environ.get("PETE_SCREENSHOT"):  # how docs/monitor.png is made
            shutil.copy(shot, os.environ["PETE_SCREENSHOT"])
        # A learn button: route 2 alone (see the next test for what it sends).
        page.find_element(By.ID, "learn-1").click()
        wait(lambda: any(f"sending {keys[1]} -> OSC /{keys[1]} on main alone" in e.text
                         for e in page.find_elements(By.CSS_SELECTOR, "#log div")),
             what="the learn note in the log")
        rc = run.interrupt()
    finally:
        if page is not None:
            page.quit()
        run.kill()
        dump.stop()
    assert rc == 0
    assert not any("Traceback" in l for l in run.err)
    # The model on this computer's processor: a browser here takes cores from it
    assert any("monitor page: the model runs on this computer's" in l and
               "--monitor-host 0.0.0.0" in l for l in run.err), run.err


def test_learn_on_the_page_sends_that_route_alone(cli_env, tmp_path):
    """During a run, the button's request: only the chosen route's messages, its sweep."""
    port, osc = free_port(kind=socket.SOCK_STREAM), free_port()
    mapping = tmp_path / "m.yaml"
    mapping.write_text(f"osc:\n  main: {{port: {osc}}}\nroutes:\n"
                       "  - {event: energy, address: /e}\n  - {event: tempo, address: /t}\n")
    answer = tmp_path / "a.txt"
    answer.write_text("energy: 0.7\n")
    dump = oscdump(osc)
    run = Run("--engine", "replay", "--replay", str(answer), "--loop", "--fps", "20", "--quiet",
              "--mapping", str(mapping), "--monitor", str(port), env=cli_env)
    try:
        got = []
        run.wait_for(lambda: got.extend(without_time(l) for l in dump.take(100, 0.1)) or
                     any(l.startswith("/e ") for l in got), what="energy messages")
        request = urllib.request.Request(f"http://127.0.0.1:{port}/learn?route=1", method="POST")
        said = json.loads(urllib.request.urlopen(request, timeout=5).read())
        assert said == {"learning": "tempo -> OSC /t on main"}
        during = [without_time(l) for l in dump.take(200, timeout=2.2)]
        run.interrupt()
    finally:
        run.kill()
        dump.stop()
    assert not any("the model runs on this computer" in l for l in run.err)  # (a replay)
    tempos = [float(l.split(" ")[2]) for l in during if l.startswith("/t ")]
    # 60 -> 180 -> 60 BPM (DIRECTOR.md's tempo range) in 49 steps; nothing else meanwhile.
    assert tempos[0] == 60 and max(tempos) == 180 and len(tempos) >= 40, tempos
    assert tempos.index(180.0) == 24
    first, last = during.index(next(l for l in during if l.startswith("/t "))), None
    for i, line in enumerate(during):
        if line.startswith("/t "):
            last = i
    assert not any(l.startswith("/e ") for l in during[first:last + 1]), during


def test_the_page_is_sent_only_what_changed():
    """The page shares the computer with the model: after the first update (everything),
    each carries only the parts that changed, and nothing goes out when nothing changed
    but a beat once a second."""
    import numpy as np

    from pete_osc.engines.base import square_rgb
    from pete_osc.records import Event, Frame, FrameReport, FrameStart, Text
    from pete_osc.run.monitor import Monitor

    monitor = Monitor(0, routes=lambda: ["energy -> OSC /e on main"]).start()
    updates = []
    try:
        t0 = time.time()
        frame = Frame(7, np.full((48, 64, 3), 90, np.uint8), t0, "cam")
        monitor.take(FrameStart(frame, square_rgb(frame.image, 128)))
        monitor.take(Event("energy", "number", 0.5, "0.5", 1, 7, "cam", t0, t0))
        stream = urllib.request.urlopen(f"http://127.0.0.1:{monitor.port}/events", timeout=5)

        def update():
            line = stream.readline()
            while not line.startswith(b"data: "):
                line = stream.readline()
            updates.append((time.monotonic(), json.loads(line[6:])))
            return updates[-1][1]

        first = update()
        assert {"sources", "values", "history", "targets", "log", "files", "routes",
                "all"} <= set(first)
        assert first["sources"]["cam"]["frame"] == 7 and first["values"]["energy"]["value"] == 0.5
        monitor.take(Text(7, "cam", "energy", 0.01))
        second = update()
        assert second["sources"]["cam"]["text"] == "energy"
        assert set(second) == {"version", "now", "sources"}, second
        # The latency chart: only its new rows
        monitor.take(FrameReport(7, t0, ttft=0.2, tbt=[0.05, 0.0, 0.07], source="cam"))
        rows = update()
        assert [r["frame"] for r in rows["frames"]] == [7] and rows["frames"][0]["tbt"] == 0.07
        monitor.take(FrameReport(8, t0, source="cam"))
        assert [r["frame"] for r in update()["frames"]] == [8]
        # The frame as the model saw it (--size 128, padded square), made when asked
        picture = urllib.request.urlopen(f"http://127.0.0.1:{monitor.port}/frame/cam",
                                         timeout=5).read()
        import cv2

        assert cv2.imdecode(np.frombuffer(picture, np.uint8), cv2.IMREAD_COLOR).shape == (128, 128, 3)
        # Nothing new: in two seconds, only the beats (one a second), with nothing in them
        quiet = time.monotonic()
        while time.monotonic() - quiet < 2.0:
            beat = update()
            assert set(beat) == {"version", "now"}, beat
        assert 2 <= len(updates) - 4 <= 3, [u[0] - quiet for u in updates]
    finally:
        monitor.close()


def test_the_page_is_for_this_computer_unless_opened_with_a_token(cli_env):
    from pete_osc.run.monitor import Monitor

    port = free_port(kind=socket.SOCK_STREAM)
    monitor = Monitor(port).start()
    try:
        ok = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)
        assert ok.status == 200 and b"pete-osc" in ok.read()
        # Another site renamed to this address (DNS rebinding) is refused by its Host.
        forged = urllib.request.Request(f"http://127.0.0.1:{port}/events",
                                        headers={"Host": f"evil.example:{port}"})
        with pytest.raises(urllib.error.HTTPError, match="403"):
            urllib.request.urlopen(forged, timeout=5)
        # Other computers: it listens on 127.0.0.1 only.
        outside = _own_address()
        if outside is not None:
            with pytest.raises(OSError):
                socket.create_connection((outside, port), timeout=2).close()
    finally:
        monitor.close()
    # --monitor-host opens it to the network, with a token.
    opened = Monitor(port, host="0.0.0.0").start()
    try:
        with pytest.raises(urllib.error.HTTPError, match="403"):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)
        assert urllib.request.urlopen(opened.url, timeout=5).status == 200
        assert "?token=" in opened.url
    finally:
        opened.close()


def _own_address() -> str | None:
    """This machine's address on its network (not loopback), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


@pytest.mark.parametrize("argv,message", [
    (["--monitor", "70000"], "argument --monitor: 70000 is not a port (1 to 65535)"),
    (["--monitor", "http"], "argument --monitor: 'http' is not a whole number"),
])
def test_a_bad_monitor_port_is_one_line(cli_env, argv, message):
    proc = subprocess.run(PETE + ["run", "--engine", "replay", "--replay", str(ROOT / "DIRECTOR.md"),
                                  *argv], capture_output=True, text=True, env=cli_env, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"pete-osc: error: {message} (see pete-osc run --help)"]


def test_a_busy_monitor_port_is_one_line(cli_env, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = subprocess.run(PETE + ["run", "--engine", "replay", "--replay",
                                      str(ROOT / "DIRECTOR.md"), "--monitor", str(port)],
                              capture_output=True, text=True, env=cli_env, timeout=60)
    assert proc.returncode == 2
    errors = [l for l in proc.stderr.splitlines() if "error" in l]
    assert errors == [f"pete-osc: error: --monitor {port}: cannot listen on 127.0.0.1:{port}: "
                      "Address already in use (is another program using it? try another port)"]
    assert "replaying" not in proc.stderr  # refused before the engine started


# ---- pete-osc learn --------------------------------------------------------------------

def test_learn_sends_only_the_chosen_osc_route(cli_env, tmp_path):
    osc = free_port()
    mapping = tmp_path / "m.yaml"
    mapping.write_text(f"osc:\n  main: {{port: {osc}}}\nroutes:\n"
                       "  - {event: energy, address: /e}\n"
                       "  - {event: mood, address: /m, args: [$word]}\n"
                       "  - {event: color, address: /c, args: [$hex]}\n")
    listed = subprocess.run(PETE + ["learn", "--mapping", str(mapping)], capture_output=True,
                            text=True, env=cli_env, timeout=60)
    assert listed.stdout.splitlines()[1:] == [
        "  1  energy -> OSC /e on main", "  2  mood -> OSC /m on main",
        "  3  color -> OSC /c on main"]
    dump = oscdump(osc)
    try:
        proc = subprocess.run(PETE + ["learn", "--mapping", str(mapping), "mood", "--seconds", "1"],
                              capture_output=True, text=True, env=cli_env, timeout=60)
        got = [without_time(l) for l in dump.take(100, timeout=1.0)]
    finally:
        dump.stop()
    assert proc.returncode == 0, proc.stderr
    from pete_osc.director.schema import load_director

    moods = load_director(ROOT / "DIRECTOR.md").keys["mood"].values
    assert got == [f'/m s "{word}"' for word in moods]


def learnt_through_jack(mapping, route: str, seconds: float, cli_env,
                        interrupt: float | None = None, signum=signal.SIGINT,
                        ignored: bool = False) -> list:
    """``pete-osc learn`` of one route into the JACK loopback: the messages read back.
    (Three seconds before it sends: time to connect on a loaded machine.) ``interrupt``:
    ``signum`` that many seconds into the sweep; ``ignored``: started with SIGINT ignored,
    as a shell without job control starts a command put in the background."""
    env = dict(cli_env, **{k: os.environ[k] for k in ("JACK_DEFAULT_SERVER", "JACK_NO_START_SERVER")})
    proc = subprocess.Popen(PETE + ["learn", "--mapping", str(mapping), "--midi-api", "jack",
                                    route, "--seconds", str(seconds), "--delay", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
                            if ignored else None)
    backend = jack_backend()
    wait_for_port(backend, "pete-osc:Pete Sounds")
    with backend.open_input("pete-osc:Pete Sounds") as port:
        received, end, began = [], time.monotonic() + seconds + 6, None
        while time.monotonic() < end and proc.poll() is None:
            received += list(port.iter_pending())
            if received and began is None:
                began = time.monotonic()  # the sweep's first message
            if interrupt is not None and began is not None and time.monotonic() > began + interrupt:
                proc.send_signal(signum)
                interrupt = None
            time.sleep(0.01)
        time.sleep(0.1)  # (JACK delivers what was sent last at its next cycle)
        received += list(port.iter_pending())
    assert proc.wait(10) == 0, proc.stderr.read()
    return received


def test_learn_sweeps_one_cc_through_the_jack_loopback(jack, cli_env, tmp_path):
    mapping = tmp_path / "synth.yaml"
    mapping.write_text("midi:\n  synth: {port: Pete Sounds, channel: 3}\nroutes:\n"
                       "  - {event: energy, cc: 74}\n  - {event: brightness, cc: 71}\n"
                       "  - {event: mood, program: {calm: 1, tense: 5}}\n")
    received = learnt_through_jack(mapping, "2", 1.5, cli_env)
    # Only CC 71 on channel 3 (mido counts channels from 0), swept 0 -> 127 -> 0.
    assert {(m.type, m.channel, m.control) for m in received} == {("control_change", 2, 71)}
    values = [m.value for m in received]
    top = values.index(127)
    assert values[0] == 0 and values[-1] == 0 and top > 5, values
    assert values[:top + 1] == sorted(values[:top + 1])
    assert values[top:] == sorted(values[top:], reverse=True)


@pytest.mark.parametrize("signum, ignored", [(signal.SIGINT, True), (signal.SIGTERM, False)],
                         ids=["SIGINT-started-ignored", "SIGTERM"])
def test_ctrl_c_in_a_chord_learn_releases_every_note(jack, cli_env, tmp_path, signum, ignored):
    """Stopped mid-sweep, learn releases the chord it sounds with a note-off for each note
    (not only the channel's all-notes-off, which some synths ignore): on Ctrl-C, also where
    the shell that started it had SIGINT ignored, and on a service manager's SIGTERM."""
    mapping = tmp_path / "chords.yaml"
    mapping.write_text("midi:\n  synth: {port: Pete Sounds, channel: 2}\nroutes:\n"
                       "  - chord:\n      root: {from: color, notes: [C, G, D, A, E, B, F#, C#, G#, D#, A#, F]}\n"
                       "      quality: {from: mood, table: {calm: maj7, sad: min}}\n")
    received = learnt_through_jack(mapping, "1", 8.0, cli_env, interrupt=1.5, signum=signum,
                                   ignored=ignored)
    notes = [m for m in received if m.type in ("note_on", "note_off")]
    assert 4 <= len(notes) < 40, notes  # a chord or two of the sweep's eight (40 notes), not all
    sounding = set()
    for m in notes:
        (sounding.add if m.type == "note_on" and m.velocity > 0 else sounding.discard)(m.note)
    assert not sounding, (sounding, notes[-8:])
    assert ("control_change", 123) in {(m.type, getattr(m, "control", None)) for m in received}


def test_a_sparkline_keeps_one_point_per_quarter_second():
    """Pixel keys arrive at camera rate; the page gets at most four points a second."""
    from pete_osc.records import Event
    from pete_osc.run.monitor import Monitor

    monitor = Monitor(0)
    try:
        t0 = time.time()
        for i in range(200):
            monitor.take(Event("light", "number", i / 200, "", 0, -1, "cam0", t0, t0))
            time.sleep(0.005)
        took = time.time() - t0
        history = monitor.snapshot()["values"]["light"]["history"]
    finally:
        monitor.close()
    assert took * 4 - 1 <= len(history) <= took * 4 + 2, (took, len(history))
    assert history[-1][1] == 199 / 200  # the newest value is always there


def test_the_page_shows_every_key_an_output_that_is_off_and_skipped_frames(
        shared_video, cli_env, tmp_path):
    """A long answer (every key of DIRECTOR.md, the last one a long line) shows whole; a
    MIDI output with no MIDI system is listed as off, with its warning in the page's log
    and its learn button disabled with the reason; a 24 fps clip at --fps 2 shows frames
    skipped by --fps apart from frames dropped."""
    from selenium.webdriver.common.by import By

    port, osc = free_port(kind=socket.SOCK_STREAM), free_port()
    answer = tmp_path / "answer.txt"
    answer.write_text("color: amber\nmood: tense\nenergy: 0.7\ntempo: 120\nbrightness: 0.4\n"
                      "motion: 0.2\nscene: a long empty stage\nperson: a dancer\n"
                      "object: a very long red velvet curtain that wraps\n")
    mapping = tmp_path / "m.yaml"
    mapping.write_text(f"osc:\n  main: {{port: {osc}}}\nmidi:\n  synth: {{port: Pete Sounds}}\n"
                       "routes:\n  - {event: energy, address: /e}\n  - {event: energy, cc: 74}\n")
    # No MIDI system: no JACK server by that name, and no ALSA sequencer on this machine.
    env = dict(cli_env, JACK_DEFAULT_SERVER="pete-no-such-server", JACK_NO_START_SERVER="1")
    run = Run("--engine", "replay", "--replay", str(answer), "--loop", "--replay-speed", "4",
              "--source", f"clip={shared_video}", "--fps", "2", "--mapping", str(mapping),
              "--monitor", str(port), env=env)
    page = None
    try:
        run.wait_for(lambda: any("monitor page: http://127.0.0.1:" in l for l in run.err),
                     what="the monitor's address")
        if not any("MIDI is off" in l for l in run.err):
            pytest.skip("this machine has a MIDI system (an ALSA sequencer)")
        page = browser()
        page.set_window_size(1200, 900)
        page.get(f"http://127.0.0.1:{port}/")
        box = wait(lambda: page.find_element(By.ID, "tokens-clip"), what="the token box")
        wait(lambda: "object: a very long red velvet curtain that wraps" in box.text,
             what="the answer's last key")
        assert page.execute_script("return arguments[0].scrollHeight <= arguments[0].clientHeight + 1",
                                   box), "the token box clips the answer"
        off = wait(lambda: page.find_element(By.ID, "target-synth"), what="the MIDI output")
        assert "off: MIDI is off here" in off.text, off.text
        assert any("MIDI is off, OSC goes on" in e.text
                   for e in page.find_elements(By.CSS_SELECTOR, "#log div"))
        button = page.find_element(By.ID, "learn-1")
        assert not button.is_enabled() and "MIDI is off here" in button.get_attribute("title")
        assert page.find_element(By.ID, "learn-0").is_enabled()
        wait(lambda: int(page.find_element(By.ID, "skipped").text) > 10, what="skipped frames")
        # Frames skipped by --fps are not dropped frames (a loaded machine may drop one or
        # two for real while a slow answer runs; skipped counted as dropped would be > 10).
        assert int(page.find_element(By.ID, "dropped").text) <= 2
        page.save_screenshot(str(tmp_path / "monitor-off.png"))
        if os.environ.get("PETE_SCREENSHOT_OFF"):
            shutil.copy(tmp_path / "monitor-off.png", os.environ["PETE_SCREENSHOT_OFF"])
        # The button's request is refused with the reason, and the show's messages go on.
        request = urllib.request.Request(f"http://127.0.0.1:{port}/learn?route=1", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 409 and b"MIDI is off here" in refused.value.read()
        rc = run.interrupt()
    finally:
        if page is not None:
            page.quit()
        run.kill()
    assert rc == 0
    assert sum("MIDI is off" in l for l in run.err) == 1, run.err  # said once


def test_learn_with_midi_off_says_so_once_and_refuses_a_midi_route(cli_env, tmp_path):
    osc = free_port()
    mapping = tmp_path / "m.yaml"
    mapping.write_text(f"osc:\n  main: {{port: {osc}}}\nmidi:\n  synth: {{port: Pete Sounds}}\n"
                       "routes:\n  - {event: energy, address: /e}\n  - {event: tempo, address: /t}\n"
                       "  - {event: energy, cc: 74}\n")
    env = dict(cli_env, JACK_DEFAULT_SERVER="pete-no-such-server", JACK_NO_START_SERVER="1")
    dump = oscdump(osc)
    try:
        both = subprocess.run(PETE + ["learn", "--mapping", str(mapping), "1", "2", "--seconds",
                                      "0.3", "--delay", "0", "--gap", "0"],
                              capture_output=True, text=True, env=env, timeout=60)
        got = [without_time(l) for l in dump.take(100, timeout=1.0)]
    finally:
        dump.stop()
    assert both.returncode == 0, both.stderr
    assert "MIDI is off" not in both.stderr  # two OSC routes: MIDI is never opened
    assert {l.split(" ")[0] for l in got} == {"/e", "/t"}
    midi = subprocess.run(PETE + ["learn", "--mapping", str(mapping), "1", "3", "--seconds", "0.3"],
                          capture_output=True, text=True, env=env, timeout=60)
    if "MIDI is off" not in midi.stderr:
        pytest.skip("this machine has a MIDI system (an ALSA sequencer)")
    assert midi.returncode == 2, midi.stderr
    [line] = midi.stderr.splitlines()  # one line, and nothing sent (route 1 neither)
    assert line.startswith(f"pete-osc: error: {mapping}:8: route 3 (energy -> CC 74 ch 1 on "
                           "synth) cannot be sent: MIDI is off here (no MIDI system"), line


def test_learn_on_a_chord_route_sends_chords(jack, cli_env, tmp_path):
    mapping = tmp_path / "chords.yaml"
    mapping.write_text("midi:\n  synth: {port: Pete Sounds, channel: 2}\nroutes:\n"
                       "  - chord:\n      root: {from: color, notes: [C, G, D, A, E, B, F#, C#, G#, D#, A#, F]}\n"
                       "      quality: {from: mood, table: {calm: maj7, sad: min}}\n"
                       "      energy: {from: energy, voices: [3, 5]}\n")
    listed = subprocess.run(PETE + ["learn", "--mapping", str(mapping)], capture_output=True,
                            text=True, env=cli_env, timeout=60)
    assert listed.stdout.splitlines()[1] == "  1  color -> chords ch 2 on synth", listed.stdout
    received = learnt_through_jack(mapping, "1", 1.6, cli_env)
    ons = [m for m in received if m.type == "note_on" and m.velocity > 0]
    assert {m.channel for m in received if m.type.startswith("note")} == {1}
    # The first chord: C maj7 with 4 voices at middle energy (C3 E3 G3 B3), then others.
    assert sorted(m.note for m in ons[:4]) == [60, 64, 67, 71], ons
    assert len({m.note for m in ons}) > 8  # the roots went round the colours
    sounding = set()
    for m in received:
        if m.type == "note_on" and m.velocity > 0:
            sounding.add(m.note)
        elif m.type in ("note_on", "note_off"):
            sounding.discard(m.note)
    assert not sounding  # every chord ended
