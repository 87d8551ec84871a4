"""Several sources on a remote engine: one request in flight per source, so a server that
batches (vLLM, SGLang, mlx_vlm.server) answers them together.

:class:`Requests` has the shape of a local :class:`~pete_osc.engines.batch.Batch` (the
show's batched loop drives either): a frame that ``join``s starts its own streamed request
on a thread of its own; ``step`` hands on whatever tokens have arrived since, per frame; a
frame whose request fails ends alone (:class:`~pete_osc.engines.batch.Ended`); ``drop``
cuts one request's connection (the watchdog, the stop). The object owns its threads:
``close`` cuts every request and joins them.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from typing import Hashable

import numpy as np

from ..records import Token
from .base import Prompt
from .batch import Ended

# Seconds ``step`` waits for the first token to arrive (then takes all that have).
WAIT = 0.05


class Request:
    """One request's handle: its streamed response while it runs, and whether it was cut."""

    def __init__(self, aborted: threading.Event | None = None):
        self.response = None
        self.aborted = aborted or threading.Event()

    def cut(self) -> None:
        """Cut the answer: its connection is shut down, so a read blocked on a server that
        stalls fails at once (closing alone would not wake it)."""
        self.aborted.set()
        response = self.response
        stream = getattr(getattr(response, "response", None), "extensions", {}).get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:  # already closed
                pass


class Requests:
    """See the module docstring. ``engine``: the RemoteEngine; ``slots``: requests at once."""

    def __init__(self, engine, slots: int):
        self.engine = engine
        self.slots = slots
        self._arrived: queue.SimpleQueue = queue.SimpleQueue()  # (key, Token | Exception)
        self._rows: dict[Hashable, tuple] = {}  # key -> (Request, thread, last index)
        self.steps = 0
        self.rows_per_step: list[int] = []
        self.overlap = 0  # the most requests that were in flight at once
        self._threads: list[threading.Thread] = []  # dropped ones too, until they end

    @property
    def size(self) -> int:
        return len(self._rows)

    @property
    def free(self) -> int:
        return self.slots - len(self._rows)

    def __contains__(self, key) -> bool:
        return key in self._rows

    def join(self, key: Hashable, image: np.ndarray, prompt: Prompt,
             started: float | None = None) -> None:
        if key in self._rows:
            raise ValueError(f"request {key!r} is already in flight")
        if self.free <= 0:
            raise ValueError("as many requests are in flight as --concurrency allows")
        request = Request()
        thread = threading.Thread(target=self._run, args=(key, image, prompt, request),
                                  name=f"request {key}", daemon=True)
        self._rows[key] = [request, thread, 0]
        self.overlap = max(self.overlap, len(self._rows))
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _run(self, key, image, prompt, request) -> None:
        try:
            for token in self.engine._stream(image, self.engine.settings.max_tokens, prompt,
                                             request):
                self._arrived.put((key, request, token))
        except Exception as exc:
            self._arrived.put((key, request, exc))

    def step(self) -> list:
        """Whatever has arrived (waiting up to WAIT s for the first), per frame in order."""
        out: dict = {}
        ended: list[Ended] = []
        try:
            items = [self._arrived.get(timeout=WAIT)]
        except queue.Empty:
            return []
        while True:
            try:
                items.append(self._arrived.get_nowait())
            except queue.Empty:
                break
        for key, request, item in items:
            row = self._rows.get(key)
            if row is None or row[0] is not request:  # a request already dropped
                continue
            if isinstance(item, Exception):
                self._leave(key)
                ended.append(Ended(key, item))
                continue
            out.setdefault(key, []).append(item)
            row[2] = item.index
            if item.finish is not None:
                self._leave(key)
        self.steps += 1
        self.rows_per_step.append(len(out))
        return list(ended) + list(out.items())

    def drop(self, key: Hashable) -> list[Token]:
        """Cut ``key``'s request now: its closing record."""
        row = self._rows.get(key)
        if row is None:
            return []
        self._leave(key)
        row[0].cut()
        return [Token("", row[2], time.perf_counter(), "abort")]

    def _leave(self, key) -> None:
        self._rows.pop(key, None)

    def close(self, timeout: float = 2.0) -> None:
        """Every request cut, every thread joined."""
        rows = list(self._rows.values())
        self._rows.clear()
        for request, _, _ in rows:
            request.cut()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
