"""The one decode loop of the local engines, in mlx-lm's ``generate_step`` shape.

An engine prefills the frame (the image and the instruction, with the grammar's forced
start) and hands the loop its model calls for that frame (:class:`Steps`); the loop owns
the rest: the end token, the grammar (pete_osc.engines.constrain) and its jump-forward text, the
token limit, and the watchdog's stop. It yields :class:`~pete_osc.records.Token` records
that carry their own times and the frame's prompt cost, as ``mlx_lm.stream_generate``
yields ``GenerationResponse`` records. It is also where several sources' rows will share
one step (issue 25).
"""

from __future__ import annotations

import threading
import time
from typing import Iterator, Protocol

from ..records import Prefill, Token


class Steps(Protocol):
    """One frame's model calls. A token handle may be lazy (an MLX array, a CUDA tensor):
    ``read`` is where the loop waits for it."""

    # Whether the step that follows a token can be queued before the token is read (MLX's
    # lazy arrays: the next step computes while this token goes to the music). Without it,
    # the step is launched once the token is known, before the token is handed on.
    ahead: bool

    def run(self, ids):
        """Run ``ids`` (the chosen token and the text the grammar forced after it, or with
        ``ahead`` a token handle) through the model at the next positions; the logits."""
        ...

    def choose(self, logits):
        """The next token from ``logits`` (the grammar's mask applied), as a handle."""
        ...

    def read(self, token) -> int:
        """The token's id (waits for the device)."""
        ...


def decode(steps: Steps, first, *, start: list[int], max_tokens: int, eos: set[int],
           constraint, jump: bool, decoder: "IncrementalDecoder", prefill: Prefill,
           stop: threading.Event) -> Iterator[Token]:
    """The tokens of one answer. ``first``: the token chosen after the prefill; ``start``:
    the forced text prefilled with the frame (it comes out before ``first``). ``stop`` set
    (the watchdog's abort) ends the answer before the next step, with finish "abort"."""
    answer = Answer(start, max_tokens, eos, constraint, jump, decoder, prefill)
    token = first
    while True:
        queued = None
        if steps.ahead and not jump and answer.index + 1 < max_tokens and not stop.is_set():
            queued = steps.run(token)
        ids = answer.choose(steps.read(token), time.perf_counter(),
                            go_on=queued is not None or not stop.is_set())
        if ids is not None and queued is None:
            # Launch the next step before handing this token on: the device computes
            # while the parser, the outputs and the grammar do their part.
            queued = steps.run(ids)
        yield from answer.tokens()
        if ids is None:
            return
        token = steps.choose(queued)


class Answer:
    """One answer's state between two model steps: its position in the answer, the
    grammar's forced text, the end token and the token limit. :func:`decode` keeps one for
    its frame; a batch (pete_osc.engines.batch) keeps one per row, so every row follows the
    same rules."""

    def __init__(self, start: list[int], max_tokens: int, eos: set[int], constraint,
                 jump: bool, decoder: "IncrementalDecoder", prefill: Prefill):
        self.max_tokens, self.eos, self.constraint, self.jump = max_tokens, eos, constraint, jump
        self.decoder, self.prefill = decoder, prefill
        self.index = 0  # tokens handed on so far
        self.count = 0  # forward passes after the prefill
        self._forced = start  # (the start comes out before the first choice)
        self._out: list[Token] = []

    def choose(self, token_id: int, now: float, go_on: bool = True) -> list[int] | None:
        """The model chose ``token_id``: the ids to run through the model next (the token
        and the text the grammar forces after it), or None where the answer is over (the
        end token, the grammar's end, the token limit, or not ``go_on``: the watchdog's
        abort). Its tokens (and the closing one) wait in :meth:`tokens`."""
        self._emit(self._forced, now)
        self._forced = []
        if token_id in self.eos:
            return self._end(self.index, now, "stop")
        forced, done = ([], False) if self.constraint is None else \
            self.constraint.follow(token_id, self.max_tokens - self.index - 1, self.jump)
        last = self.index + 1 + len(forced) >= self.max_tokens
        ids = [token_id] + forced
        more = not (last or done) and go_on
        if more:
            self.count += 1
        self._emit(ids, now)
        if done:
            return self._end(self.index, time.perf_counter(), "stop")
        if last:
            return self._end(self.max_tokens, time.perf_counter(), "length")
        if not more:
            return self._end(self.index, time.perf_counter(), "abort")
        return ids

    def abort(self, now: float) -> None:
        """End the answer before the ids last chosen run (the watchdog, the stop)."""
        self._end(self.index, now, "abort")

    def tokens(self) -> list[Token]:
        """The tokens of the last choice, in order (the closing record last, at the end)."""
        out, self._out = self._out, []
        return out

    def _emit(self, ids: list[int], now: float) -> None:
        # A chosen token and the text forced after it arrive together, at one time.
        for token_id in ids:
            self._out.append(Token(self.decoder.add(token_id), self.index, now, None,
                                   self.prefill, self.count))
            self.index += 1

    def _end(self, index: int, now: float, finish: str) -> None:
        self._out.append(Token(self.decoder.flush(), index, now, finish, self.prefill,
                               self.count))
        return None


class IncrementalDecoder:
    """Token ids to text, each token's text released as soon as it is whole.

    mlx-vlm's BPE streaming detokenizer holds text back until a token that starts with a
    space arrives, so a line's newline (and so its event) would wait for the next line's
    value. Here every token's text leaves at once, except the bytes of a character split
    across tokens (the decode then ends in U+FFFD and waits for the rest). Only the last
    few tokens are decoded each time (prefix and read offsets, as vLLM and TGI do).
    """

    def __init__(self, decode):
        self._decode = decode  # list[int] -> str
        self._ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def add(self, token_id: int) -> str:
        """Add one token id; return the text it completes ("" while a character is split)."""
        self._ids.append(int(token_id))
        before = self._decode(self._ids[self._prefix:self._read])
        now = self._decode(self._ids[self._prefix:])
        if len(now) > len(before) and not now.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._ids)
            return now[len(before):]
        return ""

    def flush(self) -> str:
        """Whatever is still held at the end of the answer."""
        before = self._decode(self._ids[self._prefix:self._read])
        rest = self._decode(self._ids[self._prefix:])[len(before):]
        self._prefix = self._read = len(self._ids)
        return rest
