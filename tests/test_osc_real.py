"""OSC as other programs decode it: liblo's oscdump (UDP, TCP) and Pure Data."""

import socket
import subprocess
import sys
import threading
import time

import pytest
from support.cli import pete
from support.peers import (
    ROOT,
    Lines,
    free_port,
    need,
    ntp_seconds,
    oscdump,
    wait_listening,
    without_time,
)

TEXT = "--- frame 1\nenergy: 0.7\nmood: tense\ncolor: amber\nscene: dark street\n"
EXPECTED = ['/pete/energy f 0.700000', '/pete/mood si "tense" 3',
            '/pete/color siii "amber" 255 191 0', '/pete/color/hsv fff 0.124800 1.000000 1.000000',
            '/pete/scene s "dark street"']


def mapping(tmp_path, port, protocol="udp", extra=""):
    """The default mapping's OSC routes, pointed at ``port``."""
    text = (ROOT / "mappings" / "default.yaml").read_text()
    text = text.replace("main: {host: 127.0.0.1, port: 9000}",
                        f"main: {{host: 127.0.0.1, port: {port}, protocol: {protocol}}}")
    text = text[:text.index("midi:")] + extra + text[text.index("routes:"):]
    text = text[:text.index("  # MIDI CCs")]
    path = tmp_path / "m.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("protocol", ["udp", "tcp"])
def test_oscdump_decodes_each_event(tmp_path, cli_env, protocol):
    port = free_port()
    dump = oscdump(port, protocol)
    try:
        proc = subprocess.run([sys.executable, "-m", "pete_osc", "send", "--mapping",
                               str(mapping(tmp_path, port, protocol))],
                              input=TEXT, capture_output=True, text=True, env=cli_env, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert [without_time(l) for l in dump.take(len(EXPECTED))] == EXPECTED
    finally:
        dump.stop()


def test_bundle_per_frame_with_timetag(tmp_path, cli_env):
    port = free_port()
    dump = oscdump(port)
    try:
        path = mapping(tmp_path, port, extra="bundle: yes\nbundle_delay: 0.5\n")
        two_frames = TEXT + "--- frame 2\nenergy: 0.1\nmood: calm\n"
        before = time.time()
        proc = subprocess.run([sys.executable, "-m", "pete_osc", "send", "--mapping", str(path)],
                              input=two_frames, capture_output=True, text=True, env=cli_env, timeout=60)
        assert proc.returncode == 0, proc.stderr
        lines = dump.take(7)
        assert [without_time(l) for l in lines] == EXPECTED + ['/pete/energy f 0.100000',
                                                               '/pete/mood si "calm" 1']
        first, second = {ntp_seconds(l) for l in lines[:5]}, {ntp_seconds(l) for l in lines[5:]}
        assert len(first) == 1 and len(second) == 1  # each frame: one bundle, one timetag
        # The timetag is the frame's capture time plus the mapping's bundle_delay.
        assert before + 0.5 <= first.pop() < time.time() + 0.5
    finally:
        dump.stop()


def test_tcp_frames_each_message_with_slip(tmp_path, cli_env):
    """OSC 1.1 over TCP: each packet between SLIP END bytes (0xC0), not OSC 1.0's length
    prefix (which oscdump would also accept). Read off the wire with a plain socket."""
    from pythonosc.osc_message import OscMessage

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "pete_osc", "send", "--mapping",
                               str(mapping(tmp_path, port, "tcp"))], input="energy: 0.7\nmood: tense\n",
                              capture_output=True, text=True, env=cli_env, timeout=60)
        assert proc.returncode == 0, proc.stderr
        conn, _ = server.accept()
        with conn:
            wire = b""
            while chunk := conn.recv(4096):
                wire += chunk
    assert wire[:1] == b"\xc0" and wire[-1:] == b"\xc0", wire[:16]
    packets = [p for p in wire.split(b"\xc0") if p]
    assert b"\xdb" not in wire  # no escapes needed for these messages
    decoded = [(m.address, m.params) for m in map(OscMessage, packets)]
    assert decoded == [("/pete/energy", [pytest.approx(0.7)]), ("/pete/mood", ["tense", 3])]


