"""One engine answer, read back from its token records (each carries the frame's prefill
and the steps so far; the last one has the finish)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Answer:
    tokens: list

    @property
    def text(self) -> str:
        return "".join(t.text for t in self.tokens)

    @property
    def last(self):
        return self.tokens[-1]

    @property
    def finish(self):
        return self.last.finish

    @property
    def prefill(self):
        return self.last.prefill

    @property
    def started(self) -> float:
        return self.prefill.started

    @property
    def prompt_len(self):
        return self.prefill.prompt_len

    @property
    def prefilled(self):
        return self.prefill.prefilled

    @property
    def prompt_s(self):
        return self.prefill.prompt_s

    @property
    def steps(self):
        return self.last.steps


def answer(engine, image, prompt=None) -> Answer:
    """Stream one frame's answer to its end."""
    return Answer(list(engine.stream(image, prompt)))
