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
import getpass
import json
import logging
import math
import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from carbon_callbacks.records import JOULES_PER_KWH, EpochRecord, Window

logger = logging.getLogger(__name__)

ENV_LEDGER = "CARBON_CALLBACKS_LEDGER"
"""Environment variable naming the ledger (a file path or a database URL)."""

ENV_PROJECT = "CARBON_CALLBACKS_PROJECT"
ENV_TEAM = "CARBON_CALLBACKS_TEAM"

SCHEMA_VERSION = 2
"""The schema this code writes; older ledgers are migrated on open, newer ones are refused."""

_FLOAT_COLUMNS = (
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
        + ", ".join(f"{c} DOUBLE PRECISION" for c in _FLOAT_COLUMNS)
        + ", intensity_source TEXT, methods TEXT, metrics TEXT, recorded DOUBLE PRECISION)",
        "CREATE INDEX IF NOT EXISTS epochs_by_run ON epochs (run_id, end_wall)",
        "CREATE TABLE IF NOT EXISTS run_ends ("
        " run_id TEXT PRIMARY KEY, end_wall DOUBLE PRECISION, stopped_early INTEGER,"
        " stop_reason TEXT, recorded DOUBLE PRECISION)",
    ),
    # v2: where a run came from (this library, or an imported CodeCarbon file), so imported
    # history can be told apart in reports.
    2: ("ALTER TABLE runs ADD COLUMN source TEXT",),
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
)
_EPOCH_COLUMNS = (
    "uid",
    "run_id",
    "position",
    "epoch",
    "stage",
    *_FLOAT_COLUMNS,
    "intensity_source",
    "methods",
    "metrics",
    "recorded",
)
_END_COLUMNS = ("run_id", "end_wall", "stopped_early", "stop_reason", "recorded")

_COLUMNS = {"runs": _RUN_COLUMNS, "epochs": _EPOCH_COLUMNS, "run_ends": _END_COLUMNS}

_INSERT = {
    table: (
        f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)})"
        f" ON CONFLICT DO NOTHING"
    )
    for table, cols in _COLUMNS.items()
}


def _row(op: Mapping[str, Any]) -> dict[str, Any]:
    # Every column gets a value (NULL when absent), so a row spooled by older code that did not
    # know a newer column (``source`` before schema v2) is still written.
    row = op["row"]
    return {c: row.get(c) for c in _COLUMNS[op["table"]]}


def _is_op(op: Any) -> bool:
    """Whether a spooled JSON value is a write this code can apply."""
    return isinstance(op, dict) and op.get("table") in _INSERT and isinstance(op.get("row"), dict)


class LedgerError(Exception):
    """The ledger cannot answer (unknown run, unreadable store); the message says what to do."""


class LedgerUnavailable(LedgerError):
    """The store cannot be reached or written right now; writes go to the spool meanwhile."""


class LedgerRejected(LedgerError):
    """The store is up but refused the rows (a constraint or a value it cannot hold).

    Retrying cannot help, so spooled writes refused this way are set aside (see ``_Spool``)
    instead of blocking every later write.
    """


