"""MIDI through a real JACK server (jackd -d dummy), read back on a real rtmidi input."""

import os
import signal
import subprocess
import sys
import time

from support.cli import pete
from support.peers import jack_backend, wait_for_port

MAPPING = """\
midi:
  synth: {port: Pete Sounds, channel: 3}
routes:
  - event: energy
    cc: 74
    glide: on
    glide_time: 0.5
    exit: 64
  - event: mood
    program: {calm: 1, tense: 12}
  - event: mood
    note: {tense: C3}
    velocity: 90
    length: 5
"""


def test_cc_glide_program_note_and_exit(tmp_path, jack, cli_env):
    path = tmp_path / "synth.yaml"
    path.write_text(MAPPING)
    env = dict(cli_env, **{k: os.environ[k] for k in ("JACK_DEFAULT_SERVER", "JACK_NO_START_SERVER")})
    proc = pete("send", "--mapping", str(path), "--midi-api", "jack", env=env)
    backend = jack_backend()
    try:
        wait_for_port(backend, "pete-osc:Pete Sounds")
        received = []
        with backend.open_input("pete-osc:Pete Sounds") as port:
            time.sleep(0.3)  # JACK connects on its next cycle
            for line, pause in (("energy: 0.0", 0.3), ("energy: 1.0", 0.9), ("mood: tense", 0.3)):
                proc.stdin.write(line + "\n")
                proc.stdin.flush()
                time.sleep(pause)
            proc.stdin.close()
            assert proc.wait(30) == 0, proc.stderr.read()
            time.sleep(0.3)
            received = [m.bytes() for m in port.iter_pending()]
    finally:
        proc.kill()
    cc = [b[2] for b in received if b[:2] == [0xB2, 74]]
    # The first value jumps; the second glides up as a rising series at the control rate.
    assert cc[0] == 0
    ramp = cc[1:-1]
    assert ramp == sorted(ramp) and ramp[-1] == 127 and len(ramp) >= 15, cc
    rest = [b for b in received if b[:2] != [0xB2, 74]]
    assert rest == [[0xC2, 12], [0x92, 60, 90],          # program, then the note (channel 3)
                    [0x82, 60, 0], [0xB2, 123, 0]]       # at exit: note off, all notes off
    assert cc[-1] == 64                                  # and the cutoff's exit value


def test_sigterm_mid_note_releases_it(tmp_path, jack, cli_env):
    """``pete-osc send`` stopped by a service manager (SIGTERM) while a note sounds: the
    note is released and the command ends as on Ctrl-C, not killed with the note on."""
    path = tmp_path / "synth.yaml"
    path.write_text("midi:\n  synth: {port: Pete Sounds}\nroutes:\n"
                    "  - {event: mood, note: {tense: C3}, length: 30}\n")
    env = dict(cli_env, **{k: os.environ[k] for k in ("JACK_DEFAULT_SERVER", "JACK_NO_START_SERVER")})
    proc = pete("send", "--mapping", str(path), "--midi-api", "jack", env=env)
    backend = jack_backend()
    try:
        wait_for_port(backend, "pete-osc:Pete Sounds")
        with backend.open_input("pete-osc:Pete Sounds") as port:
            time.sleep(0.3)  # JACK connects on its next cycle
            proc.stdin.write("mood: tense\n")
            proc.stdin.flush()
            received, deadline = [], time.monotonic() + 10
            while not received and time.monotonic() < deadline:
                received += [m.bytes() for m in port.iter_pending()]
                time.sleep(0.01)
            proc.send_signal(signal.SIGTERM)  # stdin still open: the note would sound on
            code = proc.wait(10)
            time.sleep(0.3)  # (JACK delivers what was sent last at its next cycle)
            received += [m.bytes() for m in port.iter_pending()]
    finally:
        proc.kill()
    assert code == 0, proc.stderr.read()
    assert received[0] == [0x90, 60, 100] and [0x80, 60, 0] in received, received


def test_existing_port_by_name_and_missing_port(tmp_path, jack, cli_env):
    backend = jack_backend()
    env = dict(cli_env, JACK_DEFAULT_SERVER=jack.name, JACK_NO_START_SERVER="1")
    # A synth's input port, as another program would offer it.
    with backend.open_input("Synth In", virtual=True, client_name="fakesynth") as synth:
        path = tmp_path / "m.yaml"
        path.write_text("midi:\n  out: {port: Synth In}\nroutes:\n  - {event: energy, cc: 1}\n")
        proc = subprocess.run([sys.executable, "-m", "pete_osc", "send", "--mapping", str(path),
                               "--midi-api", "jack"], input="energy: 0.5\n", capture_output=True,
                              text=True, env=env, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert "MIDI 'fakesynth:Synth In' via jack" in proc.stderr
        msg = synth.receive(block=True)
        assert msg.bytes() == [0xB0, 1, 64]
        listed = subprocess.run([sys.executable, "-m", "pete_osc", "ports", "--midi-api", "jack"],
                                capture_output=True, text=True, env=env, timeout=60)
        assert "  fakesynth:Synth In" in listed.stdout.splitlines()

    path.write_text("midi:\n  out: {port: Nord Lead}\nroutes:\n  - {event: energy, cc: 1}\n")
    proc = subprocess.run([sys.executable, "-m", "pete_osc", "send", "--mapping", str(path),
                           "--midi-api", "jack"], input="energy: 0.5\n", capture_output=True,
                          text=True, env=env, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"pete-osc: error: {path}:2: MIDI target 'out': no output port "
                                  "'Nord Lead' (jack); there are: ")
    assert "Traceback" not in proc.stderr




def test_a_note_of_a_route_removed_by_a_reload_ends_at_the_reload(tmp_path, jack, cli_env):
    """A long note sounds; the mapping is saved without its route: the note ends then,
    while the show runs on (not only when it stops)."""
    from support.cli import Run, replace_text

    mapping = tmp_path / "m.yaml"
    note_route = "  - {event: mood, note: {tense: C3}, length: 30}\n"
    text = ("midi:\n  synth: {port: Pete Sounds}\nroutes:\n  - {event: energy, cc: 1}\n"
            + note_route)
    mapping.write_text(text)
    # The note once, two seconds in (a loaded machine may connect the port late), in
    # frames that otherwise do not touch it.
    answer = tmp_path / "answer.txt"
    answer.write_text("energy: 0.0\n" + "".join(
        f"--- frame {i}\n{'mood: tense' + chr(10) if i == 8 else ''}energy: 0.{i % 10}\n"
        for i in range(1, 60)))
    env = dict(cli_env, **{k: os.environ[k] for k in ("JACK_DEFAULT_SERVER", "JACK_NO_START_SERVER")})
    run = Run("--engine", "replay", "--replay", str(answer), "--fps", "4",
              "--mapping", str(mapping), "--midi-api", "jack", "--quiet", env=env)
    backend = jack_backend()
    try:
        wait_for_port(backend, "pete-osc:Pete Sounds")
        with backend.open_input("pete-osc:Pete Sounds") as port:
            def until(found, seconds):
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    for message in port.iter_pending():
                        if found(message):
                            return message
                    time.sleep(0.01)
                return None

            assert until(lambda m: m.type == "note_on" and m.note == 60, 20) is not None
            replace_text(mapping, text.replace(note_route, ""))
            off = until(lambda m: m.type in ("note_off", "note_on") and m.note == 60, 5)
            assert off is not None and (off.type == "note_off" or off.velocity == 0), off
            assert run.proc.poll() is None  # at the reload, while the show goes on
        assert run.interrupt() == 0
    finally:
        run.kill()
