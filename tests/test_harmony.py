"""Harmony from the picture: chord routes (colour -> root, mood -> quality, energy ->
voices and velocity, brightness -> register), voice leading, and the exact notes through
a real JACK MIDI input."""

import os
import time

import pytest
from support.cli import pete
from support.midi import data

from pete_osc.errors import PeteError
from pete_osc.mapping.harmony import QUALITIES, pitch_class, root_of, voicing
from pete_osc.mapping.load import parse_mapping
from pete_osc.mapping.router import Router
from pete_osc.records import Event, MidiMessage

ROOT_MAPPING = os.path.join(os.path.dirname(__file__), "..", "mappings", "harmony.yaml")


@pytest.mark.parametrize("rgb, root", [
    ((255, 0, 0), "C"), ((255, 165, 0), "G"), ((255, 255, 0), "D"), ((127, 255, 0), "A"),
    ((0, 255, 0), "E"), ((0, 255, 255), "F#"), ((0, 0, 255), "G#"), ((255, 0, 255), "A#"),
    ((200, 200, 200), None), ((10, 10, 10), None)])
def test_hue_picks_the_root_round_the_circle_of_fifths(rgb, root):
    fifths = tuple(pitch_class(n) for n in "C G D A E B F# C# G# D# A# F".split())
    assert root_of(rgb, fifths) == (None if root is None else pitch_class(root))


def test_voice_leading_moves_least_and_keeps_common_tones():
    c_maj7 = voicing(0, QUALITIES["maj7"], 4, 3)
    assert c_maj7 == (60, 64, 67, 71)  # root position, C3 = 60
    # To A minor: C and E stay, G and B move a whole tone and a tone to A (first inversion).
    assert voicing(9, QUALITIES["min"], 3, 3, c_maj7) == (60, 64, 69)
    # Without a chord sounding, root position in the register.
    assert voicing(9, QUALITIES["min"], 3, 3) == (69, 72, 76)
    assert voicing(0, QUALITIES["maj"], 5, 2) == (48, 52, 55, 60, 64)  # 5 voices: stacked


FRAMES = [  # (lines of one frame, the messages at its end)
    (["color: red", "mood: calm", "energy: 0.4", "brightness: 0.5"],
     [(0x90, 60, 73), (0x90, 64, 73), (0x90, 67, 73), (0x90, 71, 73)]),  # C maj7, 4 voices
    (["color: chartreuse", "mood: sad", "energy: 0", "brightness: 0.5"],
     [(0x80, 67, 0), (0x80, 71, 0), (0x90, 69, 45)]),  # A min: C and E keep sounding
    (["color: white", "mood: sad", "energy: 0", "brightness: 0.5"], []),  # no hue: no change
    (["color: red", "mood: calm", "energy: 0", "brightness: 0.5"],
     [(0x80, 69, 0), (0x90, 67, 45)]),  # C maj7, 3 voices: C E G
    # 5 voices: before the fix the inversion step doubled C (59, 60, 60, 64, 67); now
    # the two new voices stack above, and no key is sent twice.
    (["color: red", "mood: calm", "energy: 0.7", "brightness: 0.5"],
     [(0x90, 71, 94), (0x90, 72, 94)]),
]
SOUNDING_AT_END = [(0x80, 60, 0), (0x80, 64, 0), (0x80, 67, 0), (0x80, 71, 0), (0x80, 72, 0)]


def events(lines):
    from pete_osc.director.parser import parse_text_stream
    from pete_osc.director.schema import load_director

    d = load_director(os.path.join(os.path.dirname(__file__), "..", "DIRECTOR.md"))
    return [r for r in parse_text_stream(d, ["\n".join(lines) + "\n"]) if isinstance(r, Event)]


def test_the_chord_changes_at_the_frames_end(director):
    mapping = parse_mapping(open(ROOT_MAPPING).read(), director)
    router = Router(mapping)
    for lines, expected in FRAMES:
        for ev in events(lines):
            sent = router.event(ev, 0.0)
            assert not any(isinstance(m, MidiMessage) and m.message.type in ("note_on", "note_off")
                           for m in sent)
        assert [data(m) for m in router.end_frame(1.0)] == expected
    assert sorted(data(m) for m in router.closing() if data(m)[0] == 0x80) == SOUNDING_AT_END


@pytest.mark.parametrize("old, new, message", [
    ("calm: maj7", "calm: maj13", "unknown chord quality 'maj13'"),
    ("calm: maj7", "serene: maj7", "'serene' is not a mood"),
    ("root: {from: color", "root: {from: mood", "'from' must name a color key"),
    ("notes: [C, G]", "notes: [C, H]", "chord root notes must be a list of note names"),
])
def test_bad_chord_routes_are_refused_with_the_line(director, old, new, message):
    text = ("midi:\n  synth: {port: Pete Sounds}\nroutes:\n  - chord:\n"
            "      root: {from: color, notes: [C, G]}\n"
            "      quality: {from: mood, table: {calm: maj7, sad: min}}\n")
    parse_mapping(text, director)  # as written, fine
    with pytest.raises(PeteError, match=r"mapping.yaml:[56]: .*" + message):
        parse_mapping(text.replace(old, new), director)


def test_exact_notes_through_jack(tmp_path, cli_env):
    from support.peers import Jack, jack_backend, wait_for_port

    server = Jack()
    env = dict(cli_env, JACK_DEFAULT_SERVER=server.name, JACK_NO_START_SERVER="1")
    saved = {k: os.environ.get(k) for k in ("JACK_DEFAULT_SERVER", "JACK_NO_START_SERVER")}
    os.environ.update(JACK_DEFAULT_SERVER=server.name, JACK_NO_START_SERVER="1")
    try:
        proc = pete("send", "--mapping", "harmony", "--midi-api", "jack", env=env)
        backend = jack_backend()
        wait_for_port(backend, "pete-osc:Pete Sounds")
        with backend.open_input("pete-osc:Pete Sounds") as port:
            time.sleep(0.3)  # JACK connects on its next cycle
            for number, (lines, _) in enumerate(FRAMES):
                proc.stdin.write(f"--- frame {number}\n" + "\n".join(lines) + "\n")
                proc.stdin.flush()
                time.sleep(0.4)
            proc.stdin.close()
            assert proc.wait(30) == 0, proc.stderr.read()
            time.sleep(0.3)
            received = [tuple(m.bytes()) for m in port.iter_pending()]
    finally:
        proc.kill()
        server.stop()
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    notes = [m for m in received if m[0] & 0xE0 == 0x80]  # note on/off, channel 1
    expected = [m for _, frame in FRAMES for m in frame]
    # The CCs (mod wheel, cutoff, expression) ride along; the notes are exactly these,
    # then at exit the sounding notes end and all notes off follows.
    assert notes[:len(expected)] == expected
    assert sorted(notes[len(expected):]) == SOUNDING_AT_END
    assert received[-1] == (0xB0, 123, 0)


def test_each_colours_sector_is_centred_on_its_note():
    """The hue circle is cut so that each note's hue is the middle of its sector: a red
    that leans to pink (hue 0.97) and one that leans to orange (hue 0.03) are both C."""
    fifths = tuple(pitch_class(n) for n in "C G D A E B F# C# G# D# A# F".split())
    assert root_of((255, 0, 40), fifths) == pitch_class("C")  # hue 0.974
    assert root_of((255, 40, 0), fifths) == pitch_class("C")  # hue 0.026
    assert root_of((255, 0, 90), fifths) == pitch_class("F")  # hue 0.94: the next sector