@dataclass(frozen=True)
class RunInfo:
    """One run as the ledger holds it: its metadata and totals over its epoch rows."""

    run_id: str
    project: str = ""
    team: str = ""
    user: str = ""
    host: str = ""
    git_commit: str = ""
    framework: str = ""
    start_wall: float = 0.0
    end_wall: float | None = None
    location: str = ""
    intensity_source: str = ""
    source: str = ""
    hardware: Mapping[str, Any] = field(default_factory=dict)
    methods: Mapping[str, Any] = field(default_factory=dict)
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    finished: bool = False
    stopped_early: bool = False
    stop_reason: str = ""
    epochs: int = 0
    energy_kwh: float = 0.0
    co2_g: float = 0.0
    seconds: float = 0.0
    last_wall: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for exports)."""
        return {
            "run_id": self.run_id,
            "project": self.project,
            "team": self.team,
            "user": self.user,
            "host": self.host,
            "git_commit": self.git_commit,
            "framework": self.framework,
            "start_wall": self.start_wall,
            "end_wall": self.end_wall,
            "location": self.location,
            "intensity_source": self.intensity_source,
            "source": self.source,
            "hardware": dict(self.hardware),
            "methods": dict(self.methods),
            "hyperparameters": dict(self.hyperparameters),
            "metadata": dict(self.metadata),
            "finished": self.finished,
            "stopped_early": self.stopped_early,
            "stop_reason": self.stop_reason,
            "epochs": self.epochs,
            "energy_kwh": self.energy_kwh,
            "co2_g": self.co2_g,
            "seconds": self.seconds,
        }


# --------------------------------------------------------------------------- locations


def default_data_dir() -> Path:
    """The per-user data folder for carbon-callbacks (XDG on Linux, the OS's own elsewhere)."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "carbon-callbacks"


def default_location() -> str:
    """Where ``Ledger.open()`` looks: ``$CARBON_CALLBACKS_LEDGER``, else the per-user data file."""
    env = os.environ.get(ENV_LEDGER, "").strip()
    return env or str(default_data_dir() / "ledger.sqlite")


def _is_url(location: str) -> bool:
    return "://" in location


def _sqlite_path(location: str) -> Path | None:
    """The file path for a SQLite location (plain path or ``sqlite:///`` URL), else None."""
    if location.startswith("sqlite:///"):
        return Path(location[len("sqlite:///") :])
    if location.startswith("sqlite://"):
        raise ValueError(
            f"ledger URL {location!r} has no file path; use 'sqlite:///path/to/ledger.sqlite'"
        )
    if _is_url(location):
        return None
    return Path(location).expanduser()


def _sqlalchemy_url(location: str) -> str:
    # psycopg 3 is the driver we depend on; SQLAlchemy's default for "postgresql://" is psycopg2.
    for bare in ("postgresql://", "postgres://"):
        if location.startswith(bare):
            return "postgresql+psycopg://" + location[len(bare) :]
    return location


def _check_url(url: str, label: str) -> None:
    """Refuse, at construction, a database URL that could never be written.

    Only the URL and the installed packages are looked at (no connection): a server that is
    down is a run-time matter and spools, but a misspelt dialect or a missing driver would
    spool forever with a message promising it will be written later.

    Raises:
        ValueError: naming the location argument, ``$CARBON_CALLBACKS_LEDGER``, and the fix.
    """
    where = f"ledger location {label!r} (the location argument or ${ENV_LEDGER})"
    try:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError
    except ImportError:
        raise ValueError(
            f"{where} is a database URL, which needs SQLAlchemy: "
            "pip install 'carbon-callbacks[ledger]', or give a SQLite file path"
        ) from None
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise ValueError(
            f"{where} is not a database URL ({exc}); use e.g. "
            "'postgresql://user:password@host:5432/db' or a SQLite file path"
        ) from None
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise ValueError(
            f"{where}: unknown database kind {parsed.drivername!r}; use e.g. "
            "'postgresql://user:password@host:5432/db' or a SQLite file path"
        ) from None
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        missing = getattr(exc, "name", None) or str(exc)
        raise ValueError(
            f"{where}: the {parsed.drivername!r} driver needs the Python package {missing!r}, "
            "which is not installed; install it, or name an installed driver in the URL "
            "(e.g. 'postgresql+psycopg://', 'mysql+pymysql://')"
        ) from None


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url


# --------------------------------------------------------------------------- stores


class _SqliteStore:
    """SQLite through the standard library, WAL mode, one transaction per write."""

    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._conn: sqlite3.Connection | None = None
        self.label = str(path)

    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                str(self.path), timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise LedgerUnavailable(f"cannot open SQLite ledger {self.path}: {exc}") from exc
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on disk before add_epoch returns, not just in the OS cache.
            conn.execute("PRAGMA synchronous=FULL")
            _migrate_sqlite(conn)
        except LedgerError:
            conn.close()
            raise
        except sqlite3.Error as exc:
            conn.close()
            raise LedgerUnavailable(_sqlite_reason(self.path, exc)) from exc
        self._conn = conn
        return conn

    def apply(self, ops: Sequence[Mapping[str, Any]]) -> None:
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for op in ops:
                    conn.execute(_INSERT[op["table"]], _row(op))
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        except _SQLITE_REJECTED as exc:
            raise LedgerRejected(f"SQLite ledger {self.path} refused a row ({exc})") from exc
        except sqlite3.Error as exc:
            # A file that turned bad (or got replaced) under us: reconnect next time.
            self.close()
            raise LedgerUnavailable(_sqlite_reason(self.path, exc)) from exc

    def query(self, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        try:
            conn = self._reader()
        except sqlite3.Error as exc:
            raise LedgerUnavailable(_sqlite_reason(self.path, exc, reading=True)) from exc
        try:
            tables = {
                name
                for (name,) in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                ).fetchall()
            }
            if "schema_version" not in tables:
                return []  # nothing written yet (an empty file): no runs
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            _check_not_newer(int(row[0] or 0))
            cur = conn.execute(sql, dict(params))
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        except sqlite3.Error as exc:
            raise LedgerUnavailable(_sqlite_reason(self.path, exc, reading=True)) from exc
        finally:
            conn.close()

    def _reader(self) -> sqlite3.Connection:
        """A read-only connection, opened per query.

        Reading needs no write access to the file or its folder: no folder is created, no
        pragma set, no migration run (a v1 ledger reads fine; its ``source`` is just NULL).
        A fresh connection per query also follows a file that was replaced since.
        """
        uri = self.path.resolve().as_uri()
        try:
            conn = sqlite3.connect(
                f"{uri}?mode=ro", uri=True, timeout=self.timeout, check_same_thread=False
            )
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.OperationalError as exc:
            if "unable to open" not in str(exc) or not self.path.is_file():
                raise
        # A WAL ledger in a folder this user cannot write, with no -shm file left by a writer:
        # SQLite cannot set up shared memory, so read the file as it is on disk.
        conn = sqlite3.connect(
            f"{uri}?mode=ro&immutable=1", uri=True, timeout=self.timeout, check_same_thread=False
        )
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None


# Errors about the rows themselves (a NULL key, a value SQLite cannot bind), not the file.
_SQLITE_REJECTED = (
    sqlite3.IntegrityError,
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
    sqlite3.DataError,
)


def _sqlite_reason(path: Path, exc: Exception, *, reading: bool = False) -> str:
    text = str(exc)
    if "not a database" in text or "malformed" in text:
        return (
            f"SQLite ledger {path} is corrupt ({text}); move it aside and run "
            "`carbon-callbacks spool flush` to write the spooled records to a fresh one"
        )
    if "locked" in text or "busy" in text:
        return f"SQLite ledger {path} is locked by another process ({text})"
    return f"SQLite ledger {path} cannot be {'read' if reading else 'written'} ({text})"


def _migrate_sqlite(conn: sqlite3.Connection) -> None:
    # IMMEDIATE takes the write lock first, so two processes opening a new file at once
    # do not both run the same step.
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version"
            " (version INTEGER PRIMARY KEY, applied DOUBLE PRECISION)"
        )
        row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        current = int(row[0] or 0)
        _check_not_newer(current)
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, applied) VALUES (?, ?)",
                (version, time.time()),
            )
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


def _check_not_newer(current: int) -> None:
    if current > SCHEMA_VERSION:
        raise LedgerUnavailable(
            f"the ledger has schema version {current}, newer than this carbon-callbacks "
            f"understands ({SCHEMA_VERSION}); upgrade carbon-callbacks"
        )


