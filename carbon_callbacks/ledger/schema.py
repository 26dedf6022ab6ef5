"""The ledger's tables: columns, migrations (one runner for both stores), and rows <-> values.

Nothing is ever updated in place: a run is one row written when it starts, one row per epoch,
and one row when it ends. A write is an "op", ``{"table": ..., "row": {...}}``, so the same value
can go to a store or, while the store is down, to the spool.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from carbon_callbacks.ledger import host
from carbon_callbacks.ledger.errors import LedgerUnavailable
from carbon_callbacks.ledger.location import location_from_provenance
from carbon_callbacks.records import EpochRecord, RunEnd

ENV_PROJECT = "CARBON_CALLBACKS_PROJECT"
ENV_TEAM = "CARBON_CALLBACKS_TEAM"

SCHEMA_VERSION = 3
"""The schema this code writes; older ledgers are migrated on open, newer ones are refused."""

FLOAT_COLUMNS = (
    "start_wall",
    "end_wall",
    "seconds",
    "energy_kwh",
    "energy_kwh_low",
    "energy_kwh_high",
    "co2_g",
    "co2_g_low",
    "co2_g_high",
    "energy_kwh_total",
    "co2_g_total",
    "power_w",
    "intensity_g_per_kwh",
    "cpu_energy_kwh",
    "gpu_energy_kwh",
    "ram_energy_kwh",
    "pue",
)

# Each entry upgrades the schema by one version. The SQL is the common subset of SQLite and
# PostgreSQL so both stores run the same statements. Never edit a released step: add one.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "CREATE TABLE IF NOT EXISTS runs ("
        " run_id TEXT PRIMARY KEY, project TEXT, team TEXT, user_name TEXT, host TEXT,"
        " git_commit TEXT, framework TEXT, start_wall DOUBLE PRECISION, location TEXT,"
        " intensity_source TEXT, hardware TEXT, methods TEXT, hyperparameters TEXT,"
        " metadata TEXT, recorded DOUBLE PRECISION)",
        "CREATE TABLE IF NOT EXISTS epochs ("
        " uid TEXT PRIMARY KEY, run_id TEXT NOT NULL, position INTEGER, epoch INTEGER,"
        " stage TEXT, "
        + ", ".join(f"{c} DOUBLE PRECISION" for c in FLOAT_COLUMNS)
        + ", intensity_source TEXT, methods TEXT, metrics TEXT, recorded DOUBLE PRECISION)",
        "CREATE INDEX IF NOT EXISTS epochs_by_run ON epochs (run_id, end_wall)",
        "CREATE TABLE IF NOT EXISTS run_ends ("
        " run_id TEXT PRIMARY KEY, end_wall DOUBLE PRECISION, stopped_early INTEGER,"
        " stop_reason TEXT, recorded DOUBLE PRECISION)",
    ),
    # v2: where a run came from (this library, or an imported CodeCarbon file), so imported
    # history can be told apart in reports.
    2: ("ALTER TABLE runs ADD COLUMN source TEXT",),
    # v3: how a run ended (records.RUN_STATUSES, who stopped it, the exception's type), what
    # kind of run it is (a fit, or an evaluation pass after one) and the run it continues or
    # evaluates, and which epoch records are the partial epoch a run ended inside.
    3: (
        "ALTER TABLE run_ends ADD COLUMN status TEXT",
        "ALTER TABLE run_ends ADD COLUMN stopped_by TEXT",
        "ALTER TABLE run_ends ADD COLUMN error_type TEXT",
        "ALTER TABLE runs ADD COLUMN kind TEXT",
        "ALTER TABLE runs ADD COLUMN parent_run TEXT",
        "ALTER TABLE epochs ADD COLUMN partial INTEGER",
    ),
}

_RUN_COLUMNS = (
    "run_id",
    "project",
    "team",
    "user_name",
    "host",
    "git_commit",
    "framework",
    "start_wall",
    "location",
    "intensity_source",
    "hardware",
    "methods",
    "hyperparameters",
    "metadata",
    "recorded",
    "source",
    "kind",
    "parent_run",
)
_EPOCH_COLUMNS = (
    "uid",
    "run_id",
    "position",
    "epoch",
    "stage",
    *FLOAT_COLUMNS,
    "intensity_source",
    "methods",
    "metrics",
    "recorded",
    "partial",
)
_END_COLUMNS = (
    "run_id",
    "end_wall",
    "stopped_early",
    "stop_reason",
    "recorded",
    "status",
    "stopped_by",
    "error_type",
)

_COLUMNS = {"runs": _RUN_COLUMNS, "epochs": _EPOCH_COLUMNS, "run_ends": _END_COLUMNS}

INSERT = {
    table: (
        f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)})"
        f" ON CONFLICT DO NOTHING"
    )
    for table, cols in _COLUMNS.items()
}


def columns(table: str) -> tuple[str, ...]:
    """The columns of one of the ledger's tables, in order."""
    return _COLUMNS[table]


