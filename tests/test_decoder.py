"""Incremental detokenization: each token's text leaves at once, split characters wait."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pete_osc.engines.decode import IncrementalDecoder


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    pytest.importorskip("tokenizers")
    from support.models import train_tokenizer
    from tokenizers import Tokenizer

    folder = tmp_path_factory.mktemp("tok")
    train_tokenizer(folder)
    return Tokenizer.from_file(str(folder / "tokenizer.json"))


def _pieces(tokenizer, text):
    ids = tokenizer.encode(text).ids
    decoder = IncrementalDecoder(tokenizer.decode)
    return [decoder.add(i) for i in ids] + [decoder.flush()], ids


def test_a_newline_leaves_with_its_own_token(tokenizer):
    pieces, ids = _pieces(tokenizer, "energy: 0.7\ntempo: 120\n")
    newline_at = [i for i, tid in enumerate(ids) if tokenizer.decode([tid]).endswith("\n")]
    assert newline_at, "the tokenizer has newline tokens"
    for i in newline_at:
        assert pieces[i].endswith("\n"), (i, pieces)


def test_split_characters_wait_for_their_last_byte(tokenizer):
    pieces, _ = _pieces(tokenizer, "mood: caf\u00e9 \u2615")
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) == "mood: caf\u00e9 \u2615"
    assert "" in pieces[:-1]  # some byte tokens were held back


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=80))
def test_pieces_join_to_the_whole_text(tokenizer, text):
    pieces, ids = _pieces(tokenizer, text)
    assert "".join(pieces) == tokenizer.decode(ids)