class _SqlAlchemyStore:
    """Any SQLAlchemy database (PostgreSQL via psycopg 3 for teams), SQLAlchemy Core only."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self.label = _redact(url)
        self._engine: Any = None
        self._migrated = False

    def _connect(self) -> Any:
        if self._engine is None:
            try:
                import sqlalchemy
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise LedgerError(
                    "a database URL ledger needs SQLAlchemy: pip install 'carbon-callbacks[ledger]'"
                ) from exc
            connect_args: dict[str, Any] = {}
            if self.url.startswith("postgresql"):
                connect_args["connect_timeout"] = max(1, int(math.ceil(self.timeout)))
            try:
                self._engine = sqlalchemy.create_engine(
                    self.url, connect_args=connect_args, pool_pre_ping=True
                )
            except Exception as exc:
                raise LedgerError(f"bad ledger URL {self.label}: {exc}") from exc
        if not self._migrated:
            # Only a missing or older schema is migrated: a role that may only read (or only
            # insert) must not need CREATE rights, nor take the migration lock, to use it.
            if self._run(self._needs_migration):
                self._run(self._migrate)
            self._migrated = True
        return self._engine

    def _run(self, fn: Any) -> Any:
        from sqlalchemy.exc import (
            DataError,
            DBAPIError,
            IntegrityError,
            ProgrammingError,
            SQLAlchemyError,
            StatementError,
        )

        try:
            with self._engine.begin() as conn:
                return fn(conn)
        except SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            orig = getattr(exc, "orig", None)
            rejected = (
                isinstance(exc, (IntegrityError, DataError))
                # Not sent at all: SQLAlchemy or the driver could not bind a value (a driver
                # error with no SQLSTATE never reached the server).
                or (isinstance(exc, StatementError) and not isinstance(exc, DBAPIError))
                or (
                    isinstance(exc, ProgrammingError)
                    and orig is not None
                    and hasattr(orig, "sqlstate")
                    and orig.sqlstate is None
                )
            )
            if rejected:
                msg = f"ledger database {self.label} refused a row ({reason})"
                raise LedgerRejected(msg) from exc
            raise LedgerUnavailable(f"ledger database {self.label} unavailable ({reason})") from exc

    @staticmethod
    def _needs_migration(conn: Any) -> bool:
        from sqlalchemy import inspect, text

        if not inspect(conn).has_table("schema_version"):
            return True
        current = int(conn.execute(text("SELECT MAX(version) FROM schema_version")).scalar() or 0)
        _check_not_newer(current)
        return current < SCHEMA_VERSION

    def _migrate(self, conn: Any) -> None:
        from sqlalchemy import text

        if conn.dialect.name == "postgresql":
            # Serialise concurrent first opens; the lock ends with the transaction.
            conn.execute(text("SELECT pg_advisory_xact_lock(4242071)"))
        conn.execute(
            text(
                "CREATE TABLE IF NOT EXISTS schema_version"
                " (version INTEGER PRIMARY KEY, applied DOUBLE PRECISION)"
            )
        )
        current = int(conn.execute(text("SELECT MAX(version) FROM schema_version")).scalar() or 0)
        _check_not_newer(current)
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version]:
                conn.execute(text(statement))
            conn.execute(
                text("INSERT INTO schema_version (version, applied) VALUES (:v, :t)"),
                {"v": version, "t": time.time()},
            )

    def apply(self, ops: Sequence[Mapping[str, Any]]) -> None:
        from sqlalchemy import text

        self._connect()

        def write(conn: Any) -> None:
            for op in ops:
                conn.execute(text(_INSERT[op["table"]]), _row(op))

        self._run(write)

    def query(self, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        from sqlalchemy import text

        self._connect()
        return self._run(
            lambda conn: [dict(r._mapping) for r in conn.execute(text(sql), dict(params))]
        )

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
            self._migrated = False


# --------------------------------------------------------------------------- spool


class _Spool:
    """A JSONL file of pending writes, appended and drained under an advisory file lock.

    Writes the store refuses for good (``LedgerRejected``) are moved to
    ``<spool>.rejected.jsonl`` so that one bad line cannot hold back every later write.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rejected_path = path.with_suffix(".rejected.jsonl")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[Any]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Binary: a line of bad bytes must not stop the lines after it from being read.
        with open(self.path, "a+b") as fh:
            try:
                import fcntl
            except ImportError:  # Windows: no advisory locks, single writer assumed
                fcntl = None  # type: ignore[assignment]
            if fcntl is not None:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield fh
            finally:
                if fcntl is not None:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def append(self, op: Mapping[str, Any]) -> None:
        line = (json.dumps(op, default=str, allow_nan=True) + "\n").encode()
        with self._locked() as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() > 0:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    # The last write was cut short (a kill, a full disk): end it, or this line
                    # would be joined to it and both lost.
                    line = b"\n" + line
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    def pending(self) -> bool:
        try:
            return self.path.is_file() and self.path.stat().st_size > 0
        except OSError:
            return False

    def count(self) -> int:
        if not self.pending():
            return 0
        with open(self.path, "rb") as fh:
            return sum(1 for line in fh if line.strip())

    def drain(self, write: Any) -> int:
        """Hand every pending op to ``write`` and empty the file if it succeeds.

        One call with all ops; if the store refuses that batch (``LedgerRejected``), the ops
        are written one at a time and the refused ones are moved to ``rejected_path``.
        ``LedgerUnavailable`` propagates and keeps the spool as it was.

        Returns:
            How many ops were written.
        """
        if not self.pending():
            return 0
        with self._locked() as fh:
            fh.seek(0)
            ops = []
            unreadable = []
            for n, raw in enumerate(fh, 1):
                if not raw.strip():
                    continue
                try:
                    op = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    op = None  # a line cut short by a kill mid-write, or bytes not ours
                if _is_op(op):
                    ops.append(op)
                else:
                    unreadable.append(n)
            if unreadable:
                logger.warning(
                    "skipping %d unreadable line(s) of ledger spool %s (line %s)",
                    len(unreadable),
                    self.path,
                    ", ".join(map(str, unreadable[:5])),
                )
            rejected: list[tuple[Mapping[str, Any], str]] = []
            if ops:
                try:
                    write(ops)
                except LedgerRejected:
                    for op in ops:
                        try:
                            write([op])
                        except LedgerRejected as exc:
                            rejected.append((op, str(exc)))
            if rejected:
                self._set_aside(rejected)
            fh.truncate(0)
            fh.flush()
            os.fsync(fh.fileno())
        return len(ops) - len(rejected)

    def _set_aside(self, rejected: Sequence[tuple[Mapping[str, Any], str]]) -> None:
        with open(self.rejected_path, "a", encoding="utf-8") as out:
            for op, _ in rejected:
                out.write(json.dumps(op, default=str, allow_nan=True) + "\n")
            out.flush()
            os.fsync(out.fileno())
        logger.warning(
            "the ledger refused %d spooled write(s) (%s); they were moved to %s",
            len(rejected),
            rejected[0][1],
            self.rejected_path,
        )