def current_views(existing: Mapping[str, set[str]]) -> list[str]:
    """Statements that show an older ledger's tables with this code's columns, for reading.

    A reader never migrates (it may have no write access), so a query naming a column added
    since (``run_ends.status``) would fail on an older file. A TEMP view of the same name as
    the table, with each missing column as NULL, is found before the table and is written to
    the connection's own temporary schema, never to the file.

    Args:
        existing: each table's columns as the file has them (tables it lacks are left out).
    """
    statements = []
    for table, columns in _COLUMNS.items():
        have = existing.get(table)
        if have is None or set(columns) <= have:
            continue
        cols = ", ".join(c if c in have else f"NULL AS {c}" for c in columns)
        statements.append(f"CREATE TEMP VIEW {table} AS SELECT {cols} FROM main.{table}")
    return statements


def row_values(op: Mapping[str, Any]) -> dict[str, Any]:
    # Every column gets a value (NULL when absent), so a row spooled by older code that did not
    # know a newer column (``source`` before schema v2) is still written.
    row = op["row"]
    return {c: row.get(c) for c in _COLUMNS[op["table"]]}


def is_op(op: Any) -> bool:
    """Whether a spooled JSON value is a write this code can apply."""
    return isinstance(op, dict) and op.get("table") in INSERT and isinstance(op.get("row"), dict)


def check_not_newer(current: int) -> None:
    """Refuse a ledger written by a newer carbon-callbacks (its rows may not mean what we think)."""
    if current > SCHEMA_VERSION:
        raise LedgerUnavailable(
            f"the ledger has schema version {current}, newer than this carbon-callbacks "
            f"understands ({SCHEMA_VERSION}); upgrade carbon-callbacks"
        )


_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_version"
    " (version INTEGER PRIMARY KEY, applied DOUBLE PRECISION)"
)
CURRENT_VERSION = "SELECT MAX(version) FROM schema_version"


def migrate(execute: Callable[[str, Mapping[str, Any]], Any], current: Callable[[], int]) -> None:
    """Bring the schema up to ``SCHEMA_VERSION``, inside the caller's transaction.

    Both stores run this one runner; each brings its own way to execute a statement (named
    ``:param`` style, which ``sqlite3`` and SQLAlchemy's ``text()`` both take) and its own lock
    (SQLite's ``BEGIN IMMEDIATE``, PostgreSQL's advisory lock), so two processes opening a new
    ledger at once do not both run the same step.

    Args:
        execute: runs one statement with its parameters.
        current: the highest version in ``schema_version`` (0 for none).

    Raises:
        LedgerUnavailable: if the ledger is newer than this code.
    """
    execute(_VERSION_TABLE, {})
    version_now = current()
    check_not_newer(version_now)
    for version in range(version_now + 1, SCHEMA_VERSION + 1):
        for statement in MIGRATIONS[version]:
            execute(statement, {})
        execute(
            "INSERT INTO schema_version (version, applied) VALUES (:v, :t)",
            {"v": version, "t": time.time()},
        )


def to_json(value: Any) -> str:
    return json.dumps(value if value is not None else {}, default=str, sort_keys=True)


def from_json(text: Any) -> Any:
    if not text:
        return {}
    try:
        return json.loads(text)
    except (TypeError, json.JSONDecodeError):
        return {}


