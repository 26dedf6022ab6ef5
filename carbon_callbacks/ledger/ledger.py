"""The run ledger: an append-only store of every run and each of its epoch records.

One SQLite file in WAL mode by default (stdlib ``sqlite3``, nothing to install), at a per-user
data location; the same tables on PostgreSQL (or any SQLAlchemy URL) for a team. Each epoch is
committed as it ends, so a killed run keeps every finished epoch, and several processes can write
at once. When the store cannot be written (a corrupt, locked, read-only or full SQLite file, an
unreachable or locked database), records go to a local JSONL spool instead, the user is told
once, and the spool is written to the store in the background once it is back (or by
``carbon-callbacks spool flush``). ``writer.py`` says what a write may cost the training loop.

Nothing is ever updated in place: a run is one row written when it starts, one row per epoch,
and one row when it ends.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carbon_callbacks.ledger import schema
from carbon_callbacks.ledger.database_store import SqlAlchemyStore
from carbon_callbacks.ledger.errors import LedgerError
from carbon_callbacks.ledger.interchange import import_ops, window_run
from carbon_callbacks.ledger.location import (
    check_location,
    default_data_dir,
    default_location,
    digest,
    identity,
    sqlalchemy_url,
    sqlite_path,
)
from carbon_callbacks.ledger.reads import LedgerReads
from carbon_callbacks.ledger.spool import Spool, Spools
from carbon_callbacks.ledger.sqlite_store import SqliteStore
from carbon_callbacks.ledger.writer import Writer
from carbon_callbacks.records import EpochRecord, RunEnd, Window

if TYPE_CHECKING:
    from carbon_callbacks.intensity import IntensitySpec

MAX_WAIT = 1.0
"""Default seconds a write waits for a healthy store's commit before spooling its record."""