# --------------------------------------------------------------------------- the ledger


_SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _git_commit_from_files(start: Path) -> str | None:
    """HEAD's commit read from the repository's files: "" outside a repository, None if unsure.

    Covers what ``git rev-parse HEAD`` sees in the usual cases (a branch, loose or packed refs, a
    detached HEAD, a worktree's ``.git`` file) without starting a process at every run start.
    Anything else (``$GIT_DIR``, a ref that does not resolve...) returns None for git to answer.
    """
    if any(v in os.environ for v in ("GIT_DIR", "GIT_WORK_TREE", "GIT_CEILING_DIRECTORIES")):
        return None
    for folder in (start, *start.parents):
        dot = folder / ".git"
        if dot.is_dir():
            gitdir = dot
            break
        if dot.is_file():
            text = _read_text(dot) or ""
            if not text.startswith("gitdir:"):
                return None
            gitdir = (folder / text[len("gitdir:"):].strip()).resolve()
            break
    else:
        return ""
    common = gitdir
    pointer = _read_text(gitdir / "commondir")
    if pointer:
        common = (gitdir / pointer).resolve()
    head = _read_text(gitdir / "HEAD")
    if head is None:
        return None
    for _ in range(5):  # a symbolic ref may point at another one
        if _SHA.fullmatch(head):
            return head
        if not head.startswith("ref:"):
            return None
        ref = head[len("ref:"):].strip()
        value = _read_text(gitdir / ref) or _read_text(common / ref)
        if value is None:
            packed = _read_text(common / "packed-refs") or ""
            value = next(
                (line.split(" ", 1)[0] for line in packed.splitlines()
                 if line.endswith(" " + ref) and not line.startswith(("#", "^"))),
                None,
            )
        if value is None:
            return None
        head = value
    return None


def _git_commit(cwd: str | None = None) -> str:
    """The commit checked out in ``cwd`` (default: the working directory), or "" if none."""
    try:
        found = _git_commit_from_files(Path(cwd or os.getcwd()).resolve())
    except OSError:
        found = None
    if found is not None:
        return found
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=2,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return os.environ.get("USER", "")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _platform() -> str:
    """Like ``platform.platform()`` ("Linux-6.1.0-x86_64-with-glibc2.36"), without its
    ``uname -p`` subprocess, which it starts on Linux to learn a processor name it then drops."""
    uname = getattr(os, "uname", None)
    if uname is None:  # Windows
        import platform

        return platform.platform()
    u = uname()
    text = f"{u.sysname}-{u.release}-{u.machine}"
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError, AttributeError):
        libc = ""
    name, _, version = libc.partition(" ")
    return f"{text}-with-{name}{version}" if name == "glibc" and version else text


def _hardware() -> dict[str, Any]:
    """What this machine is, for a run's metadata (GPUs are added by whoever measured them)."""
    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count() or 0,
        "platform": _platform(),
    }
    try:
        import psutil

        info["ram_gb"] = round(psutil.virtual_memory().total / 1e9, 1)
    except Exception:  # psutil missing or unsupported here: the rest still describes the host
        pass
    return info


_ZONE_TAG = re.compile(r"\[([^\]\s]+)\]\s*$")


def _digest(text: str) -> str:
    import hashlib

    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _json(value: Any) -> str:
    return json.dumps(value if value is not None else {}, default=str, sort_keys=True)


def _load(text: Any) -> Any:
    if not text:
        return {}
    try:
        return json.loads(text)
    except (TypeError, json.JSONDecodeError):
        return {}


