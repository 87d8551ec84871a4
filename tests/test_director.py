"""DIRECTOR.md is both the prompt and the schema: they change together, and a broken
schema is refused with the file and the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from pete_osc.director.parser import LineParser
from pete_osc.director.schema import load_director, parse_director
from pete_osc.errors import PeteError
from pete_osc.records import FrameInfo

ROOT = Path(__file__).resolve().parent.parent
TEXT = (ROOT / "DIRECTOR.md").read_text()
FRAME = FrameInfo(1, "test", 0.0)


def test_shipped_director_has_the_required_types(director):
    assert {"color", "mood", "energy", "tempo", "brightness", "motion", "scene"} <= set(director.keys)
    assert director.keys["energy"].type == "number"
    assert (director.keys["energy"].min, director.keys["energy"].max) == (0.0, 1.0)
    assert director.keys["tempo"].type == "number" and director.keys["tempo"].max == 180
    assert "tense" in director.keys["mood"].values
    assert director.keys["color"].type == "color"
    assert director.keys["scene"].type == "text"


def test_prompt_asks_for_every_schema_key_with_its_vocabulary(director):
    prompt_lines = director.prompt.splitlines()
    for key in director.keys:
        assert any(line.startswith(f"{key}: ") for line in prompt_lines), key
    mood_line = next(line for line in prompt_lines if line.startswith("mood: "))
    for word in director.keys["mood"].values:
        assert word in mood_line
    assert "{keys}" not in director.prompt


def _with_schema(old: str, new: str) -> str:
    assert old in TEXT
    return TEXT.replace(old, new, 1)


def test_editing_the_schema_changes_prompt_and_parser_together():
    # A new key 'weather' and a new mood word 'eerie'.
    text = _with_schema("keys:\n", "keys:\n  weather:\n    type: word\n    values: [sunny, rainy]\n")
    text = text.replace("values: [calm,", "values: [eerie, calm,", 1)
    before = parse_director(TEXT)
    after = parse_director(text)
    assert "weather:" not in before.prompt and "weather: one of sunny, rainy" in after.prompt
    assert "eerie" in after.prompt and "eerie" not in before.prompt

    def parse(d, line):
        return LineParser(d, FRAME).feed(line + "\n")[0]

    assert parse(before, "weather: rainy").reason == "unknown key 'weather'"
    assert parse(after, "weather: rainy").value == "rainy"
    assert parse(after, "mood: eerie").value == "eerie"
    assert "not one of" in parse(before, "mood: eerie").reason


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize("old, new, needle, message", [
    ("    type: number\n    ask: low, medium or high", "    type: numbr\n    ask: low, medium or high",
     "type: numbr", "type must be one of"),
    ("    min: 60\n", "    min: 200\n", "    max: 180", "must be above min"),
    ("    max_words: 4\n", "    max_word: 4\n", "max_word: 4", "unknown setting 'max_word'"),
    ("aliases: {joyful: happy,", "aliases: {joyful: glad,", "aliases: {joyful: glad", "not in values"),
    ("  amber: \"#ffbf00\"", "  amber: orange-ish", "amber: orange-ish", "hex code"),
    ("    min: 0\n    max: 1\n    levels: {none: 0.0, low: 0.25",
     "    min: 0\n    max: 1\n    levels: {none: 0.0, low: 2.5", "levels: {none: 0.0, low: 2.5", "level 'low'"),
    ("instruction: Describe this frame.", "instruction: [Describe", "instruction: [Describe",
     "YAML syntax error"),
    ("    max_words: 4\n", "    max_words: 4\n    optional: yes please\n", "optional: yes please",
     "optional must be true or false"),
    ("instruction: Describe this frame.", "instruction: Describe this frame.\nmax_lines: 8",
     "max_lines: 8", "9 keys must be in every answer"),
])
def test_broken_schema_is_refused_with_file_and_line(tmp_path, old, new, needle, message):
    text = _with_schema(old, new)
    path = tmp_path / "DIRECTOR.md"
    path.write_text(text)
    with pytest.raises(PeteError) as err:
        load_director(path)
    text_line = _line_of(text, needle)
    first = str(err.value).splitlines()
    assert len(first) == 1
    assert message in str(err.value)
    # The reported line is the offending one (YAML syntax errors may point one line on).
    reported = int(str(err.value).split(":")[1])
    assert str(err.value).startswith(f"{path}:")
    assert reported in (text_line, text_line + 1), (reported, text_line, str(err.value))


def test_missing_blocks_and_files_are_named(tmp_path):
    with pytest.raises(PeteError, match="no ```yaml schema block"):
        parse_director("```prompt\n{keys}\n```\n")
    with pytest.raises(PeteError, match="no ```prompt block"):
        parse_director("```yaml schema\nkeys: {a: {type: text}}\n```\n")
    with pytest.raises(PeteError, match=r"nothere\.md: cannot read"):
        load_director(tmp_path / "nothere.md")
    with pytest.raises(PeteError, match="never closed"):
        parse_director("```prompt\n{keys}\n")