def run_op(metadata: Mapping[str, Any], *, fill: bool = True) -> dict[str, Any]:
    """The ``runs`` row for a run's metadata (see ``Ledger.start_run`` for the keys).

    Args:
        metadata: the run's metadata; unknown keys are kept in its ``metadata`` column.
        fill: fill in this machine's user, host, commit and hardware where missing (False for
            imports: this machine's facts are not the imported run's).
    """
    meta = dict(metadata)
    run_id = str(meta.pop("run_id", "") or uuid.uuid4().hex[:12])
    now = time.time()

    def pop(key: str, default: Any = "") -> Any:
        value = meta.pop(key, None)
        return default if value is None or value == "" else value

    intensity_source = str(pop("intensity_source"))
    row = {
        "run_id": run_id,
        "project": str(pop("project", os.environ.get(ENV_PROJECT, ""))),
        "team": str(pop("team", os.environ.get(ENV_TEAM, ""))),
        "user_name": str(pop("user", host.user() if fill else "")),
        "host": str(pop("host", socket.gethostname() if fill else "")),
        "git_commit": str(pop("git_commit", None) or (host.git_commit() if fill else "")),
        "framework": str(pop("framework")),
        "start_wall": float(pop("start_wall", now)),
        "location": str(pop("location", location_from_provenance(intensity_source))),
        "intensity_source": intensity_source,
        "hardware": to_json(pop("hardware", None) or (host.hardware() if fill else {})),
        "methods": to_json(pop("methods", {})),
        "hyperparameters": to_json(pop("hyperparameters", {})),
        "metadata": to_json(meta),
        "recorded": now,
        "source": str(pop("source", "carbon-callbacks")),
        "kind": str(pop("kind")),
        "parent_run": str(pop("parent_run")),
    }
    return {"table": "runs", "row": row}


def epoch_op(run_id: str, record: EpochRecord, *, uid: str | None, position: int) -> dict[str, Any]:
    """The ``epochs`` row for one record at ``position`` in its run.

    Raises:
        TypeError: if ``record`` is not an ``EpochRecord``.
    """
    if not isinstance(record, EpochRecord):
        raise TypeError(f"record must be an EpochRecord, got {type(record).__name__}")
    row: dict[str, Any] = {
        "uid": uid or uuid.uuid4().hex,
        "run_id": run_id,
        "position": position,
        "epoch": int(record.epoch),
        "stage": record.stage,
        **{c: float(getattr(record, c)) for c in FLOAT_COLUMNS},
        "intensity_source": record.intensity_source,
        "methods": to_json(dict(record.methods)),
        "metrics": to_json({k: float(v) for k, v in record.metrics.items()}),
        "recorded": time.time(),
        "partial": int(bool(record.partial)),
    }
    return {"table": "epochs", "row": row}


def end_op(run_id: str, end: RunEnd, end_wall: float | None) -> dict[str, Any]:
    """The ``run_ends`` row (``end_wall`` None: now).

    ``stopped_early`` and ``stop_reason`` repeat ``end`` for readers of schema v2.
    """
    now = time.time()
    row = {
        "run_id": run_id,
        "end_wall": float(end_wall if end_wall is not None else now),
        "stopped_early": int(end.stopped_early),
        "stop_reason": end.reason,
        "recorded": now,
        "status": end.status,
        "stopped_by": end.stopped_by,
        "error_type": end.error_type,
    }
    return {"table": "run_ends", "row": row}


def run_end(
    *,
    status: str | None = None,
    stopped_early: bool = False,
    stop_reason: str = "",
    stopped_by: str = "",
    error_type: str = "",
) -> RunEnd:
    """A ``RunEnd`` from row values; rows written before schema v3 have no status.

    Those said only whether a run stopped early: it becomes ``stopped`` (by no one known), else
    ``completed``.
    """
    if not status:
        status = "stopped" if stopped_early else "completed"
    return RunEnd(
        status=status,
        stopped_by=stopped_by if status == "stopped" else "",
        reason=str(stop_reason or ""),
        error_type=str(error_type or ""),
    )


def epoch_record(row: Mapping[str, Any]) -> EpochRecord:
    """The record an ``epochs`` row holds (a NULL figure reads as 0)."""
    figures: dict[str, Any] = {c: row.get(c) or 0.0 for c in FLOAT_COLUMNS}
    metrics = from_json(row.get("metrics"))
    return EpochRecord.build(
        epoch=int(row.get("epoch") or 0),
        stage=row.get("stage") or "train",
        intensity_source=row.get("intensity_source") or "",
        methods=_methods(row.get("methods") or ""),
        metrics=metrics if isinstance(metrics, dict) else {},
        partial=bool(row.get("partial") or 0),
        **figures,
    )


@functools.lru_cache(maxsize=256)
def _methods(text: str) -> Mapping[str, Any]:
    # A run's rows repeat a handful of methods texts; build() copies the mapping it is given.
    methods = from_json(text)
    return methods if isinstance(methods, dict) else {}
