"""Decoding constrained to the DIRECTOR.md grammar: a token mask per step, on the CPU.

llguidance (already a dependency of mlx-vlm, maintained by the guidance authors and used
by vLLM and SGLang) computes from the grammar which tokens may come next; the engines
set every other token's logit to minus infinity before choosing. The mask is a numpy
array, so it works on MLX's and torch's CPU backends alike (mlx-vlm's own mask kernel is
Metal-only). One :class:`Constraint` per engine, reset at the start of each frame.

Where the grammar allows exactly one continuation (a key name and its colon, a newline,
the end), ``forced()`` gives those tokens (llguidance's ``compute_ff_tokens``, spelled as
the tokenizer spells them) and the engines run them through the model together with the
token just chosen, in one forward pass instead of one decode step each (jump-forward
decoding, as SGLang does it).

Masks are costly inside free-text values (the mask walks every token that could continue
a word, tens of thousands of Qwen2's 151k), and a batch needs one per row and step. Two
things make them cheaper without changing one bit of them: the tokenizer groups its word
tokens ("slices", :func:`~pete_osc.director.grammar.word_slices`), and the masks are kept
(:class:`Masks`) by the grammar's state, which in DIRECTOR's grammar is exactly the keys
of the lines already written and the tokens of the line being written (a line's value
never changes what the later lines may be), so the next row or frame in the same state
copies the mask instead of computing it.
"""

from __future__ import annotations

import ctypes
from collections import OrderedDict

import numpy as np

from ..director.grammar import lark_grammar, longest_answer, word_slices
from ..director.schema import Director
from ..errors import PeteError


