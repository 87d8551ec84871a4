"""Ctrl-C and SIGTERM end a run within a second, even in the middle of a long prefill,
and alike at every stage: loading, warming up, the live loop, closing.

Before the live loop (loading the model, warming it up) both raise KeyboardInterrupt
(:func:`interrupt_on_signals`): the show closes what it opened and the command line says
one line. While the outputs close (notes off, exit values), a signal is noted and the
closing runs to its end (:func:`signals_held`), so no note is left sounding.

Generation runs on the main thread (MLX streams belong to the thread that made them, and
mlx-vlm has crashed on Metal when called from worker threads). A Python signal handler
only runs when the main thread gets back to Python, which a prefill on a slow CPU can
delay by over a second. So the C-level handler's wake-up byte (``signal.set_wakeup_fd``)
wakes a small watchdog thread at once: it sets the stop event, which ends generation at
the next token; if the loop has not finished ``grace`` seconds later, it runs the clean-up
it was given (release the camera, print the summary) and ends the process with code 0.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
from typing import Callable

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def interrupt_on_signals() -> None:
    """SIGTERM raises KeyboardInterrupt on the main thread, as SIGINT does: a service
    manager's stop and a performer's Ctrl-C end the run the same way."""
    for sig in SIGNALS:
        signal.signal(sig, _interrupt)


def _interrupt(signum, _frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextlib.contextmanager
def signals_held(stop: threading.Event | None = None, doing: str = "closing"):
    """Within the block a signal does not interrupt (the closing must finish): it is said
    once on stderr ("received while ``doing``") and sets ``stop``; the handlers before the
    block come back after it. Outside the main thread (where handlers cannot be set) the
    block simply runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    said = []

    def note(signum, _frame):
        if stop is not None:
            stop.set()
        if not said:
            said.append(signum)
            name = signal.Signals(signum).name
            print(f"\npete-osc: {name} received while {doing}; finishing it", file=sys.stderr)

    old = {sig: signal.signal(sig, note) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


class StopGuard:
    """Owns the watchdog thread; use as a context manager around the live loop."""

    def __init__(self, stop: threading.Event, on_force: Callable[[], None], grace: float = 0.7):
        self.stop = stop
        self.on_force = on_force
        self.grace = grace
        self.done = threading.Event()
        self._announced = False
        self._old_handlers: dict = {}
        self._old_wakeup = -1
        self._sig_r, self._sig_w = os.pipe()
        self._quit_r, self._quit_w = os.pipe()
        os.set_blocking(self._sig_w, False)
        self._thread = threading.Thread(target=self._watch, name="stop-guard")

    def __enter__(self) -> "StopGuard":
        for sig in SIGNALS:
            self._old_handlers[sig] = signal.signal(sig, self._handler)
        self._old_wakeup = signal.set_wakeup_fd(self._sig_w, warn_on_full_buffer=False)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        os.write(self._quit_w, b"q")
        self._thread.join()
        signal.set_wakeup_fd(self._old_wakeup)
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        for fd in (self._sig_r, self._sig_w, self._quit_r, self._quit_w):
            os.close(fd)

    def _handler(self, signum, _frame) -> None:
        # Runs on the main thread when it next executes Python; the watchdog already
        # reacted to the wake-up byte, so only make sure the loop sees the stop.
        self.stop.set()

    def _watch(self) -> None:
        while True:
            ready, _, _ = select.select([self._sig_r, self._quit_r], [], [])
            if self._sig_r not in ready:
                return  # the run ended normally
            # A signal first, even when the run is ending too: it is still announced.
            # The wake-up byte is written for every signal with a Python handler (SIGHUP
            # reloads the files): only ours stop the run.
            data = bytes(b for b in os.read(self._sig_r, 64) if b in SIGNALS)
            if not data:
                if self._quit_r in ready:
                    return
                continue
            if self._announced:
                if self._quit_r in ready:
                    return
                continue
            # The Python handler may already have set stop (when the main thread was in
            # Python at that moment); the grace period counts from the signal all the same.
            self._announced = True
            self.stop.set()
            name = signal.Signals(data[-1]).name if data else "signal"
            print(f"\npete-osc: {name} received, stopping ...", file=sys.stderr, flush=True)
            if self.done.wait(self.grace):
                return
            # The engine is inside a step that cannot be interrupted: do not wait for it.
            try:
                self.on_force()
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(0)
