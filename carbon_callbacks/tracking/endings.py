"""How a run ends when no framework hook says so.

Lightning tells a callback about an exception (``on_exception``); Keras and transformers do not,
and SIGTERM ends a Python process without unwinding anything. So every exit path has a backstop
here, all framework-free:

- ``end_for_exception`` names the ending an exception means (failed, interrupted, pruned).
- ``OpenRuns`` keeps each run that has not ended, with the frame of the ``fit`` it measures: a
  new fit in the same process closes the runs whose fit is no longer on any thread's stack (a
  failed fit in a notebook loop), and interpreter exit closes the rest, so neither meter threads
  nor open ledger runs pile up.
- ``SigtermEnd`` records the run as interrupted when SIGTERM arrives during a fit, then lets the
  signal do what it would have done without us (by default, end the process).
- ``Sections`` defers that work while the tracker is inside one of its own boundaries, so a
  signal never re-enters a ledger write half done.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

from carbon_callbacks.records import RunEnd

logger = logging.getLogger(__name__)

_MESSAGE_CHARS = 500
"""An exception's message is kept to this length in the ledger (a tensor repr can be huge)."""


def end_for_exception(exc: BaseException) -> RunEnd:
    """The ending ``exc`` means when it leaves a fit.

    ``KeyboardInterrupt`` (SIGINT) and Lightning's ``SIGTERMException`` are interruptions; any
    other ``SystemExit`` too (the program is exiting); Optuna's ``TrialPruned`` is a stop by
    pruning; anything else is a failure with its type and message.
    """
    name = type(exc).__name__
    if isinstance(exc, KeyboardInterrupt):
        return RunEnd("interrupted", reason="SIGINT (KeyboardInterrupt)")
    if name == "SIGTERMException":  # Lightning's, a SystemExit raised by its loops
        return RunEnd("interrupted", reason="SIGTERM")
    if isinstance(exc, SystemExit):
        return RunEnd("interrupted", reason=f"SystemExit({exc.code!r})")
    if name == "TrialPruned":
        return RunEnd("stopped", "pruning", _message(exc) or "the trial was pruned")
    return RunEnd("failed", reason=_message(exc), error_type=name)


def _message(exc: BaseException) -> str:
    text = str(exc).strip()
    return text if len(text) <= _MESSAGE_CHARS else text[: _MESSAGE_CHARS - 3] + "..."


def find_frame(kind: type, start: FrameType | None = None, max_depth: int = 32) -> FrameType | None:
    """The nearest frame up the stack whose ``self`` is a ``kind`` (the framework's fit)."""
    frame: FrameType | None = start if start is not None else sys._getframe(1)
    for _ in range(max_depth):
        if frame is None:
            return None
        if isinstance(frame.f_locals.get("self"), kind):
            return frame
        frame = frame.f_back
    return None


def _on_stack(frame: FrameType, thread_id: int) -> bool:
    """Whether ``frame`` is still executing on thread ``thread_id``."""
    top = sys._current_frames().get(thread_id)
    while top is not None:
        if top is frame:
            return True
        top = top.f_back
    return False


class _Entry:
    def __init__(self, end: Callable[[RunEnd], Any], frame: FrameType | None) -> None:
        self.end = end
        self.frame = frame  # held while the run is open, so its identity stays unique
        self.thread_id = threading.get_ident()
        self.last_seen = getattr(sys, "last_value", None)

    def stale(self) -> bool:
        if self.frame is None:
            return False  # nothing to tell a running fit from a dead one: only exit closes it
        alive = {t.ident for t in threading.enumerate()}
        return self.thread_id not in alive or not _on_stack(self.frame, self.thread_id)


