"""Lyria RealTime as an output (issue 30, item 4), with google-genai's real client against
a local server that speaks the live music protocol (tests/support/lyria.py): prompts from
the settled labels, crossfaded by weight steps, at most every min_interval; the config
from energy and tempo with RESET_CONTEXT on a bpm change; the music it sends back played
into --play's WAV; the server going away and coming back; no key, no server: one line at
start, exit 2. Not tried against Google's own service (no key or network here)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
from support.peers import free_port
from test_play import energy_near, read_wav

from pete_osc.outputs.lyria import SCALES, Steering, config_value

pytest.importorskip("google.genai", reason="the Lyria tests need google-genai (the dev extras)")

PETE = [sys.executable, "-m", "pete_osc"]


# ---- what is sent when, pure ---------------------------------------------------------
def test_steering_sends_changes_at_most_every_min_interval_and_resets_on_bpm():
    s = Steering(min_interval=2.0)
    s.take("/prompt", (0, "calm orange", 1.0))
    s.take("/config/bpm", (100.4,))
    s.take("/config/density", (0.3,))
    assert s.due(0.0) == [("prompts", [("calm orange", 1.0)])]  # the config: at its frame's end
    s.frame_end()
    s.last = -1e9
    assert s.due(0.0) == [("config", {"bpm": 100, "density": 0.3})]
    s.take("/prompt", (1, "tense red", 0.0))  # (a weight 0 prompt is not sent)
    s.take("/config/density", (0.9,))
    assert s.due(1.0) == []  # within min_interval: waits
    s.take("/prompt", (0, "calm orange", 0.5))
    s.take("/prompt", (1, "tense red", 0.5))
    s.frame_end()
    assert s.due(2.0) == [("prompts", [("calm orange", 0.5), ("tense red", 0.5)]),
                          ("config", {"bpm": 100, "density": 0.9})]  # no reset: density
    s.take("/prompt", (0,))  # cleared
    s.take("/config/bpm", (140,))
    s.frame_end()
    assert s.due(4.5) == [("prompts", [("tense red", 0.5)]),
                          ("config", {"bpm": 140, "density": 0.9}), ("reset",)]
    assert s.due(9.0) == []  # nothing changed
    assert s.again() == [("prompts", [("tense red", 0.5)]),
                         ("config", {"bpm": 140, "density": 0.9})]


def test_config_values_as_lyria_takes_them():
    assert config_value("scale", 0) == SCALES[0] == "C_MAJOR_A_MINOR"
    assert config_value("scale", 7.2) == "G_MAJOR_E_MINOR"
    assert config_value("scale", "d_major_b_minor") == "D_MAJOR_B_MINOR"
    assert config_value("density", 1.7) == 1.0 and config_value("mute_bass", 1) is True
    assert config_value("bpm", 99.6) == 100


# ---- through the CLI, against a local Lyria ------------------------------------------
MAPPING = """lyria:
  music: {{url: "{url}", min_interval: 1}}
routes:
  - {{prompt: "{{mood}} {{color}}", to: music, fade: 2, step: 0.25}}
  - {{event: energy, to: music, address: /config/density}}
  - {{event: tempo, to: music, address: /config/bpm}}
