"""Context across frames and the DAW in the prompt: placeholders checked in DIRECTOR.md,
filled in per frame, fed by a real OSC sender (liblo's oscsend), and the listen requests
AbletonOSC gets (seen by oscdump)."""

import json
import socket
import subprocess
import sys

import pytest
from support.cli import Run
from support.events import ev
from support.peers import ROOT, free_port, need, oscdump, without_time

from pete_osc.director.prompt import Answers, answer_line, clean, render
from pete_osc.director.schema import parse_director
from pete_osc.errors import PeteError
from pete_osc.mapping.load import parse_mapping
from pete_osc.mapping.router import Router
from pete_osc.records import Event, OscMessage

INSTRUCTION = ("Describe this frame. Before: {previous}. Tempo {daw.tempo}, "
               "section {context.section}.")


def director_text(instruction=INSTRUCTION, previous=1):
    text = (ROOT / "DIRECTOR.md").read_text()
    text = text.replace("instruction: Describe this frame.", f"instruction: {json.dumps(instruction)}", 1)
    return text.replace("keys:\n", f"previous: {previous}\nkeys:\n", 1)


def test_render_fills_each_placeholder():
    answers = Answers(2)
    assert render(INSTRUCTION, answers.of("s"), {}, {}) == (
        "Describe this frame. Before: none yet. Tempo unknown, section unknown.")
    answers.add("s", [ev("energy", 0.7), ev("mood", "tense")])
    answers.add("s", [ev("energy", 0.2)])
    answers.add("s", [ev("energy", 0.9)])  # only the last two are kept
    answers.add("other", [ev("energy", 0.1)])  # another source's answers are its own
    assert render(INSTRUCTION, answers.of("s"), {"tempo": 128.0}, {"section": "chorus"}) == (
        "Describe this frame. Before: energy 0.2 | energy 0.9. Tempo 128, section chorus.")
    assert answer_line([ev("energy", 0.7), ev("mood", "tense")]) == "energy 0.7, mood tense"


def test_values_from_the_network_are_cut_to_one_short_line():
    hostile = "a" * 500 + "\n/pete/energy\x00\x1b[2J"
    assert clean(hostile) == "a" * 64
    assert clean("two\nlines\tand\x00nul") == "two lines and nul"


def test_director_places_per_frame_values_after_the_image():
    director = parse_director(director_text(previous=3))
    assert director.placeholders == ("previous", "daw.tempo", "context.section")
    assert director.previous == 3
    assert "{previous}" not in director.prompt


@pytest.mark.parametrize("text,message", [
    (lambda t: t.replace("\n{keys}\n", "\n{keys}\nEarlier: {previous}\n", 1),
     r"DIRECTOR.md:\d+: unknown placeholder \{previous\} in the prompt; it takes \{keys\}; "
     r"values that change per frame go in the schema's context: \(before the image\) or "
     r"instruction: \(after it\)"),
    (lambda t: t.replace("\n{keys}\n", "\n{keys}\nMood was {mood}\n", 1),
     r"DIRECTOR.md:\d+: unknown placeholder \{mood\} in the prompt; it takes \{keys\}$"),
    (lambda t: director_text("Describe it. {weather}"),
     r"DIRECTOR.md:\d+: unknown placeholder \{weather\} in the instruction"),
    (lambda t: director_text(previous=11), r"previous must be a whole number 0..10"),
    (lambda t: t.replace("keys:\n", "context: Before {previos}\nkeys:\n", 1),
     r"DIRECTOR.md:\d+: unknown placeholder \{previos\} in the context"),
])
def test_unknown_placeholders_are_refused_with_file_and_line(text, message):
    with pytest.raises(PeteError, match=message):
        parse_director(text((ROOT / "DIRECTOR.md").read_text()))


def test_a_route_can_wait_for_the_daw(director):
    mapping = parse_mapping("osc:\n  main: {port: 9000}\nroutes:\n"
                            "  - {event: energy, address: /e, when: {playing: true}}\n"
                            "  - {event: energy, address: /chorus, when: {section: chorus}}\n",
                            director)
    state = {}
    router = Router(mapping, state)
    energy = Event("energy", "number", 0.5, "", 1, 0, "s", 0.0, 0.0)
    assert router.event(energy, 0.0) == []  # nothing known yet: silent
    state.update(playing=True, section="Chorus")
    assert [m.address for m in router.event(energy, 1.0)] == ["/e", "/chorus"]
    state["playing"] = False
    assert router.event(energy, 2.0) == [OscMessage("main", "/chorus", (0.5,), 0, 0.0)]