class Ledger(LedgerReads):
    """An append-only store of runs and their per-epoch records (SQLite or a database URL).

    Writes never raise for an unavailable store: they go to a JSONL spool, one warning is
    logged, and the spool is written to the store in the background once it is back, or by
    ``flush_spool()`` (``carbon-callbacks spool flush``). Reads raise ``LedgerError``.

    A write (``start_run``, ``add_epoch``, ``end_run``) waits at most ``max_wait`` seconds,
    and only while the store is healthy: after a failure, writes are spooled at once and the
    store is retried off the caller's thread. ``close()`` waits at most ``timeout + 1``
    seconds for a write in progress.

    Args:
        location: a SQLite file path, a ``sqlite:///`` URL, or a SQLAlchemy database URL such
            as ``postgresql+psycopg://user:pw@host/db`` (``postgresql://`` means psycopg 3).
        spool: the JSONL spool file; default ``<ledger file>.spool.jsonl`` for SQLite, a file
            in the per-user data folder for a database URL, named from the database's host,
            port and name (not its user or password, so fixing those finds the spool).
        timeout: seconds a write may take in the store off the caller's thread: a background
            retry's wait for a locked SQLite file, and a database's connection, lock and
            statement timeouts.
        retry_interval: after a failure, seconds before the store is tried again.
        max_wait: seconds a write waits for a healthy store: for a locked SQLite file (then
            the record is spooled and the file retried in the background), or for a
            database's commit (past it the record is spooled too; the commit still lands and
            the duplicate is ignored).
        read_only: only read: writes raise ``LedgerError`` instead of spooling, no schema is
            created or migrated, and on PostgreSQL every transaction is ``READ ONLY``, so the
            server refuses a write whatever the role may do (SQLite is always read through
            read-only connections).

    Raises:
        ValueError: for a malformed location, an unknown database kind or a missing driver
            (checked without connecting; a server that is down only makes writes spool).

    Example::

        ledger = Ledger.open()                       # $CARBON_CALLBACKS_LEDGER or per-user file
        run_id = ledger.start_run({"project": "digits", "framework": "lightning"})
        ledger.add_epoch(run_id, record)             # committed (or spooled) before it returns
        ledger.end_run(run_id, end=RunEnd("stopped", "policy", "gain per kg below threshold"))
        print(ledger.runs()[-1].co2_g)
    """

    def __init__(
        self,
        location: str | os.PathLike[str],
        *,
        spool: str | os.PathLike[str] | None = None,
        timeout: float = 5.0,
        retry_interval: float = 10.0,
        max_wait: float = MAX_WAIT,
        read_only: bool = False,
    ) -> None:
        for name, value, low in (("timeout", timeout, 0.0), ("max_wait", max_wait, 0.0)):
            if not value > low:
                raise ValueError(f"{name} must be > 0 seconds, got {value!r}")
        if retry_interval < 0:
            raise ValueError(f"retry_interval must be >= 0 seconds, got {retry_interval!r}")
        location = os.fspath(location)
        check_location(location)
        self.location = location
        data = default_data_dir()
        fallback = data / f"spool-{digest(identity(location))}.jsonl"
        path = sqlite_path(location)
        self._store: SqliteStore | SqlAlchemyStore
        if path is not None:
            self._store = SqliteStore(path, timeout)
            default_spool = path.with_name(path.name + ".spool.jsonl")
            if path.parent.is_dir() and not os.access(path.parent, os.W_OK):
                default_spool = fallback  # the ledger's folder is read-only for this user
        else:
            self._store = SqlAlchemyStore(sqlalchemy_url(location), timeout, read_only=read_only)
            default_spool = fallback
        self.spool_path = Path(spool) if spool is not None else default_spool
        # Also drained: where records go if the spool cannot be written (its folder is gone
        # or read-only), and a spool named from the whole URL by older versions.
        paths = [self.spool_path, fallback, data / f"spool-{digest(location)}.jsonl"]
        spools = [Spool(p) for p in dict.fromkeys(paths) if p in paths[:2] or p.exists()]
        self._writer = Writer(
            self._store,
            Spools(spools, self._store.label),
            max_wait=max_wait,
            retry_interval=retry_interval,
        )
        self._positions: dict[str, int] = {}
        self._run_ops: dict[str, dict[str, Any]] = {}
        self._lock = threading.RLock()
        self.read_only = read_only

    @classmethod
    def open(cls, url: str | os.PathLike[str] | None = None, **kwargs: Any) -> Ledger:
        """Open a ledger: ``url``, else ``$CARBON_CALLBACKS_LEDGER``, else the per-user file.

        Opening never fails because the store is down; the first write finds out and spools.

        Args:
            url: a file path or database URL (see the class docstring); None for the default.
            **kwargs: passed to ``Ledger`` (``spool``, ``timeout``, ``retry_interval``,
                ``max_wait``).

        Returns:
            The ledger.
        """
        return cls(default_location() if url is None else url, **kwargs)

    @property
    def last_error(self) -> str:
        """Why the last write could not be stored ("" once the store took one again)."""
        return self._writer.last_error

    # ---------------------------------------------------------------- writes

    def start_run(self, metadata: Mapping[str, Any] | None = None) -> str:
        """Record a new run and return its id.

        Args:
            metadata: any of ``project, team, user, host, git_commit, framework,
                hyperparameters, start_wall, location, intensity_source, hardware, methods,
                source, run_id``; missing user, host, git commit and start time are filled in,
                project and team fall back to ``$CARBON_CALLBACKS_PROJECT``/``_TEAM``. Other
                keys are kept in the run's ``metadata``.

        Returns:
            The run id (generated here, so it is valid even while the store is down).
        """
        op = self._run_op(metadata or {})
        run_id = op["row"]["run_id"]
        with self._lock:
            self._run_ops[run_id] = op
        self._write(op)
        return run_id

    def _run_op(self, metadata: Mapping[str, Any], *, fill: bool = True) -> dict[str, Any]:
        return schema.run_op(metadata, fill=fill)

    def add_epoch(self, run_id: str, record: EpochRecord) -> None:
        """Append one epoch record; it is committed (or spooled) when this returns.

        Args:
            run_id: the id ``start_run`` returned.
            record: the epoch's record.

        Raises:
            TypeError: if ``record`` is not an ``EpochRecord``.
        """
        self._write(self._epoch_op(run_id, record))

    def _epoch_op(self, run_id: str, record: EpochRecord) -> dict[str, Any]:
        if not isinstance(record, EpochRecord):  # before a position is taken
            raise TypeError(f"record must be an EpochRecord, got {type(record).__name__}")
        with self._lock:
            position = self._positions.get(run_id, 0)
            self._positions[run_id] = position + 1
        return schema.epoch_op(run_id, record, uid=None, position=position)

    def end_run(
        self,
        run_id: str,
        *,
        end: RunEnd | None = None,
        stopped_early: bool = False,
        stop_reason: str = "",
        end_wall: float | None = None,
    ) -> None:
        """Record that a run ended (once; a second call for the same run is ignored).

        Args:
            run_id: the id ``start_run`` returned.
            end: how it ended (completed, stopped by whom, failed, interrupted) and why.
            stopped_early: without ``end``: whether it stopped before its planned end.
            stop_reason: without ``end``: why, in words.
            end_wall: when it ended (default now).
        """
        if end is None:
            end = schema.run_end(stopped_early=stopped_early, stop_reason=stop_reason)
        self._write(schema.end_op(run_id, end, end_wall))
        with self._lock:
            # The run takes no more epochs: a long-lived ledger (a sweep) keeps nothing per run.
            self._positions.pop(run_id, None)
            self._run_ops.pop(run_id, None)
        self._writer.forget(run_id)

    def _write(self, op: dict[str, Any]) -> None:
        if self.read_only:
            raise LedgerError(f"the ledger {self.label} was opened read-only; it takes no writes")
        with self._lock:
            run_op = self._run_ops.get(op["row"]["run_id"])
        self._writer.write(op, run_op)

    def record_window(
        self,
        window: Window,
        *,
        intensity: IntensitySpec = None,
        pue: float = 1.0,
        metadata: Mapping[str, Any] | None = None,
    ) -> str:
        """Record a whole ``EnergyMeter`` measurement as a run with one record (stage "meter").

        For code measured with ``EnergyMeter`` outside any training callback, so it lands in
        the same reports as training runs.

        Args:
            window: what ``EnergyMeter.stop()`` (or ``meter.window(a, b)``) returned.
            intensity: as for the callbacks: gCO2e/kWh, a zone code, a source, or None.
            pue: data-centre PUE applied to CO2e.
            metadata: run metadata (project, team...).

        Returns:
            The run id.

        Example::

            with EnergyMeter() as meter:
                preprocess()
            Ledger.open().record_window(meter.stop(), intensity="FR", metadata={"project": "etl"})
        """
        meta, record = window_run(window, intensity=intensity, pue=pue, metadata=metadata)
        run_id = self.start_run(meta)
        self.add_epoch(run_id, record)
        self.end_run(run_id, end_wall=window.end_wall)
        return run_id

    def flush_spool(self) -> int:
        """Write every spooled record to the store now.

        Returns:
            How many spooled writes were applied (0 when the spool was empty).

        Raises:
            LedgerUnavailable: if the store still cannot be written (the spool is kept);
                ``LedgerDamaged`` for a SQLite file that fails its integrity check.
        """
        return self._writer.flush()

    def spooled(self) -> int:
        """How many writes are waiting in the spool."""
        return self._writer.spools.count()

    def import_runs(self, runs: Iterable[tuple[Mapping[str, Any], Sequence[EpochRecord]]]) -> int:
        """Write whole runs (metadata with ``run_id``, epochs, optional end) in one transaction.

        Used by the importers. Every row keeps its id (run id; epoch uid from
        ``epoch_uids``, else ``"<run_id>:<index>"``) and rows already stored are left as they
        are, so re-importing adds nothing, and re-importing a run that grew since adds its
        new epochs and its end.

        Args:
            runs: pairs of (metadata, epoch records); metadata may carry ``end_wall``,
                ``stopped_early``, ``stop_reason`` and ``epoch_uids`` (one per record).

        Returns:
            How many runs were new.

        Raises:
            LedgerUnavailable: if the store cannot be written.
        """
        ops, new = import_ops(runs, {r.run_id for r in self.runs()})
        if ops:
            self._writer.apply_now(ops)
        return new

    def close(self) -> None:
        """Stop the writer (at most ``timeout + 1`` seconds) and close the connection; the
        spool stays for the next open."""
        self._writer.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({self.label!r})"
