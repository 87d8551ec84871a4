"""Several sources' frames decoded together: one model step advances every answer.

A :class:`Batch` holds rows, one per frame being answered. A frame ``join``s at any time
and is prefilled with the others that join at the same step (their images through the
vision tower in one call); every :meth:`Batch.step` then runs all the rows' next tokens in
one model call. Each row has its own :class:`~pete_osc.engines.decode.Answer` (the same
rules as one frame alone: the end token, the grammar's mask and forced text, the token
limit), its own grammar state and its own prompt context; a row that finishes leaves at
once and its slot takes the next frame (continuous batching), so a long answer never holds
the others back. The engine gives the model calls (:class:`Rows`; the torch engine's are
in pete_osc.engines.torch_rows).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Hashable, Protocol

import numpy as np

from ..records import Prefill, Token
from .base import Prompt
from .decode import Answer, IncrementalDecoder


class Rows(Protocol):
    """An engine's model calls for a batch; rows live in numbered slots."""

    slots: int
    image_tokens: int  # a frame's image tokens at the engine's size
    eos: set[int]  # the end tokens (the model's, the grammar's)
    system: str | None  # the system prompt whose prefix the rows read
    prefix_len: int  # its positions

    def decode(self, ids: list[int]) -> str:
        """Token ids to text (special tokens left out)."""
        ...

    def use_system(self, system: str) -> None:
        """The DIRECTOR prefix every row reads (prefilled once, shared)."""
        ...

    def open(self, need: int) -> int:
        """A free slot for a row of ``need`` positions."""
        ...

    def close(self, slot: int) -> None:
        ...

    def prefill(self, rows: list[tuple[int, np.ndarray, list[int], list[int], list[int]]]):
        """``(slot, image, context, instruction, start)`` per joining row: (logits per
        row, vision seconds, positions prefilled per row)."""
        ...

    def run(self, slots: list[int], ids: list[list[int]]):
        """Each row's ids at its next positions, in one call: logits per row."""
        ...

    def choose(self, logits, constraints: list) -> list[int]:
        """Each row's next token id, its own grammar's mask applied."""
        ...


class Slots:
    """The slots of a :class:`Rows`: which are free, how many tail positions each row has
    filled; ``_grow(tail)`` (the subclass's) makes every slot hold ``tail`` positions."""

    tail = 0

    def __init__(self, slots: int):
        self.slots = max(1, slots)
        self.free = list(range(self.slots))
        self.length = [0] * self.slots

    def open(self, need: int) -> int:
        """A free slot for a row that will fill ``need`` tail positions."""
        if need > self.tail:
            self._grow(need + TAIL_HEADROOM)
        slot = self.free.pop(0)
        self.length[slot] = 0
        return slot

    def close(self, slot: int) -> None:
        self.free.append(slot)
        self.free.sort()

    def _grow(self, tail: int) -> None:
        raise NotImplementedError


# Tail positions a slot gets beyond what the row that made it grow needs.
TAIL_HEADROOM = 64


@dataclass
class _Row:
    key: Hashable
    slot: int
    answer: Answer
    constraint: object | None
    started: float
    ids: list[int] | None = None  # to run at the next step


@dataclass(frozen=True)
class Ended:
    """A row that ended with an error (its own: the grammar, its prompt); the others go on."""

    key: Hashable
    error: Exception