def test_the_daw_and_context_reach_the_next_frames_prompt(scripted_torch_model, cli_env, tmp_path):
    """oscsend (liblo) feeds the input during a run; the instruction the engine got for a
    later frame (in --metrics) holds the values, cut where hostile; the prefix is not
    prefilled again: only the image and the instruction, whose length follows the context."""
    oscsend = need("oscsend", "liblo-tools")
    director = tmp_path / "DIRECTOR.md"
    director.write_text(director_text())
    port = free_port()
    metrics = tmp_path / "metrics.jsonl"
    folder = tmp_path / "stills"
    from support.cli import stills

    stills(folder)
    run = Run("--model", str(scripted_torch_model), "--size", "64", "--fps", "0",
              "--max-tokens", "8", "--constrain", "off", "--no-warmup", "--loop", "--source", str(folder),
              "--director", str(director), "--context-port", str(port),
              "--metrics", str(metrics), env=cli_env)
    records = lambda: [json.loads(l) for l in metrics.read_text().splitlines()] if metrics.exists() else []  # noqa: E731
    try:
        run.wait_for(lambda: len(records()) >= 2, what="two frames")
        subprocess.run([oscsend, "127.0.0.1", str(port), "/live/song/get/tempo", "f", "128.5"], check=True)
        subprocess.run([oscsend, "127.0.0.1", str(port), "/pete/context/section", "s",
                        "chorus " + "x" * 300], check=True)
        sent_at = len(records())
        run.wait_for(lambda: any("128.5" in (r["instruction"] or "") for r in records()[sent_at:]),
                     what="the values in a prompt")
        rc = run.interrupt()
    finally:
        run.kill()
    assert rc == 0
    rs = records()
    assert rs[0]["instruction"].startswith("Describe this frame. Before: none yet. Tempo unknown")
    assert "Before: energy 0.7" in rs[1]["instruction"]  # the first frame's answer
    later = next(r for r in rs if "128.5" in r["instruction"])
    assert f"section chorus {'x' * 57}." in later["instruction"]  # cut to 64 characters
    assert later["frame"] <= rs[sent_at - 1]["frame"] + 2
    # Per frame only the image and the instruction are prefilled; the prefix stays cached.
    prefix = {r["prompt_len"] - r["prefilled"] for r in rs}
    assert len(prefix) == 1
    assert later["prefilled"] > rs[0]["prefilled"]


def test_previous_answers_before_the_image_are_prefilled_ahead(scripted_torch_model, cli_env,
                                                              tmp_path):
    """{previous} in the schema's context: (the text before the image). Each frame's
    context holds the last answer, and it was prefilled before the frame was taken: the
    frame itself runs only the image and the instruction, while the prompt it is answered
    from (prompt_len) holds the context too."""
    director = tmp_path / "DIRECTOR.md"
    text = director_text("Describe this frame.", previous=2)
    director.write_text(text.replace("keys:\n", "context: 'Your last answers: {previous}.'\nkeys:\n", 1))
    metrics = tmp_path / "metrics.jsonl"
    folder = tmp_path / "stills"
    from support.cli import stills

    stills(folder)
    proc = subprocess.run(
        [sys.executable, "-m", "pete_osc", "run", "--model", str(scripted_torch_model), "--size",
         "64", "--every-frame", "--max-tokens", "8", "--constrain", "off", "--no-warmup",
         "--source", str(folder), "--director", str(director), "--metrics", str(metrics)],
        capture_output=True, text=True, env=cli_env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rs = [json.loads(line) for line in metrics.read_text().splitlines()]
    # --every-frame: each of the 4 stills is a frame however slow the machine is (at the
    # stills' real-time pace a busy machine would skip some, and the test with them)
    assert len(rs) == 4
    assert rs[0]["context"] == "Your last answers: none yet."
    assert rs[1]["context"] == "Your last answers: energy 0.7."
    assert rs[2]["context"] == "Your last answers: energy 0.7 | energy 0.7."
    # The context is in the prompt each frame was answered from (the system prompt and
    # the context, as the tokenizer counts them, come before the frame's own prefill),
    # but not in the frame's own prefill: it ran ahead.
    from transformers import AutoTokenizer

    from pete_osc.director.schema import load_director
    from pete_osc.engines.torch_setup import split_prompt

    tokenizer = AutoTokenizer.from_pretrained(str(scripted_torch_model))
    parsed = load_director(director)
    for r in rs:
        system, context, _ = split_prompt(tokenizer, parsed.prompt, parsed.instruction,
                                          r["context"])
        assert r["prompt_len"] - r["prefilled"] == len(system) + len(context)
    assert len({r["prefilled"] for r in rs}) == 1
    # Prefilled ahead where the context changed; kept where it did not (the last two
    # answers are the same script).
    assert [r["ahead_ms"] > 0 for r in rs[1:]] == [a["context"] != b["context"]
                                                   for a, b in zip(rs, rs[1:])]


def test_ableton_is_asked_to_report_its_state(cli_env, tmp_path):
    ableton = free_port()
    dump = oscdump(ableton)
    context = free_port()
    answer = tmp_path / "a.txt"
    answer.write_text("energy: 0.5\n")
    try:
        proc = subprocess.run([sys.executable, "-m", "pete_osc", "run", "--engine", "replay",
                               "--replay", str(answer), "--max-frames", "1",
                               "--ableton", f"127.0.0.1:{ableton}", "--context-port", str(context)],
                              capture_output=True, text=True, env=cli_env, timeout=60)
        got = [without_time(l) for l in dump.take(4, timeout=5)]
    finally:
        dump.stop()
    assert proc.returncode == 0, proc.stderr
    assert got == ["/live/song/start_listen/tempo ", "/live/song/start_listen/is_playing ",
                   "/live/view/start_listen/selected_scene ", "/live/view/start_listen/selected_track "]


def test_a_busy_context_port_is_one_line(cli_env):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "pete_osc", "run", "--engine", "replay",
                               "--replay", str(ROOT / "DIRECTOR.md"), "--context-port", str(port)],
                              capture_output=True, text=True, env=cli_env, timeout=60)
    assert proc.returncode == 2
    assert [l for l in proc.stderr.splitlines() if "error" in l] == [
        f"pete-osc: error: --context-port {port}: cannot listen on 127.0.0.1:{port}: Address "
        "already in use (is another program using it? AbletonOSC's replies need 11001 free)"]