_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


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

    Raises:
        ValueError: for a malformed location, an unknown database kind or a missing driver
            (checked without connecting; a server that is down only makes writes spool).

    Example::

        ledger = Ledger.open()                       # $CARBON_CALLBACKS_LEDGER or per-user file
        run_id = ledger.start_run({"project": "digits", "framework": "lightning"})
        ledger.add_epoch(run_id, record)             # committed before it returns
        ledger.end_run(run_id, stopped_early=True, stop_reason="gain per kg below threshold")
        print(ledger.runs()[-1].co2_g)
    """

    def __init__(
        self,
        location: str | os.PathLike[str],
        *,
        spool: str | os.PathLike[str] | None = None,
        timeout: float = 5.0,
        retry_interval: float = 10.0,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        if retry_interval < 0:
            raise ValueError(f"retry_interval must be >= 0 seconds, got {retry_interval!r}")
        location = os.fspath(location)
        if not location.strip():
            raise ValueError("ledger location is empty; give a file path or a database URL")
        self.location = location
        path = _sqlite_path(location)
        self._store: _SqliteStore | _SqlAlchemyStore
        if path is not None:
            self._store = _SqliteStore(path, timeout)
            default_spool = path.with_name(path.name + ".spool.jsonl")
            if path.parent.is_dir() and not os.access(path.parent, os.W_OK):
                # The ledger's folder is read-only: keep the spool where this user can write.
                default_spool = default_data_dir() / f"spool-{_digest(str(path))}.jsonl"
        else:
            _check_url(_sqlalchemy_url(location), _redact(location))
            self._store = _SqlAlchemyStore(_sqlalchemy_url(location), timeout)
            default_spool = default_data_dir() / f"spool-{_digest(location)}.jsonl"
        self.spool_path = Path(spool) if spool is not None else default_spool
        self._spool = _Spool(self.spool_path)
        # Where records go if even the spool cannot be written (its folder is gone or
        # read-only); drained together with the spool.
        fallback = default_data_dir() / f"spool-{_digest(self.location)}.jsonl"
        self._spools = [self._spool]
        if fallback != self.spool_path:
            self._spools.append(_Spool(fallback))
        self._retry_interval = retry_interval
        self._retry_at = 0.0
        self._positions: dict[str, int] = {}
        self._lock = threading.RLock()
        self.last_error: str = ""

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
        # fill=False for imports: this machine's user, host and commit are not the run's.
        meta = dict(metadata)
        run_id = str(meta.pop("run_id", "") or uuid.uuid4().hex[:12])
        now = time.time()

        def pop(key: str, default: Any = "") -> Any:
            value = meta.pop(key, None)
            return default if value is None or value == "" else value

        intensity_source = str(pop("intensity_source"))
        # The intensity tables end their provenance with the zone code ("... [FRA]"), which is
        # the run's location when the caller did not name one.
        tag = _ZONE_TAG.search(intensity_source)
        row = {
            "run_id": run_id,
            "project": str(pop("project", os.environ.get(ENV_PROJECT, ""))),
            "team": str(pop("team", os.environ.get(ENV_TEAM, ""))),
            "user_name": str(pop("user", _user() if fill else "")),
            "host": str(pop("host", socket.gethostname() if fill else "")),
            "git_commit": str(pop("git_commit", None) or (_git_commit() if fill else "")),
            "framework": str(pop("framework")),
            "start_wall": float(pop("start_wall", now)),
            "location": str(pop("location", tag.group(1) if tag else "")),
            "intensity_source": intensity_source,
            "hardware": _json(pop("hardware", None) or (_hardware() if fill else {})),
            "methods": _json(pop("methods", {})),
            "hyperparameters": _json(pop("hyperparameters", {})),
            "metadata": _json(meta),
            "recorded": now,
            "source": str(pop("source", "carbon-callbacks")),
        }
        return {"table": "runs", "row": row}

    def add_epoch(self, run_id: str, record: EpochRecord) -> None:
        """Append one epoch record; it is committed (or spooled) when this returns.

        Args:
            run_id: the id ``start_run`` returned.
            record: the epoch's record.

        Raises:
            TypeError: if ``record`` is not an ``EpochRecord``.
        """
        self._write(self._epoch_op(run_id, record))

    def _epoch_op(
        self,
        run_id: str,
        record: EpochRecord,
        *,
        uid: str | None = None,
        position: int | None = None,
    ) -> dict[str, Any]:
        if not isinstance(record, EpochRecord):
            raise TypeError(f"record must be an EpochRecord, got {type(record).__name__}")
        if position is None:
            with self._lock:
                position = self._positions.get(run_id, 0)
                self._positions[run_id] = position + 1
        row: dict[str, Any] = {
            "uid": uid or uuid.uuid4().hex,
            "run_id": run_id,
            "position": position,
            "epoch": int(record.epoch),
            "stage": record.stage,
            **{c: float(getattr(record, c)) for c in _FLOAT_COLUMNS},
            "intensity_source": record.intensity_source,
            "methods": _json(dict(record.methods)),
            "metrics": _json({k: float(v) for k, v in record.metrics.items()}),
            "recorded": time.time(),
        }
        return {"table": "epochs", "row": row}

    def end_run(
        self,
        run_id: str,
        *,
        stopped_early: bool = False,
        stop_reason: str = "",
        end_wall: float | None = None,
    ) -> None:
        """Record that a run ended (once; a second call for the same run is ignored).

        Args:
            run_id: the id ``start_run`` returned.
            stopped_early: whether a policy (or the user) stopped it before its planned end.
            stop_reason: why, in words.
            end_wall: when it ended (default now).
        """
        self._write(self._end_op(run_id, stopped_early, stop_reason, end_wall))
        with self._lock:
            # The run takes no more epochs: a long-lived ledger (a sweep) keeps nothing per run.
            self._positions.pop(run_id, None)

    def _end_op(
        self, run_id: str, stopped_early: bool, stop_reason: str, end_wall: float | None
    ) -> dict[str, Any]:
        now = time.time()
        row = {
            "run_id": run_id,
            "end_wall": float(end_wall if end_wall is not None else now),
            "stopped_early": int(bool(stopped_early)),
            "stop_reason": str(stop_reason),
            "recorded": now,
        }
        return {"table": "run_ends", "row": row}

    def _write(self, op: Mapping[str, Any]) -> None:
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
        intensity: Any = None,
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
        from carbon_callbacks.intensity import emissions, resolve

        source = resolve(intensity)
        em = emissions(window, source, pue)
        kwh = window.kwh
        record = EpochRecord(
            epoch=0,
            start_wall=window.start_wall,
            end_wall=window.end_wall,
            seconds=window.seconds,
            energy_kwh=kwh,
            energy_kwh_low=window.low / JOULES_PER_KWH,
            energy_kwh_high=window.high / JOULES_PER_KWH,
            co2_g=em.g,
            co2_g_low=em.low,
            co2_g_high=em.high,
            energy_kwh_total=kwh,
            co2_g_total=em.g,
            power_w=window.power_w,
            intensity_g_per_kwh=em.intensity_g_per_kwh,
            intensity_source=em.provenance,
            cpu_energy_kwh=window.component_joules("cpu") / JOULES_PER_KWH,
            gpu_energy_kwh=window.component_joules("gpu") / JOULES_PER_KWH,
            ram_energy_kwh=window.component_joules("ram") / JOULES_PER_KWH,
            methods=window.methods,
            stage="meter",
            pue=em.pue,
        )
        meta = {
            "framework": "EnergyMeter",
            "start_wall": window.start_wall,
            "intensity_source": em.provenance,
            "methods": window.methods,
            **dict(metadata or {}),
        }
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
        known = {r.run_id for r in self.runs()}
        ops: list[dict[str, Any]] = []
        new = 0
        for meta, records in runs:
            meta = dict(meta)
            end_keys = ("end_wall", "stopped_early", "stop_reason")
            end = {k: meta.pop(k) for k in end_keys if k in meta}
            uids = list(meta.pop("epoch_uids", None) or ())
            run_id = str(meta.get("run_id") or uuid.uuid4().hex[:12])
            if run_id not in known:
                known.add(run_id)
                new += 1
            meta["run_id"] = run_id
            # Rows already there are kept (ON CONFLICT DO NOTHING): a run that grew since its
            # last import gains its new epochs and its end row, and nothing is doubled.
            ops.append(self._run_op(meta, fill=False))
            for i, rec in enumerate(records):
                uid = str(uids[i]) if i < len(uids) and uids[i] else f"{run_id}:{i}"
                ops.append(self._epoch_op(run_id, rec, uid=uid, position=i))
            if end:
                ops.append(
                    self._end_op(
                        run_id,
                        bool(end.get("stopped_early", False)),
                        str(end.get("stop_reason", "")),
                        end.get("end_wall"),
                    )
                )
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
    ) -> list[RunInfo]:
        """Every run, oldest first, with totals over its epoch rows.

        Args:
            project: only runs of this project.
            team: only runs of this team.
            user: only runs of this user.
            since: only runs started at or after this wall time (epoch seconds).
            until: only runs started before this wall time.

        Returns:
            The runs.

        Raises:
            LedgerUnavailable: if the store cannot be read.
        """
        where = []
        params: dict[str, Any] = {}
        for col, value in (("project", project), ("team", team), ("user_name", user)):
            if value is not None:
                where.append(f"r.{col} = :{col}")
                params[col] = value
        if since is not None:
            where.append("r.start_wall >= :since")
            params["since"] = since
        if until is not None:
            where.append("r.start_wall < :until")
            params["until"] = until
        sql = (
            "SELECT r.*, e.n AS n_epochs, e.kwh AS sum_kwh, e.co2 AS sum_co2, e.secs AS sum_s,"
            " e.last AS last_wall, x.end_wall AS end_wall, x.stopped_early AS stopped_early,"
            " x.stop_reason AS stop_reason, x.run_id AS ended"
            " FROM runs r"
            " LEFT JOIN (SELECT run_id, COUNT(*) AS n, SUM(energy_kwh) AS kwh, SUM(co2_g) AS co2,"
            "   SUM(seconds) AS secs, MAX(end_wall) AS last FROM epochs GROUP BY run_id) e"
            "   ON e.run_id = r.run_id"
            " LEFT JOIN run_ends x ON x.run_id = r.run_id"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY r.start_wall, r.run_id"
        )
        with self._lock:
            rows = self._store.query(sql, params)
        return [_run_info(row) for row in rows]

    def run(self, run_id: str) -> RunInfo:
        """One run by its id or a unique prefix of it.

        Raises:
            LedgerError: if no run (or more than one) matches.
        """
        return _match_run(self.runs(), run_id, self.label)

    def epochs(self, run_id: str) -> list[EpochRecord]:
        """The run's epoch records in the order they ended.

        Raises:
            LedgerUnavailable: if the store cannot be read.
        """
        return [rec for _, rec in self._epochs_with_uids(run_id)]

    def _epochs_with_uids(self, run_id: str) -> list[tuple[str, EpochRecord]]:
        """The run's records with their row ids (exports carry them so imports stay exact)."""
        sql = "SELECT * FROM epochs WHERE run_id = :run_id ORDER BY end_wall, position"
        with self._lock:
            rows = self._store.query(sql, {"run_id": run_id})
        return [(str(row["uid"]), _epoch_record(row)) for row in rows]

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


