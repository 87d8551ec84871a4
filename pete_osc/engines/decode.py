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
    count = 0  # forward passes after the prefill

    def tokens(ids: list[int], index: int, now: float) -> Iterator[Token]:
        # A chosen token and the text forced after it arrive together, at one time.
        for offset, token_id in enumerate(ids):
            yield Token(decoder.add(token_id), index + offset, now, None, prefill, count)

    def end(index: int, now: float, finish: str) -> Token:
        return Token(decoder.flush(), index, now, finish, prefill, count)

    token, index, forced = first, 0, start
    while True:
        queued = None
        if steps.ahead and not jump and index + 1 < max_tokens and not stop.is_set():
            queued = steps.run(token)
        token_id = steps.read(token)
        now = time.perf_counter()
        yield from tokens(forced, index, now)  # (the start, before the first choice)
        index += len(forced)
        if token_id in eos:
            yield end(index, now, "stop")
            return
        forced, done = ([], False) if constraint is None else \
            constraint.follow(token_id, max_tokens - index - 1, jump)
        last = index + 1 + len(forced) >= max_tokens
        if queued is not None:
            count += 1
        elif not (last or done or stop.is_set()):
            # Launch the next step before handing this token on: the device computes
            # while the parser, the outputs and the grammar do their part.
            queued = steps.run([token_id] + forced)
            count += 1
        yield from tokens([token_id] + forced, index, now)
        index += 1 + len(forced)
        if done:
            yield end(index, time.perf_counter(), "stop")
            return
        if last:
            break
        if queued is None:  # stopped (the watchdog's abort)
            yield end(index, time.perf_counter(), "abort")
            return
        forced = []
        token = steps.choose(queued)
    yield end(max_tokens, time.perf_counter(), "length")


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
