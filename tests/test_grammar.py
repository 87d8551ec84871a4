"""The grammar built from DIRECTOR.md: what it allows is exactly what the parser accepts."""

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pete_osc.director import load_director, parse_director
from pete_osc.events import Event
from pete_osc.grammar import answer_regex, lark_grammar
from pete_osc.parser import parse_text_stream

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def director():
    return load_director(ROOT / "DIRECTOR.md")


@pytest.fixture(scope="module")
def matcher_for(director):
    """An llguidance matcher over the tiny test tokenizer, for any director."""
    llguidance = pytest.importorskip("llguidance")
    import llguidance.hf
    from transformers import PreTrainedTokenizerFast

    from pete_osc.synthetic import train_tokenizer

    folder = Path(__import__("tempfile").mkdtemp())
    train_tokenizer(folder)
    tok = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), eos_token="<|im_end|>")
    ll = llguidance.hf.from_tokenizer(tok)

    def accepts(d, text: str) -> bool:
        m = llguidance.LLMatcher(ll, llguidance.LLMatcher.grammar_from_lark(lark_grammar(d)),
                                 log_level=0)
        ok = m.consume_tokens(tok.encode(text, add_special_tokens=False))
        return bool(ok) and not m.is_error() and m.is_accepting()

    return accepts


VALID = ["energy: 0.7\n", "energy: 1\n", "energy: 0\n", "energy: 0.25\n", "energy: high\n",
         "tempo: 120\n", "tempo: 60\n", "tempo: 180\n", "tempo: fast\n", "mood: tense\n",
         "color: amber\n", "color: warm white\n", "color: darkred\n", "color: #ff8800\n",
         "scene: dark street\n", "person: none\n", "object: red guitar\n",
         "energy: 0.5\nmood: calm\ncolor: blue\nscene: forest at night\n"]
INVALID = ["energy: 1.5\n", "energy: 7\n", "energy: 1.01\n", "energy: very high\n",
           "tempo: 200\n", "tempo: 59\n", "mood: purple\n", "mood: joyful\n",  # aliases: canonical only
           "color: blurple\n", "color: #ff88\n", "scene: one two three four five\n",
           "scene: Dark Street\n", "energy 0.5\n", "loudness: 0.5\n", "energy: 0.5",
           "energy: 0.5\n" * 10]


@pytest.mark.parametrize("text", VALID)
def test_grammar_accepts_valid_answers(matcher_for, director, text):
    assert matcher_for(director, text)
    assert re.fullmatch(answer_regex(director), text)


@pytest.mark.parametrize("text", INVALID)
def test_grammar_refuses_invalid_answers(matcher_for, director, text):
    assert not matcher_for(director, text)
    assert not re.fullmatch(answer_regex(director), text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_everything_the_grammar_allows_parses(director, data):
    """Any answer in the grammar's language becomes events, none rejected."""
    text = data.draw(st.from_regex(answer_regex(director), fullmatch=True))
    records = list(parse_text_stream(director, [text]))
    assert records and all(isinstance(r, Event) for r in records), (text, records)


def test_editing_director_changes_the_grammar(matcher_for, director):
    text = (ROOT / "DIRECTOR.md").read_text()
    edited = text.replace("values: [calm, happy,", "values: [calm, grumpy, happy,").replace(
        "  scene:\n", "  crowd:\n    type: number\n    min: 0\n    max: 100\n  scene:\n")
    assert edited != text
    changed = parse_director(edited, Path("DIRECTOR.md"))
    for answer in ("mood: grumpy\n", "crowd: 42\n"):
        assert not matcher_for(director, answer)
        assert matcher_for(changed, answer)
    assert not matcher_for(changed, "crowd: 101\n")
