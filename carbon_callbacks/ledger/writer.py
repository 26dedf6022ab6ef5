"""The write path: every op to the store from a worker thread, to the spool when it cannot go.

What a write can cost the thread that makes it (the training loop):

- While the store is healthy, a write waits for its commit, at most ``max_wait`` seconds. A
  commit that takes longer goes on in the worker, and the op is spooled as well (if the commit
  then lands, the spooled copy is a duplicate the store ignores: every insert is
  ``ON CONFLICT DO NOTHING``).
- Once a write has failed, writes go straight to the spool (a local append and fsync) and the
  store is retried in the background, at most every ``retry_interval`` seconds, by draining the
  spool: a dead, locked or black-holed store never holds the training loop again.
- ``close()`` waits at most ``timeout + 1`` seconds for a write or retry in progress (it first
  cuts a database transaction short by shutting its socket down; a connection attempt ends by
  its own ``connect_timeout``).

So when a write returns, its op is committed or in the spool on disk. Each spooled op of a run
started by this ledger is preceded by that run's row (once per spool), so the spool alone
recreates the run. When the SQLite file turns out damaged under the writer, what its connection
can still read is salvaged to the spool before anything else happens to the file.

The worker thread is started on demand and ends after ``IDLE_EXIT`` seconds without work.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from carbon_callbacks._warn import WarnOnce
from carbon_callbacks.ledger.errors import LedgerDamaged, LedgerError, LedgerRejected
from carbon_callbacks.ledger.spool import Spools

logger = logging.getLogger("carbon_callbacks.ledger")

IDLE_EXIT = 5.0
"""Seconds the worker thread waits for work before it ends (a later write starts another)."""

_warned = WarnOnce(logger)


class Store(Protocol):
    """What the writer needs of a store (``SqliteStore``, ``SqlAlchemyStore``)."""

    label: str
    timeout: float

    def apply(self, ops: Sequence[Mapping[str, Any]]) -> None: ...

    def check(self) -> None: ...

    def abort(self) -> bool: ...

    def close(self) -> None: ...


class _Job:
    """One hand-off to the worker: ops to write (None: only drain the spool)."""

    def __init__(self, ops: list[dict[str, Any]] | None) -> None:
        self.ops = ops
        self.done = threading.Event()
        self.stored = False


class Writer:
    """Writes ops to a store through a worker thread, spooling what it cannot take.

    Args:
        store: the store.
        spools: where ops go when the store cannot take them.
        max_wait: seconds a write waits for a healthy store's commit.
        retry_interval: seconds between background retries once the store has failed.
    """

    def __init__(
        self, store: Store, spools: Spools, *, max_wait: float, retry_interval: float
    ) -> None:
        self.store = store
        self.spools = spools
        self.max_wait = max_wait
        self.retry_interval = retry_interval
        self.last_error = ""
        self._cond = threading.Condition()
        self._store_lock = threading.Lock()
        self._job: _Job | None = None
        self._thread: threading.Thread | None = None
        self._healthy = True
        self._retry_at = 0.0
        self._closing = False
        self._aborted = False
        self._started = 0.0
        # Runs whose row is in the spool since its last drain: their spooled records need no
        # other copy of it.
        self._spooled_runs: set[str] = set()

    # ------------------------------------------------------------------ the caller's side

    def write(self, op: dict[str, Any], run_op: Mapping[str, Any] | None = None) -> None:
        """Commit ``op`` (waiting at most ``max_wait``) or spool it; never raises.

        Args:
            op: the write.
            run_op: the ``runs`` row of ``op``'s run, spooled before it (once per spool) so
                that the spool alone recreates the run.
        """
        job = None
        with self._cond:
            if self._healthy and self._job is None and not self._closing:
                job = self._submit([op])
        if job is not None and job.done.wait(self.max_wait) and job.stored:
            return
        self._spool(op, run_op)
        with self._cond:
            due = time.monotonic() >= self._retry_at
            if not self._healthy and due and self._job is None and not self._closing:
                self._submit(None)

    def _submit(self, ops: list[dict[str, Any]] | None) -> _Job:
        self._job = job = _Job(ops)
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._work, name="carbon-callbacks-ledger", daemon=True
            )
            self._thread.start()
        self._cond.notify_all()
        return job

    def _spool(self, op: dict[str, Any], run_op: Mapping[str, Any] | None) -> None:
        run_id = str(op["row"].get("run_id"))
        with self._cond:
            ops = [op]
            # Even when the store has the run's row: the spool may be flushed into another
            # ledger (the store was lost, or moved), which must get the run too.
            if op["table"] != "runs" and run_op is not None and run_id not in self._spooled_runs:
                ops.insert(0, dict(run_op))
            self._spooled_runs.add(run_id)
        self.spools.extend(ops)

    def forget(self, run_id: str) -> None:
        """The run has ended: no later op of it needs its row."""
        with self._cond:
            self._spooled_runs.discard(run_id)

    def flush(self) -> int:
        """Write every spooled op to the store now, in the caller's thread.

        Raises:
            LedgerUnavailable: if the store still cannot be written (the spool is kept).
            LedgerError: if a spool cannot be read.
        """
        with self._store_lock:
            try:
                self.store.check()
                n = self.spools.drain(self.store.apply, strict=True)
            except LedgerDamaged:
                self._salvage()
                raise
            self._recovered()
            return n

    def apply_now(self, ops: Sequence[Mapping[str, Any]]) -> None:
        """Write ``ops`` in one transaction in the caller's thread (imports); raises on failure."""
        with self._store_lock:
            try:
                self.store.apply(ops)
            except LedgerDamaged:
                self._salvage()
                raise

    def close(self) -> bool:
        """Stop the worker (cutting a database write short) and close the store; True when
        both happened. Writes after this start a new worker and connection.

        Waits at most ``store.timeout + 1`` seconds. A worker still busy after that (which
        its own timeouts make rare) finishes its write on its own and the store stays open.
        """
        with self._cond:
            self._closing = True
            thread = self._thread
            self._cond.notify_all()
        ended = True
        if thread is not None and thread.is_alive():
            with self._cond:
                self._aborted = self.store.abort()
            thread.join(self.store.timeout + 1.0)
            ended = not thread.is_alive()
        if ended:
            with self._store_lock:
                self.store.close()
        else:
            logger.warning(
                "a ledger write to %s was still in progress after %.0f s; it ends by itself",
                self.store.label,
                self.store.timeout + 1.0,
            )
        with self._cond:
            self._closing = False
            self._aborted = False
        return ended

    # ------------------------------------------------------------------ the worker's side

    def _work(self) -> None:
        while True:
            with self._cond:
                while self._job is None and not self._closing:
                    if not self._cond.wait(IDLE_EXIT) and self._job is None:
                        self._thread = None
                        return
                job = self._job
                if job is None:  # closing with nothing to do
                    self._thread = None
                    return
            try:
                job.stored = self._do(job)
            finally:
                job.done.set()
                with self._cond:
                    self._job = None
                    self._cond.notify_all()

    def _do(self, job: _Job) -> bool:
        """Drain the spools, then write the job's ops; True when they were stored (or set
        aside for good)."""
        with self._store_lock:
            self._started = time.monotonic()
            try:
                self._drain()
                if job.ops:
                    self.store.apply(job.ops)
            except LedgerRejected as exc:
                # The store is up but will never take this row: set it aside, not retry.
                assert job.ops is not None
                try:
                    self.spools.primary._set_aside([(op, str(exc)) for op in job.ops])
                except OSError:
                    return False
                return True
            except LedgerDamaged as exc:
                self._failed(str(exc), salvaged=self._salvage())
                return False
            except LedgerError as exc:
                self._failed(str(exc))
                return False
            except Exception as exc:  # noqa: BLE001 - anything unforeseen: spool, never raise
                self._failed(f"ledger write failed ({type(exc).__name__}: {exc})")
                return False
            self._recovered()
            return True

    def _drain(self) -> None:
        """Write the spooled ops to the store (a file that fails its check is refused first).

        Raises:
            LedgerUnavailable: if the store cannot be written (the spools are kept).
        """
        if self.spools.pending():
            self.store.check()
            self.spools.drain(self.store.apply, strict=False)

    def _salvage(self) -> int:
        """Copy what the damaged store's connection can still read to the spool; returns how
        many rows were copied."""
        salvage: Callable[[float], Any] | None = getattr(self.store, "salvage", None)
        if salvage is None:
            return 0
        n = 0
        try:
            for batch in salvage(self.store.timeout):
                self.spools.extend(batch)
                n += len(batch)
        except Exception as exc:  # noqa: BLE001 - a salvage must never raise into a write
            logger.warning("salvaging %s stopped early (%s)", self.store.label, exc)
        with self._cond:
            self._spooled_runs.clear()  # the salvage has every run row it could read: copy again
        return n

    def _failed(self, reason: str, *, salvaged: int | None = None) -> None:
        with self._cond:
            if self._aborted:
                # close() cut this write short: say what it waited for, not how it ended.
                reason = (
                    f"ledger database {self.store.label} gave no answer in "
                    f"{time.monotonic() - self._started:.1f} s, until the run ended"
                )
            self._healthy = False
            self.last_error = reason
            self._retry_at = time.monotonic() + self.retry_interval
        spool = self.spools.primary.path
        if salvaged is not None:
            _warned(
                ("damaged", self.store.label),
                "%s; the %d record(s) its connection could still read (every run this process "
                "wrote first) were copied to %s, where new records go too",
                reason,
                salvaged,
                spool,
            )
            return
        _warned(
            ("store", self.store.label, reason),
            "%s; records are kept in %s and will be written when the ledger is back "
            "(or run `carbon-callbacks spool flush`)",
            reason,
            spool,
        )

    def _recovered(self) -> None:
        with self._cond:
            self._healthy = True
            self.last_error = ""
            self._retry_at = 0.0
            self._spooled_runs.clear()