def _match_run(runs: Sequence[RunInfo], run_id: str, label: str) -> RunInfo:
    """The run with this id, else the only one it is a prefix of."""
    exact = [r for r in runs if r.run_id == run_id]
    if exact:
        return exact[0]
    matches = [r for r in runs if r.run_id.startswith(run_id)] if run_id else []
    if len(matches) == 1:
        return matches[0]
    if not runs:
        raise LedgerError(f"the ledger {label} holds no runs yet")
    if matches:
        raise LedgerError(f"run id {run_id!r} is ambiguous ({len(matches)} runs); give more of it")
    raise LedgerError(f"no run {run_id!r} in {label}; `carbon-callbacks runs` lists them")


def select_runs(
    ledger: Ledger,
    run_ids: Sequence[str] | None = None,
    *,
    runs: Sequence[RunInfo] | None = None,
) -> list[RunInfo]:
    """The runs named by ``run_ids`` (ids or unique prefixes), oldest first; all when None.

    Every id is resolved against one ``runs()`` query (or the given ``runs``), so an unknown
    id fails before anything is written.

    Args:
        ledger: the ledger.
        run_ids: run ids or unique prefixes; None for every run.
        runs: the ledger's runs when the caller already has them.

    Returns:
        The selected runs.

    Raises:
        LedgerError: for an unknown or ambiguous id.
    """
    runs = list(ledger.runs() if runs is None else runs)
    if run_ids is None:
        return runs
    wanted = {_match_run(runs, r, ledger.label).run_id for r in run_ids}
    return [r for r in runs if r.run_id in wanted]


def _warn_once(key: tuple[str, str], msg: str, *args: Any) -> None:
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    logger.warning(msg, *args)


