"""Mapping files: the shipped ones load; a bad one is refused with file, line and reason."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pete_osc.errors import PeteError
from pete_osc.mapping.fields import note_number
from pete_osc.mapping.load import load_mapping, parse_mapping

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "mappings").glob("*.yaml"))

GOOD = """\
osc:
  main: {host: 127.0.0.1, port: 9000}
midi:
  synth: {port: Pete Sounds}
routes:
  - event: energy
    address: /pete/energy
  - event: energy
    cc: 74
"""


def test_four_mappings_ship():
    assert {p.name for p in SHIPPED} >= {"default.yaml", "ableton.yaml", "synth-midi.yaml",
                                         "puredata-max.yaml"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_mapping_loads(path, director):
    mapping = load_mapping(path, director)
    assert mapping.routes
    # Each file is commented for a musician: at least one comment per route on average.
    text = path.read_text()
    assert text.count("#") >= len(mapping.routes) // 2


def test_shipped_mappings_follow_their_conventions(director):
    ableton = load_mapping(ROOT / "mappings" / "ableton.yaml", director)
    assert ableton.osc["live"].port == 11000
    assert {r.address for r in ableton.routes} >= {"/live/song/set/tempo",
                                                   "/live/device/set/parameter/value"}
    synth = load_mapping(ROOT / "mappings" / "synth-midi.yaml", director)
    assert {r.number for r in synth.routes if r.kind == "cc"} >= {74, 71, 91}
    assert any(r.kind == "program" and r.table for r in synth.routes)


def test_good_mapping_defaults(director):
    m = parse_mapping(GOOD, director)
    osc, cc = m.routes
    assert (osc.target, osc.kind, osc.args, osc.glide) == ("main", "osc", ("$value",), "")
    assert (cc.target, cc.kind, cc.number, cc.channel) == ("synth", "cc", 74, 1)
    assert (cc.shape.lo, cc.shape.hi, cc.shape.out_lo, cc.shape.out_hi) == (0, 1, 0, 127)
    assert m.midi["synth"].virtual  # our own port is created, not looked for


def _replace(old, new):
    assert old in GOOD
    return GOOD.replace(old, new)


BAD = [
    # (mapping text, line, words the message must contain)
    (_replace("event: energy\n    cc", "event: energi\n    cc"), 8, ["unknown event 'energi'", "energy"]),
    (_replace("/pete/energy", "pete/energy"), 7, ["must start with /"]),
    (_replace("cc: 74", "cc: 128"), 9, ["controller number must be 0..127", "128"]),
    (_replace("cc: 74", "cc: 74\n    curv: exponential"), 10, ["unknown cc route setting 'curv'", "curve"]),
    (_replace("cc: 74", "cc: 74\n    to: pd"), 10, ["'to: pd' is not one of the MIDI targets", "synth"]),
    (_replace("port: 9000", "port: 90000"), 2, ["port must be 1..65535"]),
    (_replace("{port: Pete Sounds}", "{port: Pete Sounds, channel: 17}"), 4, ["channel must be 1..16"]),
    (_replace("cc: 74", "cc: 74\n    glide: fast"), 10, ["glide must be on, off, linear or smooth"]),
    (_replace("cc: 74", "cc: 74\n    out: [0, 200]"), 10, ["cc values are 0..127"]),
    (_replace("cc: 74", "cc: 74\n    curve: wobbly"), 10, ["curve must be one of"]),
    (_replace("address: /pete/energy", "address: /pete/energy\n    args: [$valeu]"), 8,
     ["unknown field '$valeu'"]),
    (_replace("event: energy\n    cc: 74", "event: mood\n    cc: 74"), 8, ["is a word", "table"]),
    (_replace("event: energy\n    cc: 74", "event: mood\n    program: {calm: 1, grumpy: 5}"), 9,
     ["'grumpy' is not a mood"]),
    (_replace("event: energy\n    cc: 74", "event: energy\n    note: H3"), 9, ["note must be 0..127 or a name"]),
    (_replace("    cc: 74", "    cc: 74\n    address: /x"), 8, ["exactly one of", "osc, cc"]),
    (_replace("osc:", "oscc:"), 1, ["unknown setting 'oscc'", "osc"]),
    ("routes: [\n  {event: energy\n", 2, ["YAML syntax error"]),  # where the { opened
    (GOOD.replace("midi:\n  synth: {port: Pete Sounds}\n", ""), 6,
     ["this cc route needs 'to:'", "none declared"]),
    ("routes:\n  - {event: energy, cc: 1}\n", 1, ["no targets"]),
]


@pytest.mark.parametrize("text,line,words", BAD, ids=[b[2][0][:30] for b in BAD])
def test_bad_mapping_names_file_and_line(director, text, line, words):
    with pytest.raises(PeteError) as info:
        parse_mapping(text, director, Path("mine.yaml"))
    message = str(info.value)
    assert message.startswith(f"mine.yaml:{line}: "), message
    for word in words:
        assert word in message, message
    assert "\n" not in message


@pytest.mark.parametrize("name,number", [("C3", 60), ("C-2", 0), ("F#3", 66), ("Bb2", 58),
                                         ("G8", 127), (61, 61), ("G#8", None), (128, None), ("H1", None)])
def test_note_names(name, number):
    assert note_number(name) == number


def test_cli_refuses_bad_mapping_before_opening_anything(tmp_path, cli_env):
    bad = tmp_path / "bad.yaml"
    bad.write_text(_replace("cc: 74", "cc: 300"))
    # Nothing opens (no port, no model): the mapping is refused in one line with its line
    # number; run names the other problems found at start too (camera 7 does not exist).
    wrong = f"pete-osc: error: {bad}:9: controller number must be 0..127, got 300"
    for argv in (["run", "--source", "7", "--mapping", str(bad), "--engine", "replay",
                  "--replay", str(bad)],
                 ["send", "--mapping", str(bad), "/dev/null"]):
        proc = subprocess.run([sys.executable, "-m", "pete_osc", *argv], capture_output=True,
                              text=True, env=cli_env, timeout=60)
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert lines[0] == wrong
        assert lines[1:] == (["pete-osc: error: camera 7 could not be opened: check that it is "
                              "connected and that this terminal may use the camera (macOS: "
                              "System Settings > Privacy & Security > Camera), or try --source 1, "
                              "a video file or a folder"] if argv[0] == "run" else [])


@pytest.mark.parametrize("route,message", [
    ("{event: energy, address: '/pete/{src}/e'}", "the only placeholder an address may hold is {source}"),
    ("{event: energy, address: /e, source: 'my cam'}", "source must be a source's name"),
])
def test_source_placeholders_are_checked(director, route, message):
    with pytest.raises(PeteError, match=re.escape(message)):
        parse_mapping(f"osc:\n  main: {{port: 9000}}\nroutes:\n  - {route}\n", director)


@pytest.mark.parametrize("listen,expected", [
    ("listen: 9100", (9100, "127.0.0.1", None)),
    ("listen: {port: 11001, ableton: yes}", (11001, "127.0.0.1", "127.0.0.1:11000")),
    ("listen: {host: 0.0.0.0, ableton: '10.0.0.5:11000'}", (11001, "0.0.0.0", "10.0.0.5:11000")),
])
def test_listen_sets_the_context_input(director, listen, expected):
    mapping = parse_mapping(f"osc:\n  main: {{port: 9000}}\n{listen}\n"
                            "routes:\n  - {event: energy, address: /e}\n", director)
    assert (mapping.listen.port, mapping.listen.host, mapping.listen.ableton) == expected
    assert mapping.listen.line == 3


@pytest.mark.parametrize("listen,message", [
    ("listen: {port: 0}", r"mapping.yaml:3: listen port must be 1..65535, got 0"),
    ("listen: {prot: 9100}", r"mapping.yaml:3: .*'prot'.*did you mean 'port'"),
    ("listen: [9100]", r"mapping.yaml:3: listen must be a port or"),
])
def test_a_bad_listen_is_refused_with_its_line(director, listen, message):
    with pytest.raises(PeteError, match=message):
        parse_mapping(f"osc:\n  main: {{port: 9000}}\n{listen}\n"
                      "routes:\n  - {event: energy, address: /e}\n", director)
