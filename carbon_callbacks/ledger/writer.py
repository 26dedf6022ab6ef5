"""The write path: each op to the store, or to the spool when the store cannot take it.

What a write can cost the thread that makes it (the training loop):

- While the store is healthy, a write waits for its commit, at most ``max_wait`` seconds. A
  SQLite file is written in the caller's thread, its wait for a lock cut to ``max_wait``; a
  database is written by a worker thread, so that the caller can stop waiting after
  ``max_wait`` whatever the network does. A commit that outlasts the wait goes on in the
  worker and the op is spooled as well (if the commit then lands, the spooled copy is a
  duplicate the store ignores: every insert is ``ON CONFLICT DO NOTHING``).
- Once a write has failed, writes go straight to the spool (a local append and fsync) and the
  store is retried by the worker, in the background, at most every ``retry_interval`` seconds,
  by draining the spool: a dead, locked or black-holed store never holds the training loop
  again. A spool left from before is drained in the background too.
- ``close()`` waits at most ``timeout + 1`` seconds for a write or retry in progress (it first
  cuts a database transaction short by shutting its socket down; a connection attempt ends by
  its own ``connect_timeout``).

So when a write returns, its op is committed or in the spool on disk. Each spooled op of a run
started by this ledger is preceded by that run's row (once per spool), so the spool alone
recreates the run. When the SQLite file turns out damaged under the writer, the worker salvages
what the writer's connection can still read to the spool before anything else touches it.

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
    local: bool
    """A file on this machine (written in the caller's thread), not a server."""

    def apply(self, ops: Sequence[Mapping[str, Any]], *, wait: float | None = None) -> None: ...

    def check(self) -> None: ...

    def abort(self) -> bool: ...

    def close(self) -> None: ...


class _Job:
    """Work for the worker: ops to write after draining the spool (None: only drain), or the
    damage to salvage after."""

    def __init__(self, ops: list[dict[str, Any]] | None = None, *, damage: str = "") -> None:
        self.ops = ops
        self.damage = damage
        self.done = threading.Event()
        self.stored = False


class Writer:
    """Writes ops to a store, spooling what it cannot take (see the module's bounds).

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
        self._damage = ""  # found in the caller's thread: the worker salvages before all else
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
        if self.store.local:
            if self._write_here(op):
                return
        else:
            with self._cond:
                job = self._submit(_Job([op])) if self._healthy else None
            if job is not None and job.done.wait(self.max_wait) and job.stored:
                return
        self._spool(op, run_op)
        if not self._healthy and time.monotonic() >= self._retry_at:
            with self._cond:
                self._submit(_Job())

    def _write_here(self, op: dict[str, Any]) -> bool:
        """Write ``op`` in this thread; True when stored (or set aside for good)."""
        if not self._healthy or self._closing:
            return False
        if not self._store_lock.acquire(blocking=False):
            return False  # the worker is at the store: spool rather than wait behind it
        try:
            stored = self._attempt(
                lambda: self.store.apply([op], wait=self.max_wait), [op], here=True
            )
        finally:
            self._store_lock.release()
        if stored and self.spools.pending():
            with self._cond:
                self._submit(_Job())  # a spool from before: drained off this thread
        return stored

    def _submit(self, job: _Job) -> _Job | None:
        """Hand ``job`` to the worker (held by ``_cond``); None when it is busy or closing."""
        if self._job is not None or self._closing:
            return None
        self._job = job
        self._wake()
        return job

    def _wake(self) -> None:
        """Start the worker if it is not running, and tell it there is work (held by ``_cond``)."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._work, name="carbon-callbacks-ledger", daemon=True
            )
            self._thread.start()
        self._cond.notify_all()

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
            self._recovered(drained=True)
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
                while self._job is None and not self._damage and not self._closing:
                    if not self._cond.wait(IDLE_EXIT) and self._job is None and not self._damage:
                        self._thread = None
                        return
                if self._damage:  # the damaged file's connection is salvaged before all else
                    job, self._damage = _Job(damage=self._damage), ""
                elif self._job is not None:
                    job = self._job
                else:  # closing with nothing to do
                    self._thread = None
                    return
            try:
                with self._store_lock:
                    self._started = time.monotonic()
                    job.stored = self._do(job)
            finally:
                job.done.set()
                with self._cond:
                    if self._job is job:
                        self._job = None
                    self._cond.notify_all()

    def _do(self, job: _Job) -> bool:
        if job.damage:
            self._failed(job.damage, salvaged=self._salvage())
            return False

        def drain_then_write() -> None:
            if self.spools.pending():
                self.store.check()  # a file that fails its check is refused first
                self.spools.drain(self.store.apply, strict=False)
                self._recovered(drained=True)
            if job.ops:
                self.store.apply(job.ops)

        return self._attempt(drain_then_write, job.ops, here=False)

    def _attempt(
        self, write: Callable[[], None], ops: Sequence[Mapping[str, Any]] | None, *, here: bool
    ) -> bool:
        """Run ``write`` against the store (its lock held); True when ``ops`` were stored or
        set aside for good. In the caller's thread (``here``) a damaged file is not salvaged
        but handed to the worker."""
        try:
            write()
        except LedgerRejected as exc:
            # The store is up but will never take this row: set it aside, not retry.
            try:
                self.spools.primary._set_aside([(op, str(exc)) for op in ops or ()])
            except OSError:
                return False
            return bool(ops)
        except LedgerDamaged as exc:
            if here:
                self._mark_failed(str(exc))
                with self._cond:
                    self._damage = str(exc)
                    self._wake()
            else:
                self._failed(str(exc), salvaged=self._salvage())
            return False
        except LedgerError as exc:
            self._failed(str(exc))
            return False
        except Exception as exc:  # noqa: BLE001 - anything unforeseen: spool, never raise
            self._failed(f"ledger write failed ({type(exc).__name__}: {exc})")
            return False
        self._recovered(drained=False)
        return True

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

    def _mark_failed(self, reason: str) -> str:
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
        return reason

    def _failed(self, reason: str, *, salvaged: int | None = None) -> None:
        reason = self._mark_failed(reason)
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

    def _recovered(self, *, drained: bool) -> None:
        with self._cond:
            self._healthy = True
            self.last_error = ""
            self._retry_at = 0.0
            if drained:
                self._spooled_runs.clear()
