"""The rule of every note route, chord or not, as a property over random shows: a key is
never turned on while it sounds on that channel, every note-on gets exactly one note-off,
and when the show ends (exit, reload, the end of a source) nothing is left sounding."""

from __future__ import annotations

import mido
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.events import ev as support_ev
from support.midi import midi

from pete_osc.director.values import parse_color
from pete_osc.mapping.harmony import QUALITIES
from pete_osc.mapping.load import parse_mapping
from pete_osc.mapping.notes import Keys
from pete_osc.mapping.router import Router
from pete_osc.records import MidiMessage

MOODS = ["calm", "happy", "tense", "sad", "dark", "dreamy", "energetic", "playful",
         "mysterious", "angry"]
COLORS = ["red", "orange", "yellow", "chartreuse", "green", "cyan", "blue", "purple",
          "magenta", "white", "black", "grey", "amber", "teal"]


class Sounding:
    """What a synth on the other end hears: the keys held per (target, channel)."""

    def __init__(self):
        self.held: set = set()
        self.ons = self.offs = 0

    def hear(self, messages):
        for m in messages:
            if not isinstance(m, MidiMessage):
                continue
            msg = m.message
            if msg.type == "control_change" and msg.control == 123:
                self.held = {k for k in self.held if k[:2] != (m.target, msg.channel)}
                continue
            if msg.type not in ("note_on", "note_off"):
                continue
            key = (m.target, msg.channel, msg.note)
            if msg.type == "note_on" and msg.velocity > 0:
                assert key not in self.held, f"note on {key} while it sounds"
                self.held.add(key)
                self.ons += 1
            else:
                assert key in self.held, f"note off {key} that was not sounding"
                self.held.remove(key)
                self.offs += 1


def mapping_text(voices, octaves, qualities, note_route, second_chord, grid):
    table = "\n".join(f"          {mood}: \"{q}\"" for mood, q in qualities.items())
    chord = f"""  - chord:
      root: {{from: color, notes: [C, G, D, A, E, B, F#, C#, G#, D#, A#, F]}}
      quality:
        from: mood
        table:
{table}
      energy: {{from: energy, voices: [{voices[0]}, {voices[1]}], velocity: [40, 120]}}
      register: {{from: brightness, octaves: [{octaves[0]}, {octaves[1]}]}}
    channel: 1
"""
    text = "midi:\n  synth: {port: Pete Sounds, channel: 1}\n"
    if grid:
        text += "clock: {source: link}\n"
    text += "routes:\n" + chord
    if second_chord:  # a second chord route on the same channel, a register apart
        text += chord.replace(f"octaves: [{octaves[0]}, {octaves[1]}]",
                              f"octaves: [{octaves[1]}, {octaves[1]}]")
    if note_route:  # a melody on the same channel: tempo picks a note of the chord's range
        text += ("  - {event: tempo, note: {slow: 60, medium: 64, fast: 67}, channel: 1, "
                 "length: 0.3}\n")
    return text


EXTRA_COLORS = {"amber": "#ffbf00", "teal": "#008080"}  # as DIRECTOR.md names them


def ev(key, value, frame=0):
    kinds = {"color": "color", "mood": "word"}
    if key == "color":
        value = parse_color(value, EXTRA_COLORS)
    return support_ev(key, value, kinds.get(key, "number"), frame, "cam", 0.0, 0.0)


# One frame's answer: each key present or not (a model may leave one out), then the
# frame's end, some control-rate ticks, and now and then a reloaded mapping.
frame = st.fixed_dictionaries({}, optional={
    "color": st.sampled_from(COLORS), "mood": st.sampled_from(MOODS),
    "energy": st.floats(0, 1), "brightness": st.floats(0, 1),
    "tempo": st.sampled_from([80.0, 110.0, 140.0]),
}).flatmap(lambda lines: st.tuples(st.just(lines), st.floats(0.0, 0.6),
                                   st.sampled_from([None] * 8 + [True, False])))
voices = st.tuples(st.integers(1, 7), st.integers(1, 7)).map(sorted).map(tuple)
octaves = st.tuples(st.integers(0, 6), st.integers(0, 6)).map(sorted).map(tuple)
qualities = st.dictionaries(st.sampled_from(MOODS), st.sampled_from(sorted(QUALITIES)),
                            min_size=1)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(voices=voices, octaves=octaves, qualities=qualities, note_route=st.booleans(),
       second_chord=st.booleans(), frames=st.lists(frame, max_size=40))
