"""MIDI through a real JACK server (jackd -d dummy), read back on a real rtmidi input."""

import os
import subprocess
import sys
import time

import pytest

from peers import Jack, pete

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


@pytest.fixture(scope="module")
def jack():
    server = Jack()
    saved = {k: os.environ.get(k) for k in ("JACK_DEFAULT_SERVER", "JACK_NO_START_SERVER")}
    os.environ.update(JACK_DEFAULT_SERVER=server.name, JACK_NO_START_SERVER="1")
    yield server
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


def jack_backend():
    import mido

    return mido.Backend("mido.backends.rtmidi/UNIX_JACK", load=True)


def wait_for_port(backend, name, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if name in backend.get_input_names():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{name} never appeared; ports: {backend.get_input_names()}")


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


