"""The one decode loop (pete_osc.engines.decode) on its own: the end token, the token limit,
the watchdog's stop, forced text riding along, and the records' times and step counts. The
model calls are a script (a token id per step) and the work done is counted: which ids each
step ran, so a loop that skips or repeats a step fails here, whatever the text."""

from __future__ import annotations

import threading

import pytest

from pete_osc.engines.decode import IncrementalDecoder, decode
from pete_osc.records import Prefill

EOS = 0


class Script:
    """Steps that choose ``ids`` in turn; ``ran`` keeps what each step was given."""

    def __init__(self, ids, ahead=False, stop=None, stop_after=None):
        self.ids, self.ahead, self.ran = list(ids), ahead, []
        self.stop, self.stop_after = stop, stop_after

    def run(self, ids):
        self.ran.append(ids if isinstance(ids, list) else ["ahead", ids])
        if self.stop is not None and len(self.ran) == self.stop_after:
            self.stop.set()  # the watchdog trips while this step runs
        return len(self.ran)

    def choose(self, logits):
        return self.ids[logits]

    def read(self, token) -> int:
        return token


class Grammar:
    """Forces ``forced[token]`` after a chosen token; done after the token ``done``."""

    def __init__(self, forced=None, done=None):
        self.forced, self.done = forced or {}, done

    def follow(self, token, room, jump):
        return self.forced.get(token, [])[:room], token == self.done


def run(script, max_tokens=10, constraint=None, jump=False, start=(), stop=None):
    prefill = Prefill(started=1.0, prompt_len=20, prefilled=5)
    decoder = IncrementalDecoder(lambda ids: "".join(chr(96 + i) for i in ids))
    return list(decode(script, script.ids[0], start=list(start), max_tokens=max_tokens,
                       eos={EOS}, constraint=constraint, jump=jump, decoder=decoder,
                       prefill=prefill, stop=stop or threading.Event()))


@pytest.mark.parametrize("ahead", [False, True], ids=["after-read", "queued-ahead"])
def test_the_end_token_ends_the_answer_and_each_token_is_one_step(ahead):
    script = Script([1, 2, 3, EOS], ahead=ahead)
    tokens = run(script)
    assert "".join(t.text for t in tokens) == "abc" and tokens[-1].finish == "stop"
    assert [t.index for t in tokens] == [0, 1, 2, 3]
    # One step per chosen token but the end (queued ahead, the end token's step is launched
    # before the token is read, and not counted: its logits are never used).
    assert len(script.ran) == (4 if ahead else 3) and tokens[-1].steps == 3
    assert all(t.prefill.prompt_len == 20 for t in tokens)


def test_the_limit_cuts_the_answer_as_length():
    script = Script([1, 2, 3, 4, 5, 6])
    tokens = run(script, max_tokens=3)
    assert [t.text for t in tokens] == ["a", "b", "c", ""] and tokens[-1].finish == "length"
    assert len(script.ran) == 2  # the last token needs no step after it


def test_forced_text_rides_along_in_one_step_and_arrives_with_its_token():
    # After token 1 the grammar forces 2 and 3; after 4 the answer is complete.
    script = Script([1, 4, 9])
    tokens = run(script, constraint=Grammar({1: [2, 3]}, done=4), jump=True, start=[5])
    assert "".join(t.text for t in tokens) == "eabcd" and tokens[-1].finish == "stop"
    assert script.ran == [[1, 2, 3]]  # one pass for the chosen token and the forced ones
    at = {t.text: t.at for t in tokens}
    assert at["a"] == at["b"] == at["c"] and tokens[-1].steps == 1


def test_the_watchdogs_stop_ends_the_answer_before_the_next_step():
    stop = threading.Event()
    script = Script([1, 2, 3, 4, 5, EOS], stop=stop, stop_after=2)
    tokens = run(script, stop=stop)
    assert [t.text for t in tokens] == ["a", "b", "c", ""] and tokens[-1].finish == "abort"
    assert len(script.ran) == 2  # no step launched once stopped