def test_no_key_twice_and_every_note_released(director, voices, octaves, qualities,
                                              note_route, second_chord, frames):
    text = mapping_text(voices, octaves, qualities, note_route, second_chord, grid=False)
    mapping = parse_mapping(text, director)
    router = Router(mapping)
    synth = Sounding()
    now = 0.0
    for number, (lines, wait, reload) in enumerate(frames):
        for key, value in lines.items():
            synth.hear(router.event(ev(key, value, number), now))
        synth.hear(router.end_frame(now))
        if not note_route and not second_chord:  # one chord: exactly its keys sound
            (state,) = router._states[0].values()
            wanted = {("synth", 0, n) for n in state.harmony.sounding}
            assert synth.held == wanted and len(wanted) == len(state.harmony.sounding)
        for _ in range(int(wait / 0.1)):
            now += 0.1
            synth.hear(router.tick(now))
        if reload is not None:  # an edited mapping: the melody route goes or comes back
            edited = parse_mapping(mapping_text(voices, octaves, qualities, reload,
                                                second_chord, grid=False), director)
            router, released = router.reloaded(edited)
            synth.hear(released)
    synth.hear(router.closing())
    assert synth.held == set(), f"left sounding: {sorted(synth.held)}"
    assert synth.ons == synth.offs


def test_the_voicing_that_doubled_a_key_is_five_keys(director):
    """The case found by hand: five voices of a dim7 after a chord, where the inversion step
    put a root on its own octave double (57, 60, 60, 63, 66)."""
    from pete_osc.mapping.harmony import voicing

    notes = voicing(0, (0, 3, 6, 9), 5, 1, (55, 59, 62, 65, 67))
    assert len(set(notes)) == 5, notes


def test_two_routes_holding_one_key_send_one_on_and_one_off():
    keys = Keys()
    on = midi("synth", 0x90, 60, 100)
    off = midi("synth", 0x80, 60, 0)
    assert keys.filter([on]) == [on]
    assert keys.filter([on]) == []  # the second route's hold: no second note-on
    assert keys.filter([off]) == []  # one route still holds it
    assert keys.filter([off]) == [off]  # the last hold ends it
    assert keys.filter([off]) == []  # nobody holds it: nothing to end
    assert keys.filter([on]) == [on]
    assert keys.release_all() == [midi("synth", 0x80, 60, 0)]
    assert keys.sounding() == []


def test_export_of_a_varied_recording_through_harmony(tmp_path, cli_env):
    """The defect as found: a recording of varied frames exported through the shipped
    harmony mapping; the MIDI file has no key on twice and every note ends."""
    import itertools
    import json
    import subprocess
    import sys

    from support.peers import ROOT

    lines = []
    combos = itertools.islice(itertools.product(COLORS[:9], MOODS, [0.0, 0.35, 0.7, 1.0],
                                                [0.1, 0.5, 0.9]), 0, None, 7)
    for frame, (color, mood, energy, brightness) in enumerate(itertools.islice(combos, 48)):
        text = f"color: {color}\nmood: {mood}\nenergy: {energy}\nbrightness: {brightness}\n"
        for i, piece in enumerate(text.splitlines(keepends=True)):
            lines.append({"frame": frame, "t": 0.05 * (i + 1), "s": 0.5 * frame, "text": piece})
        lines.append({"frame": frame, "t": 0.25, "s": 0.5 * frame, "text": "", "finish": "stop"})
    recording = tmp_path / "show.jsonl"
    recording.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "show.mid"
    proc = subprocess.run([sys.executable, "-m", "pete_osc", "export", str(recording),
                           "--mapping", "harmony", "-o", str(out)],
                          capture_output=True, text=True, env=cli_env, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    synth = Sounding()
    for track in mido.MidiFile(str(out)).tracks:
        for msg in track:
            if not msg.is_meta:
                synth.hear([MidiMessage("synth", msg)])
    assert synth.ons > 60, synth.ons  # the chords really changed
    assert synth.held == set() and synth.ons == synth.offs
