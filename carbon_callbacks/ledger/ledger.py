"""The run ledger: an append-only store of every run and each of its epoch records.

One SQLite file in WAL mode by default (stdlib ``sqlite3``, nothing to install), at a per-user
data location; the same tables on PostgreSQL (or any SQLAlchemy URL) for a team. Each epoch is
committed as it ends, so a killed run keeps every finished epoch, and several processes can write
at once. When the store cannot be written (a corrupt or locked SQLite file, an unreachable
server), records go to a local JSONL spool instead, the user is told once, and the spool is
written to the store as soon as it is back (or by ``carbon-callbacks spool flush``).

Nothing is ever updated in place: a run is one row written when it starts, one row per epoch,
and one row when it ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carbon_callbacks.ledger import schema
from carbon_callbacks.ledger.errors import LedgerError, LedgerRejected
from carbon_callbacks.ledger.interchange import import_ops, window_run
from carbon_callbacks.ledger.location import (
    check_url,
    default_data_dir,
    default_location,
    digest,
    redact,
    sqlalchemy_url,
    sqlite_path,
)
from carbon_callbacks.ledger.pages import (
    EpochMetrics,
    RunsPage,
    check_page,
    epoch_metrics,
    epoch_metrics_query,
    page_queries,
)
from carbon_callbacks.ledger.runs import (
    RunInfo,
    match_run,
    run_filters,
    run_info,
    run_query,
    runs_query,
)
from carbon_callbacks.ledger.spool import Spool
from carbon_callbacks.ledger.stores import SqlAlchemyStore, SqliteStore
from carbon_callbacks.records import EpochRecord, RunEnd, Window

if TYPE_CHECKING:
    from carbon_callbacks.intensity import IntensitySpec

logger = logging.getLogger(__name__)

_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


def _warn_once(key: tuple[str, str], msg: str, *args: Any) -> None:
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    logger.warning(msg, *args)


class Ledger:
    """An append-only store of runs and their per-epoch records (SQLite or a database URL).

    Writes never raise for an unavailable store: they go to a JSONL spool, one warning is
    logged, and the spool is written to the store on the next successful write or by
    ``flush_spool()`` (``carbon-callbacks spool flush``). Reads raise ``LedgerError``.

    Args:
        location: a SQLite file path, a ``sqlite:///`` URL, or a SQLAlchemy database URL such
            as ``postgresql+psycopg://user:pw@host/db`` (``postgresql://`` means psycopg 3).
        spool: the JSONL spool file; default ``<ledger file>.spool.jsonl`` for SQLite, a file
            in the per-user data folder for a database URL.
        timeout: seconds to wait for a locked SQLite file or a database connection.
        retry_interval: after a failure, seconds before a write tries the store again (the
            spool takes the records meanwhile, so a dead server does not slow every epoch).
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
        ledger.add_epoch(run_id, record)             # committed before it returns
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
        read_only: bool = False,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        if retry_interval < 0:
            raise ValueError(f"retry_interval must be >= 0 seconds, got {retry_interval!r}")
        location = os.fspath(location)
        if not location.strip():
            raise ValueError("ledger location is empty; give a file path or a database URL")
        self.location = location
        path = sqlite_path(location)
        self._store: SqliteStore | SqlAlchemyStore
        if path is not None:
            self._store = SqliteStore(path, timeout)
            default_spool = path.with_name(path.name + ".spool.jsonl")
            if path.parent.is_dir() and not os.access(path.parent, os.W_OK):
                # The ledger's folder is read-only: keep the spool where this user can write.
                default_spool = default_data_dir() / f"spool-{digest(str(path))}.jsonl"
        else:
            check_url(sqlalchemy_url(location), redact(location))
            self._store = SqlAlchemyStore(sqlalchemy_url(location), timeout, read_only=read_only)
            default_spool = default_data_dir() / f"spool-{digest(location)}.jsonl"
        self.spool_path = Path(spool) if spool is not None else default_spool
        self._spool = Spool(self.spool_path)
        # Where records go if even the spool cannot be written (its folder is gone or
        # read-only); drained together with the spool.
        fallback = default_data_dir() / f"spool-{digest(self.location)}.jsonl"
        self._spools = [self._spool]
        if fallback != self.spool_path:
            self._spools.append(Spool(fallback))
        self._retry_interval = retry_interval
        self._retry_at = 0.0
        self._positions: dict[str, int] = {}
        self._lock = threading.RLock()
        self.last_error: str = ""
        self.read_only = read_only

    @classmethod
    def open(cls, url: str | os.PathLike[str] | None = None, **kwargs: Any) -> Ledger:
        """Open a ledger: ``url``, else ``$CARBON_CALLBACKS_LEDGER``, else the per-user file.

        Opening never fails because the store is down; the first write finds out and spools.

        Args:
            url: a file path or database URL (see the class docstring); None for the default.
            **kwargs: passed to ``Ledger`` (``spool``, ``timeout``, ``retry_interval``).

        Returns:
            The ledger.
        """
        return cls(default_location() if url is None else url, **kwargs)

    @property
    def label(self) -> str:
        """Where the ledger is, for messages (passwords redacted)."""
        return self._store.label

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
        self._write(op)
        return op["row"]["run_id"]

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

    def _write(self, op: Mapping[str, Any]) -> None:
        if self.read_only:
            raise LedgerError(f"the ledger {self.label} was opened read-only; it takes no writes")
        with self._lock:
            if time.monotonic() >= self._retry_at:
                try:
                    self._drain_spools()
                    self._store.apply([op])
                    self.last_error = ""
                    return
                except LedgerRejected as exc:
                    # The store is up but will never take this row: set it aside, not retry.
                    with contextlib.suppress(OSError):
                        self._spool._set_aside([(op, str(exc))])
                        return
                except LedgerError as exc:
                    self._note_unavailable(str(exc))
                except Exception as exc:  # anything unforeseen: spool, never raise into training
                    self._note_unavailable(f"ledger write failed ({type(exc).__name__}: {exc})")
            errors = []
            for spool in self._spools:
                try:
                    spool.append(op)
                except OSError as exc:
                    errors.append(f"{spool.path}: {exc.strerror or exc}")
                    continue
                if errors:
                    _warn_once(
                        ("spool", str(self.spool_path)),
                        "cannot write the ledger spool (%s); records are kept in %s instead",
                        errors[0],
                        spool.path,
                    )
                return
            # Nowhere left to keep it: say so, but never take training down.
            _warn_once(("lost", self.label), "ledger record lost: %s", "; ".join(errors))

    def _drain_spools(self) -> None:
        """Write the spooled ops to the store; a spool that cannot be read is left for later.

        Raises:
            LedgerUnavailable: if the store cannot be written (the spools are kept).
        """
        for spool in self._spools:
            if not spool.pending():
                continue
            try:
                spool.drain(self._store.apply)
            except LedgerError:
                raise
            except Exception as exc:
                # The spool file, not the store, is the problem (unreadable, a folder, a full
                # disk on truncate): new records still go to the store.
                _warn_once(
                    ("drain", str(spool.path)),
                    "cannot read the ledger spool %s (%s: %s); its records stay there until "
                    "`carbon-callbacks spool flush` can read it",
                    spool.path,
                    type(exc).__name__,
                    exc,
                )

    def _note_unavailable(self, reason: str) -> None:
        self.last_error = reason
        self._retry_at = time.monotonic() + self._retry_interval
        _warn_once(
            ("store", self.label),
            "%s; records are kept in %s and will be written when the ledger is back "
            "(or run `carbon-callbacks spool flush`)",
            reason,
            self.spool_path,
        )

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
            LedgerUnavailable: if the store still cannot be written (the spool is kept).
        """
        with self._lock:
            n = 0
            for spool in self._spools:
                try:
                    n += spool.drain(self._store.apply)
                except OSError as exc:
                    raise LedgerError(
                        f"cannot read the ledger spool {spool.path}: {exc.strerror or exc}"
                    ) from exc
            self._retry_at = 0.0
            self.last_error = ""
            return n

    def spooled(self) -> int:
        """How many writes are waiting in the spool."""
        return sum(spool.count() for spool in self._spools)

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
            with self._lock:
                self._store.apply(ops)
        return new

    # ---------------------------------------------------------------- reads

    def runs(
        self,
        *,
        project: str | None = None,
        team: str | None = None,
        user: str | None = None,
        since: float | None = None,
        until: float | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> list[RunInfo]:
        """Every run, oldest first, with totals (and their ranges) over its epoch rows.

        Args:
            project: only runs of this project.
            team: only runs of this team.
            user: only runs of this user.
            since: only runs started at or after this wall time (epoch seconds).
            until: only runs started before this wall time.
            tags: only runs whose metadata holds each of these keys with this value (as text).

        Returns:
            The runs.

        Raises:
            LedgerUnavailable: if the store cannot be read.
            ValueError: for a tag key that is not a plain name.
        """
        where, params = run_filters(
            self._store.metadata_text, project=project, team=team, user=user, since=since,
            until=until, tags=tags,
        )  # fmt: skip
        sql, params = runs_query(where, params)
        with self._lock:
            rows = self._store.query(sql, params)
        return [run_info(row) for row in rows]

    def runs_page(
        self,
        *,
        order_by: str = "started",
        descending: bool = True,
        limit: int = 50,
        offset: int = 0,
        framework: str | None = None,
        status: str | None = None,
        **filters: Any,
    ) -> RunsPage:
        """One page of runs, sorted, filtered and paged by the database, and the match count.

        The page's runs are chosen first and only they have their epoch rows summed in full;
        sorted by a total (``epochs``, ``energy``, ``co2``), that one sum is taken over every
        run, which is what sorting by it takes.

        Args:
            order_by: one of ``RUN_ORDERS``.
            descending: largest (or latest) first.
            limit: runs per page (1 to 1,000).
            offset: runs to skip.
            framework: only runs of this framework.
            status: ``running`` (no end recorded: running or killed), or how it ended:
                ``completed``, ``stopped`` (by a rule, early stopping, a pruner or the user),
                ``failed`` or ``interrupted``.
            **filters: ``project``, ``team``, ``user``, ``since``, ``until``, ``tags`` as
                ``runs()`` takes them.

        Raises:
            ValueError: for an unknown ``order_by``, ``status`` or filter, a bad ``limit``
                or ``offset``.
            LedgerUnavailable: if the store cannot be read.
        """
        check_page(order_by, status, limit, offset)
        where, params = run_filters(self._store.metadata_text, **filters)
        sql, count_sql, params = page_queries(
            where, params, order_by=order_by, descending=descending, limit=limit,
            offset=offset, framework=framework, status=status,
        )  # fmt: skip
        with self._lock:
            rows = self._store.query(sql, params)
            count = self._store.query(count_sql, params)
        total = int(count[0]["n"]) if count else 0
        return RunsPage(tuple(run_info(row) for row in rows), total, offset, limit)

    def run(self, run_id: str) -> RunInfo:
        """One run by its id or a unique prefix of it (reading only the candidates).

        Raises:
            LedgerError: if no run (or more than one) matches.
        """
        sql, params = run_query(run_id)
        with self._lock:
            rows = self._store.query(sql, params)
            if not rows and self._store.query("SELECT run_id FROM runs LIMIT 1", {}):
                raise LedgerError(
                    f"no run {run_id!r} in {self.label}; `carbon-callbacks runs` lists them"
                )
        return match_run([run_info(row) for row in rows], run_id, self.label)

    def epoch_metrics(self, run_ids: Sequence[str]) -> dict[str, list[EpochMetrics]]:
        """Several runs' logged metrics, epoch by epoch, in one light query.

        Only the epoch, stage and metrics columns are read, so a page of runs can show each
        one's best metric without loading every record.

        Args:
            run_ids: full run ids (at most 1,000).

        Returns:
            Each run's rows in the order they ended (runs without epochs are absent).

        Raises:
            ValueError: for more than 1,000 ids.
            LedgerUnavailable: if the store cannot be read.
        """
        if len(run_ids) > 1000:
            raise ValueError(f"run_ids: at most 1000 runs per call, got {len(run_ids)}")
        if not run_ids:
            return {}
        sql, params = epoch_metrics_query(run_ids)
        with self._lock:
            return epoch_metrics(self._store.query(sql, params))

    def epochs(self, run_id: str) -> list[EpochRecord]:
        """The run's epoch records in the order they ended.

        Raises:
            LedgerUnavailable: if the store cannot be read.
        """
        return [rec for _, rec in self.epochs_with_uids(run_id)]

    def epochs_with_uids(self, run_id: str) -> list[tuple[str, EpochRecord]]:
        """The run's records with their row ids (exports carry them so imports stay exact)."""
        sql = "SELECT * FROM epochs WHERE run_id = :run_id ORDER BY end_wall, position"
        with self._lock:
            rows = self._store.query(sql, {"run_id": run_id})
        return [(str(row["uid"]), schema.epoch_record(row)) for row in rows]

    def close(self) -> None:
        """Close the connection (the spool stays for the next open)."""
        with self._lock:
            self._store.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({self.label!r})"
