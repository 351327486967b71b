"""Ctrl-C and SIGTERM end a run the same way: at a step boundary, saved, with their own exit code.

A scheduler (or ``kill``) stops a job with SIGTERM and Python's default for it is to die
on the spot, saving nothing. ``handle_signals`` turns both SIGINT and SIGTERM into an
``Interrupted`` exception (a ``KeyboardInterrupt``, so everything that cleans up after
Ctrl-C does so after SIGTERM too). Inside ``step_boundary()`` the exception waits until
the block ends: an optimizer step is never cut in half, so the state the trainer then
saves is one a resumed run continues from exactly.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

# The shell's convention: 128 + the signal's number.
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}

_state = {"deferring": False, "pending": None}


class Interrupted(KeyboardInterrupt):
    """The process got SIGINT or SIGTERM; ``signum`` says which."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_code(error: KeyboardInterrupt) -> int:
    """The exit code of an interrupt: 143 for SIGTERM, 130 for Ctrl-C (and a bare KeyboardInterrupt)."""
    return EXIT_CODES.get(getattr(error, "signum", signal.SIGINT), 130)


def _on_signal(signum, frame):
    if _state["deferring"]:
        _state["pending"] = signum
        return
    raise Interrupted(signum)


@contextmanager
def handle_signals(signals=tuple(EXIT_CODES)):
    """Within the block ``signals`` (SIGINT and SIGTERM) raise ``Interrupted``; the old handlers come back after it.

    Outside the main thread (where Python cannot install handlers) the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _on_signal) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _state.update(deferring=False, pending=None)


@contextmanager
def step_boundary():
    """Hold a signal that arrives inside the block until it ends, then raise it."""
    _state["deferring"] = True
    try:
        yield
    finally:  # an error inside the block ends the run anyway: the signal it held goes with it
        _state["deferring"] = False
        pending, _state["pending"] = _state["pending"], None
    if pending is not None:
        raise Interrupted(pending)