class OpenRuns:
    """The runs of this process that have started and not ended, closed when their fit is gone.

    An entry is a callable that ends the run (``EpochTracker.fit_end``) and the frame of the fit
    it measures. ``close_stale()``, called at every fit start, ends those whose frame is no
    longer on its thread's stack; at interpreter exit every open run is ended. The ending used is
    the exception that ended the fit when it can be known (an uncaught exception seen by
    ``sys.excepthook``, or ``sys.last_value`` in an interactive session), else ``failed`` with a
    reason saying the fit ended outside the callback's hooks.
    """

    def __init__(self) -> None:
        self._entries: dict[int, _Entry] = {}
        self._lock = threading.Lock()
        self._hooked = False
        self._uncaught: BaseException | None = None

    def add(self, key: int, end: Callable[[RunEnd], Any], frame: FrameType | None) -> None:
        """Register an open run under ``key`` (the tracker's id)."""
        with self._lock:
            self._entries[key] = _Entry(end, frame)
            self._hook()

    def discard(self, key: int) -> None:
        """Forget a run that has ended."""
        with self._lock:
            self._entries.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def close_stale(self) -> int:
        """End the runs whose fit is no longer running; returns how many."""
        with self._lock:
            stale = [(k, e) for k, e in self._entries.items() if e.stale()]
        for key, entry in stale:
            self._close(key, entry, "closed when the next fit started")
        return len(stale)

    def close(self, key: int, when: str) -> bool:
        """End the run registered under ``key`` now, if it is open; True if it was."""
        with self._lock:
            entry = self._entries.get(key)
        if entry is None:
            return False
        self._close(key, entry, when)
        return True

    def close_all(self) -> None:
        """End every open run (interpreter exit)."""
        with self._lock:
            entries = list(self._entries.items())
        for key, entry in entries:
            self._close(key, entry, "closed at process exit")

    def _close(self, key: int, entry: _Entry, when: str) -> None:
        self.discard(key)
        exc = self._uncaught or getattr(sys, "last_value", None)
        if exc is not None and exc is not entry.last_seen:
            end = end_for_exception(exc)
        else:
            end = RunEnd(
                "failed",
                reason=f"the fit ended outside the callback's hooks; {when}",
                error_type="unknown",
            )
        try:
            entry.end(end)
        except Exception as exc:  # noqa: BLE001 - a backstop must never raise
            logger.warning("carbon-callbacks: could not close a run left open (%s)", exc)

    def _hook(self) -> None:
        """Install the exit handler and the excepthook chain, once per process."""
        if self._hooked:
            return
        self._hooked = True
        atexit.register(self.close_all)
        previous = sys.excepthook

        def excepthook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
            self._uncaught = value
            previous(kind, value, tb)

        sys.excepthook = excepthook


open_runs = OpenRuns()
"""This process's open runs (one registry per process, as runs are)."""


class Sections:
    """Runs an action now, or at the end of the guarded section it would interrupt."""

    def __init__(self) -> None:
        self._depth = 0
        self._pending: list[Callable[[], None]] = []

    @contextlib.contextmanager
    def section(self) -> Iterator[None]:
        """Guard a boundary (a ledger write, a window cut) against re-entry from a signal."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if not self._depth:
                pending, self._pending = self._pending, []
                for action in pending:
                    action()

    def run(self, action: Callable[[], None]) -> None:
        """``action()`` now, or when the section now running ends."""
        if self._depth:
            self._pending.append(action)
        else:
            action()


class SigtermEnd:
    """During a fit, SIGTERM ends the run as interrupted, then does what it did before.

    Installed only in the main thread and only over the default action or a Python handler
    (an ignored SIGTERM stays ignored). On the signal, ``on_signal(end)`` records the ending
    (deferred by ``sections`` while a boundary is being written), the previous handler is put
    back, and the signal is handed on: re-sent to this process under the default action, which
    ends it as it would have ended without us, or passed to the previous Python handler.

    Args:
        on_signal: ends the run with the ``RunEnd`` it is given.
        sections: the tracker's ``Sections``.
    """

    def __init__(self, on_signal: Callable[[RunEnd], Any], sections: Sections) -> None:
        self._on_signal = on_signal
        self._sections = sections
        self._previous: Any = None
        self._installed = False

    def install(self) -> bool:
        """Take over SIGTERM for this fit; False where it is not ours to take."""
        if self._installed or threading.current_thread() is not threading.main_thread():
            return False
        try:
            previous = signal.getsignal(signal.SIGTERM)
            if previous is signal.SIG_IGN or previous is None:
                return False
            signal.signal(signal.SIGTERM, self._handle)
        except (ValueError, OSError, AttributeError):  # no SIGTERM here, or not allowed
            return False
        self._previous = previous
        self._installed = True
        return True

    def uninstall(self) -> None:
        """Put the previous handler back (if ours is still the one installed)."""
        if not self._installed:
            return
        self._installed = False
        with contextlib.suppress(ValueError, OSError):
            if signal.getsignal(signal.SIGTERM) == self._handle:
                signal.signal(signal.SIGTERM, self._previous)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous

        def hand_on() -> None:
            try:
                self._on_signal(RunEnd("interrupted", reason="SIGTERM"))
            finally:
                self.uninstall()
                if callable(previous):
                    previous(signum, frame)
                elif previous == signal.SIG_DFL:
                    os.kill(os.getpid(), signum)

        self._sections.run(hand_on)