def test_the_mapping_listens_and_scene_names_reach_the_prompt(scripted_torch_model, cli_env,
                                                              tmp_path):
    """listen: in the mapping opens the OSC input and asks AbletonOSC (a real oscdump in its
    place) to report; a selected scene (sent by liblo's oscsend, as AbletonOSC replies)
    makes pete-osc ask for that scene's name, and the name's reply reaches the next
    frames' context."""
    oscsend = need("oscsend", "liblo-tools")
    ableton, port = free_port(), free_port()
    dump = oscdump(ableton)
    director = tmp_path / "DIRECTOR.md"
    text = director_text("Describe this frame.")
    director.write_text(text.replace(
        "keys:\n", "context: 'Live is on scene {daw.scene}, {daw.scene_name}.'\nkeys:\n", 1))
    mapping = tmp_path / "m.yaml"
    mapping.write_text(f"listen: {{port: {port}, ableton: '127.0.0.1:{ableton}'}}\n"
                       f"osc:\n  main: {{port: {free_port()}}}\n"
                       "routes:\n  - {event: energy, address: /e}\n")
    metrics = tmp_path / "metrics.jsonl"
    folder = tmp_path / "stills"
    from support.cli import stills

    stills(folder)
    run = Run("--model", str(scripted_torch_model), "--size", "64", "--fps", "0",
              "--max-tokens", "8", "--constrain", "off", "--no-warmup", "--loop", "--source",
              str(folder), "--director", str(director), "--mapping", str(mapping),
              "--metrics", str(metrics), env=cli_env)
    records = lambda: [json.loads(l) for l in metrics.read_text().splitlines()] if metrics.exists() else []  # noqa: E731
    try:
        asked = [without_time(l) for l in dump.take(4, timeout=60)]
        run.wait_for(lambda: len(records()) >= 1, what="a frame")
        subprocess.run([oscsend, "127.0.0.1", str(port), "/live/view/get/selected_scene", "i", "2"],
                       check=True)
        asked += [without_time(l) for l in dump.take(1, timeout=10)]
        subprocess.run([oscsend, "127.0.0.1", str(port), "/live/scene/get/name", "is", "2",
                        "Chorus\nbig"], check=True)
        run.wait_for(lambda: any("Chorus" in (r["context"] or "") for r in records()),
                     what="the scene name in a prompt")
        rc = run.interrupt()
    finally:
        run.kill()
        dump.stop()
    assert rc == 0
    assert asked == ["/live/song/start_listen/tempo ", "/live/song/start_listen/is_playing ",
                     "/live/view/start_listen/selected_scene ",
                     "/live/view/start_listen/selected_track ", "/live/scene/get/name i 2"]
    rs = records()
    assert rs[0]["context"] == "Live is on scene unknown, unknown."
    assert rs[-1]["context"] == "Live is on scene 3, Chorus big."  # Live's 2 is the third


def test_a_busy_listen_port_in_the_mapping_names_its_line(cli_env, tmp_path):
    mapping = tmp_path / "m.yaml"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        mapping.write_text(f"osc:\n  main: {{port: 9000}}\nlisten: {port}\n"
                           "routes:\n  - {event: energy, address: /e}\n")
        proc = subprocess.run([sys.executable, "-m", "pete_osc", "run", "--engine", "replay",
                               "--replay", str(ROOT / "DIRECTOR.md"), "--mapping", str(mapping)],
                              capture_output=True, text=True, env=cli_env, timeout=60)
    assert proc.returncode == 2
    assert [l for l in proc.stderr.splitlines() if "error" in l] == [
        f"pete-osc: error: {mapping}:3: listen {port}: cannot listen on 127.0.0.1:{port}: "
        "Address already in use (is another program using it? AbletonOSC's replies need "
        "11001 free)"]