def _run_info(row: Mapping[str, Any]) -> RunInfo:
    ended = row.get("ended") is not None
    end_wall = row.get("end_wall")
    return RunInfo(
        run_id=row["run_id"],
        project=row.get("project") or "",
        team=row.get("team") or "",
        user=row.get("user_name") or "",
        host=row.get("host") or "",
        git_commit=row.get("git_commit") or "",
        framework=row.get("framework") or "",
        start_wall=float(row.get("start_wall") or 0.0),
        end_wall=float(end_wall) if end_wall is not None else None,
        location=row.get("location") or "",
        intensity_source=row.get("intensity_source") or "",
        source=row.get("source") or "",
        hardware=_load(row.get("hardware")),
        methods=_load(row.get("methods")),
        hyperparameters=_load(row.get("hyperparameters")),
        metadata=_load(row.get("metadata")),
        finished=ended,
        stopped_early=bool(row.get("stopped_early") or 0),
        stop_reason=row.get("stop_reason") or "",
        epochs=int(row.get("n_epochs") or 0),
        energy_kwh=float(row.get("sum_kwh") or 0.0),
        co2_g=float(row.get("sum_co2") or 0.0),
        seconds=float(row.get("sum_s") or 0.0),
        last_wall=float(row["last_wall"]) if row.get("last_wall") is not None else None,
    )


def _epoch_record(row: Mapping[str, Any]) -> EpochRecord:
    d = {c: float(row[c]) if row.get(c) is not None else 0.0 for c in _FLOAT_COLUMNS}
    return EpochRecord(
        epoch=int(row.get("epoch") or 0),
        stage=row.get("stage") or "train",
        intensity_source=row.get("intensity_source") or "",
        methods=_load(row.get("methods")),
        metrics=_load(row.get("metrics")),
        **d,
    )


# --------------------------------------------------------------------------- import / export

# Column names as CodeCarbon writes them (codecarbon/output_methods/emissions_data.py,
# ``EmissionsData``): energies in kWh, ``emissions`` in kg CO2e, ``duration`` in seconds,
# ``timestamp`` the local time the row was written (the end of the run).
CODECARBON_REQUIRED = ("timestamp", "duration", "emissions", "energy_consumed")


def _num(row: Mapping[str, Any], key: str, where: str) -> float:
    text = (row.get(key) or "").strip()
    if not text:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        raise LedgerError(f"{where}: column {key!r} is not a number ({text!r})") from None
    return value if math.isfinite(value) else 0.0


def _local_timestamp(text: str, where: str) -> float:
    from datetime import datetime

    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise LedgerError(f"{where}: timestamp {text!r} is not an ISO date and time") from None
    return moment.timestamp()  # naive times are local, as CodeCarbon writes them


def read_codecarbon_csv(
    path: str | os.PathLike[str],
) -> list[tuple[dict[str, Any], list[EpochRecord]]]:
    """Turn a CodeCarbon ``emissions.csv`` into ledger runs, one per CodeCarbon run.

    Each run gets one record (stage ``"codecarbon"``) with the file's totals; CodeCarbon keeps
    no per-epoch figures. Rows repeating a ``run_id`` (CodeCarbon appends a cumulative row at
    every flush) count once, by the row with the longest duration.

    Args:
        path: the CSV file.

    Returns:
        (metadata, records) pairs for ``Ledger.import_runs``.

    Raises:
        LedgerError: if the file is not a CodeCarbon emissions file or a value is unreadable.
    """
    import csv
    import hashlib

    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in reader.fieldnames or []]
            rows = [{(k or "").strip(): v for k, v in row.items()} for row in reader]
    except OSError as exc:
        raise LedgerError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError:
        raise LedgerError(f"{path} is not a text CSV file") from None
    missing = [c for c in CODECARBON_REQUIRED if c not in header]
    if missing:
        raise LedgerError(
            f"{path} does not look like a CodeCarbon emissions.csv (no {', '.join(missing)} column)"
        )
    chosen: dict[str, tuple[int, dict[str, Any]]] = {}
    for line, row in enumerate(rows, 2):
        where = f"{path}:{line}"
        key = (row.get("run_id") or "").strip()
        if not key:
            # Old CodeCarbon versions have no run id: each row is its own run.
            digest = hashlib.sha1(f"{path.name}|{line}|{row.get('timestamp')}".encode())
            key = "row-" + digest.hexdigest()[:12]
        duration = _num(row, "duration", where)
        if key not in chosen or duration >= _num(chosen[key][1], "duration", where):
            chosen[key] = (line, row)

    runs = []
    for key, (line, row) in chosen.items():
        where = f"{path}:{line}"
        seconds = _num(row, "duration", where)
        end = _local_timestamp(row.get("timestamp") or "", where)
        kwh = _num(row, "energy_consumed", where)
        g = _num(row, "emissions", where) * 1000.0
        on_cloud = (row.get("on_cloud") or "").strip().upper() == "Y"
        if on_cloud and row.get("cloud_provider"):
            location = f"{row['cloud_provider'].strip()}:{(row.get('cloud_region') or '').strip()}"
        else:
            location = (row.get("country_iso_code") or row.get("region") or "").strip()
        version = (row.get("codecarbon_version") or "").strip()
        source = f"codecarbon {version}".strip()
        record = EpochRecord(
            epoch=0,
            start_wall=end - seconds,
            end_wall=end,
            seconds=seconds,
            energy_kwh=kwh,
            # CodeCarbon gives no range; the record says so by having none.
            energy_kwh_low=kwh,
            energy_kwh_high=kwh,
            co2_g=g,
            co2_g_low=g,
            co2_g_high=g,
            energy_kwh_total=kwh,
            co2_g_total=g,
            power_w=kwh * 3.6e6 / seconds if seconds > 0 else 0.0,
            intensity_g_per_kwh=g / kwh if kwh > 0 else 0.0,
            intensity_source=source,
            cpu_energy_kwh=_num(row, "cpu_energy", where),
            gpu_energy_kwh=_num(row, "gpu_energy", where),
            ram_energy_kwh=_num(row, "ram_energy", where),
            stage="codecarbon",
            pue=_num(row, "pue", where) or 1.0,
        )
        hardware = {
            k: row[k].strip()
            for k in ("cpu_model", "cpu_count", "gpu_model", "gpu_count", "ram_total_size", "os")
            if (row.get(k) or "").strip()
        }
        meta = {
            "run_id": f"cc-{key}",
            "project": (row.get("project_name") or "").strip(),
            "start_wall": end - seconds,
            "end_wall": end,
            "location": location,
            "intensity_source": source,
            "hardware": hardware,
            "methods": {"tracking_mode": (row.get("tracking_mode") or "").strip()},
            "source": f"codecarbon:{path.name}",
            "codecarbon_run_id": (row.get("run_id") or "").strip(),
            "experiment_id": (row.get("experiment_id") or "").strip(),
            "python_version": (row.get("python_version") or "").strip(),
        }
        runs.append((meta, [record]))
    return runs


