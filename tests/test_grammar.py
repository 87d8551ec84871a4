"""The grammar built from DIRECTOR.md: what it allows is exactly what the parser accepts."""

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.events import answer

from pete_osc.director.grammar import answer_regex, lark_grammar
from pete_osc.director.parser import parse_text_stream
from pete_osc.director.schema import parse_director
from pete_osc.records import Event

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def matcher_for(director, tmp_path_factory):
    """An llguidance matcher over the tiny test tokenizer, for any director."""
    llguidance = pytest.importorskip("llguidance")
    import llguidance.hf
    from support.models import train_tokenizer
    from transformers import PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer(folder)
    tok = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), eos_token="<|im_end|>")
    ll = llguidance.hf.from_tokenizer(tok)

    def accepts(d, text: str) -> bool:
        m = llguidance.LLMatcher(ll, llguidance.LLMatcher.grammar_from_lark(lark_grammar(d)),
                                 log_level=0)
        ok = m.consume_tokens(tok.encode(text, add_special_tokens=False))
        return bool(ok) and not m.is_error() and m.is_accepting()

    return accepts


# A complete answer: every key of DIRECTOR.md once, in its order.
VALID = [answer(), answer(energy="1"), answer(energy="0"), answer(energy="0.25"),
         answer(energy="high"), answer(tempo="60"), answer(tempo="180"), answer(tempo="fast"),
         answer(mood="calm"), answer(color="warm white"), answer(color="darkred"),
         answer(color="#ff8800"), answer(scene="dark street"), answer(person="none"),
         answer(object="red guitar")]
INVALID = [answer(energy="1.5"), answer(energy="7"), answer(energy="1.01"),
           answer(energy="very high"), answer(tempo="200"), answer(tempo="59"),
           answer(mood="purple"), answer(mood="joyful"),  # aliases: canonical only
           answer(color="blurple"), answer(color="#ff88"),
           answer(scene="one two three four five"), answer(scene="Dark Street"),
           answer().replace("energy: ", "energy "), answer() + "loudness: 0.5\n",
           answer()[:-1],  # the last line unfinished
           answer(object=None),  # a key left out
           "energy: 0.7\n",  # one line
           answer().replace("color: amber\nmood: tense\n", "mood: tense\ncolor: amber\n"),  # order
           answer() + "object: red car\n"]  # a key twice


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
    crowd = answer().replace("scene:", "crowd: 42\nscene:")
    grumpy = crowd.replace("tense", "grumpy")
    assert not matcher_for(director, grumpy) and matcher_for(changed, grumpy)
    assert not matcher_for(director, crowd) and matcher_for(changed, crowd)
    assert not matcher_for(changed, crowd.replace("42", "101"))
    assert not matcher_for(changed, answer())  # crowd is now required
