"""Calls into a driver that can hang, made from one worker thread and waited for with a deadline.

A hung NVML call at an epoch boundary used to block training for as long as it hung (30 s
calls stalled a 3 s fit to 123 s). The calls are made on a worker thread instead; the caller
waits at most ``BOUNDARY_DEADLINE_S`` and then goes on without the answer (the sensor uses its
estimate for that interval). While a call is still hanging, later calls fail at once rather
than queue behind it, so a boundary never waits for more than one deadline and a hang never
piles up threads: there is one worker per driver module in the process, shared by every meter,
and it ends when its last user releases it and its current call returns.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any

BOUNDARY_DEADLINE_S = 0.05
"""The most a boundary (or the sampler thread) waits for the driver: 50 ms."""


class CallTimedOut(Exception):  # noqa: N818 - the name says what happened, as TimeoutError does
    """The driver did not answer within the deadline, or an earlier call still hangs."""


class _Job:
    __slots__ = ("args", "done", "error", "fn", "result")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class DeadlineWorker:
    """One daemon thread that makes a driver's calls; callers wait for each with a deadline.

    Get one with ``DeadlineWorker.acquire(key, name)`` (one per key, e.g. per NVML module)
    and give it back with ``release()``.
    """

    _registry: dict[Hashable, DeadlineWorker] = {}
    _registry_lock = threading.Lock()

    def __init__(self, key: Hashable, name: str) -> None:
        self._key = key
        self._cond = threading.Condition()
        self._jobs: deque[_Job] = deque()
        self._busy_since: float | None = None
        self._users = 0
        self._exited = False
        self._pid = os.getpid()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    @classmethod
    def acquire(cls, key: Hashable, name: str) -> DeadlineWorker:
        """The worker for ``key``, started if there is none (or only one from before a fork)."""
        with cls._registry_lock:
            worker = cls._registry.get(key)
            if worker is not None and worker._pid == os.getpid():
                with worker._cond:
                    if not worker._exited:
                        worker._users += 1
                        return worker
            worker = cls(key, name)
            worker._users = 1
            cls._registry[key] = worker
            worker.thread.start()
            return worker

    def release(self, last: Callable[[], Any] | None = None,
                wait: float = BOUNDARY_DEADLINE_S) -> None:
        """Give the worker back; ``last`` (a shutdown) runs on it after any hanging call.

        Waits at most ``wait`` seconds for ``last``; the thread ends once nobody uses it.
        """
        job = _Job(last, ()) if last is not None else None
        with self._cond:
            self._users = max(0, self._users - 1)
            if job is not None:
                self._jobs.append(job)
            self._cond.notify()
        if job is not None:
            job.done.wait(wait)

    def call(self, fn: Callable[..., Any], *args: Any,
             deadline: float = BOUNDARY_DEADLINE_S) -> Any:
        """``fn(*args)`` on the worker, waiting at most ``deadline`` seconds.

        Raises:
            CallTimedOut: no answer in time, or an earlier call has not returned yet.
            Exception: whatever ``fn`` raised.
        """
        with self._cond:
            if self._busy_since is not None or self._jobs:
                since = time.monotonic() - (self._busy_since or time.monotonic())
                raise CallTimedOut(f"an earlier call has not returned after {since:.3g} s")
            job = _Job(fn, args)
            self._jobs.append(job)
            self._cond.notify()
        if not job.done.wait(deadline):
            raise CallTimedOut(f"no answer within {deadline * 1000:.0f} ms")
        if job.error is not None:
            raise job.error
        return job.result

    @property
    def hanging_s(self) -> float:
        """How long the current call has run (0 when idle)."""
        with self._cond:
            return 0.0 if self._busy_since is None else time.monotonic() - self._busy_since

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and self._users > 0:
                    self._cond.wait()
                if not self._jobs:
                    self._exit_if_unused()
                    if self._exited:
                        return
                    continue
                job = self._jobs.popleft()
                self._busy_since = time.monotonic()
            try:
                job.result = job.fn(*job.args)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                job.error = exc
            finally:
                with self._cond:
                    self._busy_since = None
                job.done.set()

    def _exit_if_unused(self) -> None:
        # Called holding _cond; the registry lock is taken first everywhere else, so it is
        # released around taking it here.
        self._cond.release()
        try:
            with DeadlineWorker._registry_lock, self._cond:
                if self._users == 0 and not self._jobs:
                    self._exited = True
                    if DeadlineWorker._registry.get(self._key) is self:
                        del DeadlineWorker._registry[self._key]
        finally:
            self._cond.acquire()


def _after_fork_in_child() -> None:
    # The workers' threads do not exist in a forked child; its meters start their own.
    DeadlineWorker._registry = {}
    DeadlineWorker._registry_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