def read_jsonl(path: str | os.PathLike[str]) -> list[tuple[dict[str, Any], list[EpochRecord]]]:
    """Read runs written by ``export_jsonl`` (so ledgers can be moved or merged).

    Raises:
        LedgerError: if a line is not one of ours.
    """
    path = Path(path)
    runs: dict[str, tuple[dict[str, Any], list[EpochRecord]]] = {}
    uids: dict[str, list[str | None]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise LedgerError(f"cannot read {path}: {exc.strerror or exc}") from exc
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            kind = item.pop("type")
            run_id = item["run_id"]
        except (json.JSONDecodeError, KeyError, AttributeError, TypeError):
            raise LedgerError(f"{path}:{n}: not a carbon-callbacks export line") from None
        if kind == "run":
            meta = {k: item.get(k) for k in _EXPORT_RUN_KEYS if k in item}
            meta.update(item.get("metadata") or {})
            if not item.get("finished"):
                meta.pop("end_wall", None)
                meta.pop("stopped_early", None)
                meta.pop("stop_reason", None)
            runs.setdefault(run_id, ({}, []))[0].update(meta)
        elif kind == "epoch":
            runs.setdefault(run_id, ({"run_id": run_id}, []))[1].append(EpochRecord.from_dict(item))
            uids.setdefault(run_id, []).append(item.get("uid"))  # absent in older exports
        else:
            raise LedgerError(f"{path}:{n}: unknown line type {kind!r}")
    for run_id, meta_records in runs.items():
        if run_id in uids:
            meta_records[0]["epoch_uids"] = uids[run_id]
    return list(runs.values())


_EXPORT_RUN_KEYS = (
    "run_id",
    "project",
    "team",
    "user",
    "host",
    "git_commit",
    "framework",
    "start_wall",
    "end_wall",
    "location",
    "intensity_source",
    "source",
    "hardware",
    "methods",
    "hyperparameters",
    "stopped_early",
    "stop_reason",
)


def import_files(ledger: Ledger, paths: Iterable[str | os.PathLike[str]]) -> dict[str, int]:
    """Import CodeCarbon CSVs and carbon-callbacks JSONL exports into ``ledger``.

    Returns:
        For each file, how many of its runs were new (a re-import adds nothing).

    Raises:
        LedgerError: for an unreadable file (nothing from that file is written).
    """
    counts = {}
    for p in paths:
        path = Path(p)
        if path.suffix in (".jsonl", ".ndjson"):
            runs = read_jsonl(path)
        else:
            runs = read_codecarbon_csv(path)
        counts[str(path)] = ledger.import_runs(runs)
    return counts


def export_jsonl(
    ledger: Ledger,
    fh: Any,
    run_ids: Sequence[str] | None = None,
    *,
    runs: Sequence[RunInfo] | None = None,
) -> int:
    """Write runs and their epochs as JSON lines (``type`` = ``run`` or ``epoch``).

    Epoch lines carry their row ``uid``, so importing a later export of the same run adds
    only the epochs that are new.

    Args:
        ledger: the ledger.
        fh: a text file open for writing.
        run_ids: only these runs (ids or unique prefixes); None for all.
        runs: the runs to write, already chosen with ``select_runs`` (then ``run_ids`` is
            not used).

    Returns:
        How many runs were written.
    """
    runs = select_runs(ledger, run_ids) if runs is None else list(runs)
    for run in runs:
        fh.write(json.dumps({"type": "run", **run.to_dict()}, default=str) + "\n")
        for uid, rec in ledger._epochs_with_uids(run.run_id):
            line = {"type": "epoch", "run_id": run.run_id, "uid": uid, **rec.to_dict()}
            fh.write(json.dumps(line) + "\n")
    return len(runs)


def export_csv(
    ledger: Ledger,
    fh: Any,
    run_ids: Sequence[str] | None = None,
    *,
    runs: Sequence[RunInfo] | None = None,
) -> int:
    """Write one CSV row per epoch record, with its run's project, team, user and framework.

    Metrics become ``metric:NAME`` columns. ``run_ids`` and ``runs`` choose runs as for
    ``export_jsonl``. Returns how many epoch rows were written.
    """
    import csv

    runs = select_runs(ledger, run_ids) if runs is None else list(runs)
    rows = []
    metric_names: set[str] = set()
    for run in runs:
        for rec in ledger.epochs(run.run_id):
            d = rec.to_dict()
            metrics = d.pop("metrics")
            methods = d.pop("methods")
            metric_names.update(metrics)
            row = {
                "run_id": run.run_id,
                "project": run.project,
                "team": run.team,
                "user": run.user,
                "framework": run.framework,
                **d,
                "methods": ";".join(f"{k}={v}" for k, v in sorted(methods.items())),
                **{f"metric:{k}": v for k, v in metrics.items()},
            }
            rows.append(row)
    fields = ["run_id", "project", "team", "user", "framework"]
    fields += [f for f in EpochRecord.__dataclass_fields__ if f not in ("metrics",)]
    fields += [f"metric:{m}" for m in sorted(metric_names)]
    writer = csv.DictWriter(fh, fieldnames=fields, restval="")
    writer.writeheader()
    writer.writerows(rows)
    return len(rows)