def test_dead_tcp_host_is_logged_once_and_retried(tmp_path, cli_env):
    """Nobody listens for 3 s (about three retry intervals): one warning, not one per
    message or per retry; then the receiver appears and the next message arrives."""
    port = free_port(kind=1)  # SOCK_STREAM
    proc = pete("send", "--mapping", str(mapping(tmp_path, port, "tcp")), env=cli_env)
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        proc.stdin.write("energy: 0.3\n")
        proc.stdin.flush()
        end = time.monotonic() + 30  # the sender is up once it says the host refused
        while not any("Connection refused" in line for line in err):
            assert time.monotonic() < end and proc.poll() is None, "".join(err)
            time.sleep(0.05)
        for _ in range(12):  # 3 s of messages into a dead host: retried, dropped
            proc.stdin.write("energy: 0.3\n")
            proc.stdin.flush()
            time.sleep(0.25)
        dump = oscdump(port, "tcp")
        try:
            time.sleep(1.2)  # past the retry interval
            proc.stdin.write("energy: 0.9\n")
            proc.stdin.close()
            assert proc.wait(30) == 0
            assert [without_time(l) for l in dump.take(1)] == ["/pete/energy f 0.900000"]
        finally:
            dump.stop()
        reader.join(5)
        text = "".join(err)
        assert text.count("Connection refused") == 1, text
        assert text.count("tried again every 1 s") == 1 and "retrying" not in text, text
        assert f"tcp://127.0.0.1:{port}" in text and "is back (13 messages were lost)" in text, text
    finally:
        proc.kill()


def test_pure_data_receives_the_pd_mapping(tmp_path, cli_env):
    """examples/puredata/pete-osc.pd, running in a real Pd, prints what it received."""
    pd = need("pd", "puredata-core")
    port = free_port()
    patch = ROOT / "examples" / "puredata" / "pete-osc.pd"
    receiver = Lines([pd, "-nogui", "-nosound", "-noprefs", "-stderr", "-send", f"pete-port {port}",
                      str(patch)], stderr=True)
    try:
        wait_listening(port, "udp", timeout=10)
        text = (ROOT / "mappings" / "puredata-max.yaml").read_text().replace("port: 9000", f"port: {port}")
        path = tmp_path / "pd.yaml"
        path.write_text(text)
        proc = subprocess.run([sys.executable, "-m", "pete_osc", "send", "--mapping", str(path)],
                              input=TEXT + "tempo: fast\n", capture_output=True, text=True,
                              env=cli_env, timeout=60)
        assert proc.returncode == 0, proc.stderr
        got = [l for l in receiver.take(6, timeout=10) if l.startswith("pete:")]
        assert got == ["pete: energy 0.7", "pete: mood tense 3", "pete: color amber 255 191 0",
                       "pete: color hsv 0.1248 1 1", "pete: scene dark\\ street", "pete: tempo 140"]
    finally:
        receiver.stop()


def test_run_with_default_mapping_reaches_oscdump(tmp_path, cli_env, scripted_mlx_model, shared_video):
    """The whole chain: video -> mlx engine -> tokens on stdout -> events -> OSC -> oscdump."""
    port = free_port()
    text = (ROOT / "mappings" / "default.yaml").read_text().replace("port: 9000", f"port: {port}")
    path = tmp_path / "default.yaml"
    path.write_text(text)
    dump = oscdump(port)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pete_osc", "run", "--engine", "mlx", "--source", str(shared_video), "--model",
             str(scripted_mlx_model), "--size", "64", "--max-frames", "2", "--max-tokens", "14",
             "--constrain", "off", "--every-frame", "--no-warmup", "--mapping", str(path)],
            capture_output=True, text=True, env=cli_env, timeout=300)
        assert proc.returncode == 0, proc.stderr
        # stdout still carries the raw token stream, untouched by the sending
        assert proc.stdout.splitlines() == ["--- frame 0", "energy: 0.7", "energy: 0.7", "energy:",
                                            "--- frame 1", "energy: 0.7", "energy: 0.7", "energy:"]
        assert [without_time(l) for l in dump.take(4)] == ["/pete/energy f 0.700000"] * 4
        assert "events: 4" in proc.stderr and "4 messages sent" in proc.stderr
    finally:
        dump.stop()