"""


def frames(path, answers) -> None:
    path.write_text("".join(f"--- frame {i}\nmood: {m}\ncolor: {c}\nenergy: {e}\ntempo: {t}\n"
                            for i, (m, c, e, t) in enumerate(answers)))


@pytest.fixture
def lyria(tmp_path):
    from support.lyria import LyriaServer

    server = LyriaServer(tmp_path, free_port(__import__("socket").SOCK_STREAM))
    yield server
    server.close()


def run(tmp_path, lyria, answers, fps, env_extra=None, **kw):
    mapping = tmp_path / "lyria.yaml"
    mapping.write_text(MAPPING.format(url=lyria.url if lyria else "https://127.0.0.1:9"))
    replay = tmp_path / "answers.txt"
    frames(replay, answers)
    env = dict(os.environ, GEMINI_API_KEY="key-from-the-environment", PYTHONUNBUFFERED="1")
    if lyria:
        env["SSL_CERT_FILE"] = str(lyria.cert)
    env.update(env_extra or {})
    out = tmp_path / "show.wav"
    return subprocess.Popen(PETE + ["run", "--engine", "replay", "--replay", str(replay),
                                    "--fps", str(fps), "--mapping", str(mapping),
                                    "--play", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, **kw), out


def test_prompts_config_and_music_through_a_local_lyria(tmp_path, lyria):
    calm, tense = ("calm", "orange", 0.3, 100), ("tense", "red", 0.9, 140)
    proc, out = run(tmp_path, lyria, [calm] * 3 + [tense] * 6, fps=1)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "sending Lyria RealTime models/lyria-realtime-exp (music)" in err
    assert lyria.paths == ["/ws/google.ai.generativelanguage.v1alpha.GenerativeService."
                           "BidiGenerateMusic"]
    assert lyria.headers[0]["x-goog-api-key"] == "key-from-the-environment"
    assert lyria.received[0][1] == {"setup": {"model": "models/lyria-realtime-exp"}}
    prompts = lyria.messages("clientContent")
    sent = [[(p["text"], p["weight"]) for p in c["weightedPrompts"]] for _, c in prompts]
    assert sent[0] == [("calm orange", 1.0)] and sent[-1] == [("tense red", 1.0)]
    both = [s for s in sent if len(s) == 2]  # the crossfade's steps, both prompts in
    assert both and all(0 < w < 1 for s in both for _, w in s), sent
    # at most one change every min_interval (1 s): the messages of one change arrive
    # together (within 0.2 s), two changes at least 0.9 s apart (less a little for clocks)
    times = sorted(t for t, _ in prompts + lyria.messages("musicGenerationConfig"))
    assert all(b - a < 0.2 or b - a >= 0.9 for a, b in zip(times, times[1:])), times
    configs = [c for _, c in lyria.messages("musicGenerationConfig")]
    assert configs[0] == {"bpm": 100, "density": 0.3} and configs[-1]["bpm"] == 140
    controls = [(t, c) for t, c in lyria.messages("playbackControl")]
    assert controls[0][1] == "PLAY" and controls[0][0] >= prompts[0][0]  # after the prompts
    resets = [t for t, c in controls if c == "RESET_CONTEXT"]
    bpm_change = next(t for t, c in lyria.messages("musicGenerationConfig") if c["bpm"] == 140)
    assert len(resets) == 1 and resets[0] >= bpm_change  # once, after the new bpm
    # the music Lyria sent (a 440 Hz tone) is in the WAV
    sound = read_wav(out)
    assert energy_near(sound, 440.0) > 100 * energy_near(sound, 660.0)
    assert abs(sound).max() > 0.1


def test_the_server_going_away_and_coming_back(tmp_path, lyria):
    proc, _ = run(tmp_path, lyria, [("calm", "orange", 0.3, 100)] * 4
                  + [("tense", "red", 0.9, 140)] * 16, fps=2)
    threading.Timer(3.0, lyria.stop).start()
    threading.Timer(5.5, lyria.start).start()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    lost = [line for line in err.splitlines() if "connection was lost" in line]
    back = [line for line in err.splitlines() if "is back" in line]
    assert len(lost) == 1 and len(back) == 1, err
    setups = [t for t, m in lyria.received if "setup" in m]
    assert len(setups) == 2  # connected again
    after = [c for t, c in lyria.messages("clientContent") if t > setups[1]]
    assert after, "no prompts after the server came back"


@pytest.mark.parametrize("case", ["no key", "no server"])
def test_no_key_or_no_server_is_one_line_at_start(tmp_path, case):
    env = {"GEMINI_API_KEY": "", "GOOGLE_API_KEY": ""} if case == "no key" else {}
    proc, _ = run(tmp_path, None, [("calm", "orange", 0.3, 100)], fps=1, env_extra=env)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    lines = [line for line in err.splitlines() if line.startswith("pete-osc: error")]
    assert len(lines) == 1, err
    if case == "no key":
        assert "needs an API key in the environment: export GEMINI_API_KEY" in lines[0]
    else:
        assert f"{tmp_path / 'lyria.yaml'}:2: lyria target music: cannot reach" in lines[0]
