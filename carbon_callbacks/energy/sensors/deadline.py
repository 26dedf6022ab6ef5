"""Calls into a driver that can hang, made from one worker thread and waited for with a deadline.

A hung NVML call at an epoch boundary used to block training for as long as it hung (30 s
calls stalled a 3 s fit to 123 s). The calls are made on a worker thread instead; the caller
waits at most ``BOUNDARY_DEADLINE_S`` from the call's start (``MAX_WAIT_S`` in all, when a busy
machine is slow to run the worker) and then goes on without the answer (the sensor uses its
estimate for that interval). While a call is still hanging, later calls fail at once rather
than queue behind it, so a boundary never waits for more than one deadline and a hang never
piles up threads: there is one worker per driver module in the process, shared by every meter,
and it ends when its last user releases it and its current call returns.
"""

from __future__ import annotations

import _thread
import os
import queue
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

BOUNDARY_DEADLINE_S = 0.05
"""The most a boundary (or the sampler thread) waits for a call in the driver: 50 ms."""

MAX_WAIT_S = 0.25
"""The most a boundary waits in all: a busy machine may not run the worker at once, and a call
it has not started yet is not hanging, so the 50 ms count from when the call starts, within
this cap."""

_START_POLL_S = 0.005


class CallTimedOut(Exception):  # noqa: N818 - the name says what happened, as TimeoutError does
    """The driver did not answer within the deadline, or an earlier call still hangs."""


class _Job:
    __slots__ = ("args", "done", "error", "fn", "result", "started")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        # A bare lock, held until the job is done: the cheapest thing to wait on with a timeout.
        self.done = _thread.allocate_lock()
        self.done.acquire()
        self.result: Any = None
        self.error: BaseException | None = None
        self.started: float | None = None  # when the worker began the call

    def wait(self, deadline: float) -> bool:
        """Whether the job finished within ``deadline`` of its start (and ``MAX_WAIT_S``)."""
        now = time.monotonic()
        cap = now + max(MAX_WAIT_S, deadline)
        end = now + deadline
        while not self.done.acquire(timeout=max(0.0, end - now)):
            now = time.monotonic()
            started = self.started
            if started is not None:
                end = min(cap, started + deadline)
            else:  # not begun yet: the worker waits for a CPU, not for the driver
                end = min(cap, now + _START_POLL_S)
            if now >= end and (started is not None or now >= cap):
                return False
        return True


_STOP = None  # put on the queue to make the worker check whether anyone still uses it


class DeadlineWorker:
    """One daemon thread that makes a driver's calls; callers wait for each with a deadline.

    Get one with ``DeadlineWorker.acquire(key, name)`` (one per key, e.g. per NVML module)
    and give it back with ``release()``.
    """

    _registry: dict[Hashable, DeadlineWorker] = {}
    _registry_lock = threading.Lock()

    def __init__(self, key: Hashable, name: str) -> None:
        self._key = key
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards the fields below
        self._busy_since: float | None = None  # a job is queued or running since then
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
                with worker._lock:
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
        with self._lock:
            self._users = max(0, self._users - 1)
        if job is not None:
            self._jobs.put(job)
        self._jobs.put(_STOP)
        if job is not None:
            job.done.acquire(timeout=wait)

    def call(self, fn: Callable[..., Any], *args: Any,
             deadline: float = BOUNDARY_DEADLINE_S) -> Any:
        """``fn(*args)`` on the worker, waiting at most ``deadline`` seconds.

        Raises:
            CallTimedOut: no answer in time, or an earlier call has not returned yet.
            Exception: whatever ``fn`` raised.
        """
        now = time.monotonic()
        with self._lock:
            since = self._busy_since
            if since is None:
                self._busy_since = now
        if since is not None:
            raise CallTimedOut(f"an earlier call has not returned after {now - since:.3g} s")
        job = _Job(fn, args)
        self._jobs.put(job)
        if not job.wait(deadline):
            raise CallTimedOut(f"no answer within {deadline * 1000:.0f} ms")
        if job.error is not None:
            raise job.error
        return job.result

    @property
    def hanging_s(self) -> float:
        """How long the current call has run (0 when idle)."""
        since = self._busy_since
        return 0.0 if since is None else time.monotonic() - since

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                if self._exit_if_unused():
                    return
                continue
            job.started = time.monotonic()
            try:
                job.result = job.fn(*job.args)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                job.error = exc
            finally:
                with self._lock:
                    self._busy_since = None
                job.done.release()

    def _exit_if_unused(self) -> bool:
        with DeadlineWorker._registry_lock, self._lock:
            if self._users > 0 or not self._jobs.empty():
                return False
            self._exited = True
            if DeadlineWorker._registry.get(self._key) is self:
                del DeadlineWorker._registry[self._key]
            return True


def _after_fork_in_child() -> None:
    # The workers' threads do not exist in a forked child; its meters start their own.
    DeadlineWorker._registry = {}
    DeadlineWorker._registry_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