class Batch:
    """See the module docstring. ``engine`` gives the tokenizer, the grammar and the
    settings; ``rows`` the model calls."""

    def __init__(self, engine, rows: Rows, split):
        self.engine = engine
        self.rows = rows
        self._split = split  # Prompt -> (system ids, context ids, instruction ids)
        self._splits: dict[Prompt, tuple] = {}
        self._rows: dict[Hashable, _Row] = {}
        self._joining: list[tuple[Hashable, np.ndarray, Prompt, float]] = []
        self.steps = 0  # model steps after the prefills
        self.rows_per_step: list[int] = []  # how many rows each step ran
        self.prefills: list[int] = []  # how many frames each prefill call took

    def split(self, prompt: Prompt) -> tuple:
        """The prompt's token ids (kept for the last few prompts: a source's prompt
        changes only with its {previous} answers)."""
        if prompt not in self._splits:
            if len(self._splits) > 64:
                self._splits.clear()
            self._splits[prompt] = self._split(prompt)
        return self._splits[prompt]

    @property
    def size(self) -> int:
        """Rows running or waiting to join."""
        return len(self._rows) + len(self._joining)

    @property
    def free(self) -> int:
        return self.rows.slots - self.size

    def __contains__(self, key) -> bool:
        return key in self._rows or any(j[0] == key for j in self._joining)

    def join(self, key: Hashable, image: np.ndarray, prompt: Prompt,
             started: float | None = None) -> None:
        """A frame (square RGB at the engine's size) joins at the next step."""
        if key in self:
            raise ValueError(f"row {key!r} is already in the batch")
        if self.free <= 0:
            raise ValueError("the batch is full")
        self._joining.append((key, image, prompt, started or time.perf_counter()))

    def drop(self, key: Hashable) -> list[Token]:
        """End ``key``'s answer now (the watchdog, the stop): its closing record."""
        self._joining = [j for j in self._joining if j[0] != key]
        row = self._rows.pop(key, None)
        if row is None:
            return []
        self.rows.close(row.slot)
        if row.ids is not None:  # chosen but not yet run: it ends here
            row.answer.abort(time.perf_counter())
        return row.answer.tokens()

    def step(self) -> list[tuple[Hashable, list[Token]] | Ended]:
        """One step: the frames waiting to join prefilled, every row's next token chosen.
        Returns each row's new tokens (its closing record where it ended: it has left),
        or :class:`Ended` for a row whose own part failed."""
        ended: list[Ended] = []
        logits, rows = None, []
        running = [r for r in self._rows.values() if r.ids is not None]
        if running:
            logits = self.rows.run([r.slot for r in running], [r.ids for r in running])
            self.steps += 1
            self.rows_per_step.append(len(running))
            for r in running:
                r.ids = None
            rows = running
        outs = []
        if rows:
            outs.append((rows, logits))
        if self._joining:
            joined, first = self._prefill(ended)
            if joined:
                outs.append((joined, first))
        results: list = list(ended)
        for group, group_logits in outs:
            try:
                chosen = self.rows.choose(group_logits, [r.constraint for r in group])
            except Exception as exc:  # the masks failed: these rows end, the batch goes on
                for r in group:
                    self._leave(r)
                    results.append(Ended(r.key, exc))
                continue
            now = time.perf_counter()
            for r, token_id in zip(group, chosen):
                try:
                    r.ids = r.answer.choose(token_id, now)
                except Exception as exc:
                    self._leave(r)
                    results.append(Ended(r.key, exc))
                    continue
                if r.ids is None:
                    self._leave(r)
                results.append((r.key, r.answer.tokens()))
        return results

    def _leave(self, row: _Row) -> None:
        if self._rows.pop(row.key, None) is not None:
            self.rows.close(row.slot)

    def _prefill(self, ended: list) -> tuple[list[_Row], object]:
        engine = self.engine
        joining, self._joining = self._joining, []
        made, calls = [], []
        max_tokens = engine.settings.max_tokens
        base = engine.constraint
        jump = base is not None and getattr(engine, "jump_forward", True)
        for key, image, prompt, started in joining:
            try:
                if self._rows and prompt.system != self.rows.system:
                    # (the rows in flight read the prefix: a new DIRECTOR prompt waits for
                    # the batch to drain, as the show's reload does)
                    raise ValueError("a new system prompt cannot join rows of another")
                self.rows.use_system(prompt.system)
                _, context, suffix = self.split(prompt)
                constraint = base.fork() if base is not None else None
                start = constraint.forced()[:max_tokens - 1] if jump else []
                need = len(context) + len(suffix) + len(start) + self.rows.image_tokens \
                    + max_tokens + 1
                slot = self.rows.open(need)
            except Exception as exc:
                ended.append(Ended(key, exc))
                continue
            made.append((key, slot, constraint, start, started))
            calls.append((slot, image, context, suffix, start))
        if not calls:
            return [], None
        try:
            logits, vision, counts = self.rows.prefill(calls)
        except Exception as exc:
            for key, slot, *_ in made:
                self.rows.close(slot)
                ended.append(Ended(key, exc))
            return [], None
        self.prefills.append(len(calls))
        joined = []
        decode = self.rows.decode
        for (key, slot, constraint, start, started), count in zip(made, counts):
            prefill = Prefill(started, self.rows.prefix_len + count - len(start), count, vision)
            answer = Answer(start, max_tokens, self.rows.eos, constraint, jump,
                            IncrementalDecoder(decode), prefill)
            row = _Row(key, slot, answer, constraint, started)
            self._rows[key] = row
            joined.append(row)
        return joined, logits

    def close(self) -> None:
        """Every row ends (the show stops): their slots are freed."""
        for key in list(self._rows):
            self.drop(key)
        self._joining = []