class Constraint:
    """The grammar's state over one answer; ``allowed()`` before each token, ``consume``
    after it."""

    def __init__(self, director: Director, hf_tokenizer, vocab_size: int):
        try:
            import llguidance
            import llguidance.hf
        except ImportError:
            raise PeteError("--constrain on needs llguidance: pip install llguidance") from None
        self._llg = llguidance
        count = lambda text: len(hf_tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
        self.grammar = lark_grammar(director, count)
        # Tokens in the longest answer the grammar allows, the end token included.
        self.longest = longest_answer(director, count)
        self.vocab_size = vocab_size
        try:
            self.tokenizer = llguidance.hf.from_tokenizer(hf_tokenizer, n_vocab=vocab_size,
                                                          slices=word_slices())
        except ValueError as exc:
            raise PeteError(f"--constrain: the model's tokenizer cannot be used ({exc})") from None
        compiled = llguidance.LLMatcher.grammar_from_lark(self.grammar)
        # A fresh copy per answer: llguidance cannot roll back over token-budgeted
        # lexemes, so reset() copies this pristine matcher instead.
        self._start = llguidance.LLMatcher(self.tokenizer, compiled, log_level=0)
        if self._start.is_error():
            raise PeteError(f"{director.path}: the schema gives no usable grammar: "
                            f"{self._start.get_error()}")
        self.eos = self.tokenizer.eos_token
        self.masks = Masks(self.words)  # shared by the forks: every row of a batch
        self.reset()

    def fork(self) -> "Constraint":
        """Another answer's grammar state, at its start (a batch's row has its own)."""
        import copy

        other = copy.copy(self)
        other.reset()
        return other

    def reset(self) -> None:
        """Back to the start of an answer (a new frame)."""
        self.matcher = self._start.deep_copy()
        self._done: tuple[bytes, ...] = ()  # the keys of the lines written
        self._line: tuple[bytes, ...] = ()  # the current line's tokens (their bytes)

    @property
    def state(self) -> tuple:
        """The grammar's state as a key: the written lines' keys, the current line's tokens.
        (The line's tokens, not only its text: a value's token budget counts them.)"""
        return self._done, self._line

    def _moved(self, tokens: list[int]) -> None:
        """Keep :attr:`state` up with the tokens the matcher consumed."""
        for token in tokens:
            piece = self.tokenizer.decode_bytes([token])
            if b"\n" not in piece:
                self._line += (piece,)
                continue
            *ended, rest = piece.split(b"\n")
            line = b"".join(self._line) + ended[0]
            for text in [line, *ended[1:]]:
                self._done += (text.split(b":", 1)[0],)
            self._line = (rest,) if rest else ()

    @property
    def words(self) -> int:
        """32-bit words in a bitmask over the vocabulary."""
        return (self.vocab_size + 31) // 32

    def fill(self, pointer: int, nbytes: int) -> None:
        """Write the next-token bitmask (bit i of word i//32 set: token i allowed) into
        ``nbytes`` of memory at ``pointer`` (a preallocated, e.g. pinned, int32 buffer)."""
        if not self.masks.copy(self.state, pointer, nbytes):
            self.matcher.unsafe_compute_mask_ptr(pointer, nbytes)
            if not self.matcher.is_error():
                self.masks.keep(self.state, pointer, nbytes)

    def allowed(self) -> np.ndarray:
        """A bool array over the vocabulary: True where the token may come next."""
        words = np.empty(self.words, dtype=np.int32)
        self.fill(words.ctypes.data, words.nbytes)
        return np.unpackbits(words.view(np.uint8), bitorder="little",
                             count=self.vocab_size).astype(bool)

    def consume(self, token: int) -> None:
        """The engine chose ``token``; move the grammar on."""
        self.matcher.consume_token(token)
        self._moved([token])

    def follow(self, token: int, room: int, jump: bool) -> tuple[list[int], bool]:
        """The engine chose ``token``: move the grammar on. With ``jump``, also the tokens
        the grammar forces after it (at most ``room``, already consumed) and whether
        nothing but the end can follow; without, ``([], False)``."""
        self.consume(token)
        if not jump:
            return [], False
        return self.forced()[:max(0, room)], self.finished

    def forced(self) -> list[int]:
        """The tokens the grammar forces next (none where the model has a choice); they
        are consumed here, so the caller only has to run them through the model."""
        tokens = self.matcher.compute_ff_tokens()
        if tokens:
            self.matcher.consume_tokens(tokens)
            self._moved(tokens)
        return tokens

    @property
    def finished(self) -> bool:
        """The answer is complete (the grammar allows nothing but the end)."""
        return self.matcher.is_stopped()


class Masks:
    """Masks kept by grammar state (see the module docstring), the most recently used
    :data:`KEPT`; ``computed`` and ``copied`` count the masks made and reused."""

    def __init__(self, words: int):
        self.words = words
        self._kept: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self.computed = 0
        self.copied = 0

    def copy(self, state: tuple, pointer: int, nbytes: int) -> bool:
        """The mask of ``state`` into memory at ``pointer``, if kept."""
        mask = self._kept.get(state)
        if mask is None:
            return False
        self._kept.move_to_end(state)
        ctypes.memmove(pointer, mask.ctypes.data, min(nbytes, mask.nbytes))
        self.copied += 1
        return True

    def keep(self, state: tuple, pointer: int, nbytes: int) -> None:
        """The mask just computed into ``pointer`` is ``state``'s."""
        mask = np.empty(min(nbytes // 4, self.words), dtype=np.int32)
        ctypes.memmove(mask.ctypes.data, pointer, mask.nbytes)
        self._kept[state] = mask
        self.computed += 1
        while len(self._kept) > KEPT:
            self._kept.popitem(last=False)


# Masks kept (19 KB each for Qwen2's vocabulary: 19 MB). The states that recur are few
# (each value's start, the levels and numbers, the texts a scene keeps); random text fills
# the rest and is dropped first.
KEPT = 1024


# Threads computing a batch's masks at once (llguidance's executor); 0 or 1: one mask
# after another, the default: on the H100 machine's 16-core host eight rows' masks took
# 7.3 ms a step on 8 threads against 3.2 one after another, and on 2 cores no less
# (docs/benchmarks.md, session 13). bench/show_step.py --mask-threads N sets it.
THREADS = 0
_executor = None


def _executor_for(rows: int):
    """llguidance's parallel executor where THREADS asks for one and there are rows."""
    global _executor
    if rows < 2 or THREADS < 2:
        return None
    if _executor is None or _executor[0] != THREADS:
        import llguidance

        _executor = (THREADS, llguidance.LLExecutor(THREADS))
    return _executor[1]


def fill_rows(constraints: list, pointer: int, nbytes: int) -> None:
    """Each row's next-token bitmask (as :meth:`Constraint.fill`), row ``i`` at ``pointer
    + i * nbytes``; a row whose constraint is None is left as it is. A mask inside a
    free-text value walks the whole vocabulary (0.4-0.5 ms for Qwen2's 151k tokens), so
    at eight rows the masks are most of a batched step's time on the GPU's host (see
    THREADS for the parallel executor, which was slower there)."""
    executor = _executor_for(sum(c is not None for c in constraints))
    if executor is None:
        for i, c in enumerate(constraints):
            if c is not None:
                c.fill(pointer + i * nbytes, nbytes)
        return
    first: dict[tuple, int] = {}  # a state's first row with no kept mask: computed there
    again: list[tuple[int, int]] = []  # (row, the row it copies)
    for i, c in enumerate(constraints):
        if c is None or c.masks.copy(c.state, pointer + i * nbytes, nbytes):
            continue
        if c.state in first:
            again.append((i, first[c.state]))
        else:
            first[c.state] = i
    live = [(constraints[i].matcher, i) for i in first.values()]
    if live:
        executor.unsafe_compute_mask_ptr(live, pointer, nbytes, len(constraints))
    for state, i in first.items():
        if not constraints[i].matcher.is_error():
            constraints[i].masks.keep(state, pointer + i * nbytes, nbytes)
    for i, j in again:
        ctypes.memmove(pointer + i * nbytes, pointer + j * nbytes, nbytes)
