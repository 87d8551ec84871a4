"""pete-osc export: a recording through a mapping into a Standard MIDI File (read back
with mido) and an OSC log, with the show's timing; and the same recording replayed live
into a real JACK MIDI input gives the same messages."""

import json
import os
import subprocess
import sys
import time

import pytest
from support.cli import pete

MAPPING = """\
osc:
  main: {host: 127.0.0.1, port: 9}
midi:
  synth: {port: Pete Sounds, channel: 2}
routes:
  - {event: energy, cc: 74}
  - {event: mood, program: {calm: 1, tense: 12}}
  - {event: mood, note: {tense: C3, calm: E3}, velocity: 90, length: 0.5}
  - {event: energy, address: /e}
"""


def export(tmp_path, recording, cli_env):
    mapping = tmp_path / "m.yaml"
    mapping.write_text(MAPPING)
    out = tmp_path / "show.mid"
    proc = subprocess.run([sys.executable, "-m", "pete_osc", "export", str(recording), "--mapping",
                           str(mapping), "-o", str(out)], capture_output=True, text=True,
                          env=cli_env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return out, proc.stderr


def absolute(path):
    """(seconds, bytes) of every channel message in a MIDI file, merged in time order."""
    import mido

    song = mido.MidiFile(str(path))
    now, out = 0.0, []
    for message in mido.merge_tracks(song.tracks):
        now += mido.tick2second(message.time, song.ticks_per_beat, 500000)
        if not message.is_meta:
            out.append((now, message.bytes()))
    return out


def test_export_keeps_the_recorded_timing(tmp_path, cli_env):
    recording = tmp_path / "rec.jsonl"
    recording.write_text("".join(json.dumps(r) + "\n" for r in [
        {"frame": 0, "s": 0.0, "t": 0.20, "text": "energy: 0.5\n"},
        {"frame": 0, "s": 0.0, "t": 0.25, "text": "", "finish": "stop"},
        {"frame": 1, "s": 1.0, "t": 0.10, "text": "mood: tense\n"},
        {"frame": 1, "s": 1.0, "t": 0.30, "text": "energy: 1\n"},
        {"frame": 1, "s": 1.0, "t": 0.30, "text": "", "finish": "stop"},
        {"frame": 2, "s": 2.0, "t": 0.20, "text": "", "finish": "stop"}]))
    out, said = export(tmp_path, recording, cli_env)
    assert "3 events" in said and "MIDI messages" in said
    got = absolute(out)
    expected = [(0.2, [0xB1, 74, 64]), (1.1, [0xC1, 12]), (1.1, [0x91, 60, 90]),
                (1.3, [0xB1, 74, 127]), (1.6, [0x81, 60, 0])]  # the show ends at 2.2
    assert [b for _, b in got] == [b for _, b in expected]
    for (t, _), (want, _) in zip(got, expected):
        assert t == pytest.approx(want, abs=0.021)  # note off on the 50 Hz control tick
    osc = [json.loads(l) for l in out.with_suffix(".osc.jsonl").read_text().splitlines()]
    assert [(round(o["t"], 3), o["address"], o["args"]) for o in osc] == [
        (0.2, "/e", [0.5]), (1.3, "/e", [1.0])]


def test_exported_file_matches_a_live_replay_into_jack(tmp_path, cli_env):
    from support.peers import Jack, jack_backend, wait_for_port

    answers = tmp_path / "answers.txt"
    # (The first frame says nothing: the live run's JACK input connects meanwhile.)
    answers.write_text("--- frame 0\nwarming up\n--- frame 1\nenergy: 0.2\nmood: calm\n"
                       "--- frame 2\nmood: tense\nenergy: 0.9\n--- frame 3\nenergy: 0.4\nmood: calm\n")
    recording = tmp_path / "rec.jsonl"
    made = subprocess.run([sys.executable, "-m", "pete_osc", "run", "--engine", "replay", "--replay",
                           str(answers), "--max-frames", "4", "--fps", "1", "--record",
                           str(recording), "--source", "none"],
                          capture_output=True, text=True, env=cli_env, timeout=120)
    assert made.returncode == 0, made.stderr
    starts = sorted({json.loads(l)["s"] for l in recording.read_text().splitlines()})
    assert len(starts) == 4 and starts[1] > 0.5  # one frame a second, as it ran
    out, _ = export(tmp_path, recording, cli_env)
    exported = absolute(out)

    server = Jack()
    env = dict(cli_env, JACK_DEFAULT_SERVER=server.name, JACK_NO_START_SERVER="1")
    saved = {k: os.environ.get(k) for k in ("JACK_DEFAULT_SERVER", "JACK_NO_START_SERVER")}
    os.environ.update(JACK_DEFAULT_SERVER=server.name, JACK_NO_START_SERVER="1")
    mapping = tmp_path / "m.yaml"
    try:
        backend = jack_backend()
        live = pete("run", "--engine", "replay", "--replay", str(recording), "--max-frames", "4",
                    "--fps", "1", "--source", "none", "--mapping", str(mapping), "--midi-api",
                    "jack", env=env)
        wait_for_port(backend, "pete-osc:Pete Sounds")
        received = []
        with backend.open_input("pete-osc:Pete Sounds") as port:
            end = time.monotonic() + 60
            while live.poll() is None and time.monotonic() < end:
                for message in port.iter_pending():
                    received.append((time.monotonic(), message.bytes()))
                time.sleep(0.002)
            time.sleep(0.3)
            received += [(time.monotonic(), m.bytes()) for m in port.iter_pending()]
        assert live.returncode == 0, live.stderr.read()
    finally:
        server.stop()
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    # The live show ends with all notes off (CC 123) on the note channel; the file has no end.
    live_bytes = [b for _, b in received if b[:2] != [0xB1, 123]]
    assert live_bytes == [b for _, b in exported], (live_bytes, exported)
    # The same timing, from the first message (live: as received; frames as recorded).
    first = received[0][0]
    for (t_live, _), (t_file, _) in zip([r for r in received if r[1][:2] != [0xB1, 123]], exported):
        assert (t_live - first) == pytest.approx(t_file - exported[0][0], abs=0.15), (
            [(round(t - first, 3), b) for t, b in received], [(round(t - exported[0][0], 3), b) for t, b in exported])


@pytest.mark.parametrize("case", ["missing folder", "no recording", "binary file"])
def test_export_problems_are_one_line_naming_the_file(tmp_path, cli_env, case):
    mapping = tmp_path / "m.yaml"
    mapping.write_text(MAPPING)
    recording = tmp_path / "show.jsonl"
    recording.write_text(json.dumps({"frame": 0, "t": 0.1, "text": "energy: 0.5\n"}) + "\n")
    out = tmp_path / "show.mid"
    if case == "missing folder":
        out = tmp_path / "no-such-folder" / "show.mid"
        named = f"-o {out}: no folder {out.parent}"
    elif case == "no recording":
        recording = tmp_path / "notes.txt"
        recording.write_text("Bring the blue cable.\nCall the venue.\n")
        named = f"{recording}: no event in it"
    else:
        recording = tmp_path / "clip.mp4"
        recording.write_bytes(bytes(range(256)) * 64)
        named = f"{recording}: no event in it"
    proc = subprocess.run([sys.executable, "-m", "pete_osc", "export", str(recording), "--mapping",
                           str(mapping), "-o", str(out)], capture_output=True, text=True,
                          env=cli_env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"pete-osc: error: {named}"), proc.stderr
    assert not out.exists()
