"""The two stores a ledger writes to: SQLite (the standard library) and any SQLAlchemy database.

Both take a batch of ops in one transaction and answer a query with dict rows; both raise
``LedgerUnavailable`` when they cannot be reached and ``LedgerRejected`` when they refuse a row.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from carbon_callbacks.ledger import schema
from carbon_callbacks.ledger.errors import LedgerError, LedgerRejected, LedgerUnavailable
from carbon_callbacks.ledger.location import redact


class SqliteStore:
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
                    conn.execute(schema.INSERT[op["table"]], schema.row_values(op))
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
            row = conn.execute(schema.CURRENT_VERSION).fetchone()
            version = int(row[0] or 0)
            schema.check_not_newer(version)
            if version < schema.SCHEMA_VERSION:  # read an older file as if it were current
                existing = {
                    t: {c[1] for c in conn.execute(f"PRAGMA table_info({t})").fetchall()}
                    for t in tables
                }
                for statement in schema.current_views(existing):
                    conn.execute(statement)
            cur = conn.execute(sql, dict(params))
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        except sqlite3.Error as exc:
            raise LedgerUnavailable(_sqlite_reason(self.path, exc, reading=True)) from exc
        finally:
            conn.close()

    @staticmethod
    def metadata_text(key_param: str) -> str:
        """SQL for a run's top-level metadata value under the key in ``:key_param``, as text."""
        return (
            "(CASE WHEN json_valid(r.metadata) THEN CAST(json_extract(r.metadata,"
            f" '$.\"' || :{key_param} || '\"') AS TEXT) END)"
        )

    def _reader(self) -> sqlite3.Connection:
        """A read-only connection, opened per query.

        Reading needs no write access to the file or its folder: no folder is created, no
        pragma set, no migration run (an older ledger is read through ``schema.current_views``,
        where the columns added since are NULL).
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
        schema.migrate(
            conn.execute, lambda: int(conn.execute(schema.CURRENT_VERSION).fetchone()[0] or 0)
        )
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


class SqlAlchemyStore:
    """Any SQLAlchemy database (PostgreSQL via psycopg 3 for teams), SQLAlchemy Core only."""

    def __init__(self, url: str, timeout: float, *, read_only: bool = False) -> None:
        self.url = url
        self.timeout = timeout
        self.read_only = read_only
        self.label = redact(url)
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
        if not self._migrated and not self.read_only:
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
                if self.read_only and conn.dialect.name == "postgresql":
                    from sqlalchemy import text

                    conn.execute(text("SET TRANSACTION READ ONLY"))
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
        current = int(conn.execute(text(schema.CURRENT_VERSION)).scalar() or 0)
        schema.check_not_newer(current)
        return current < schema.SCHEMA_VERSION

    def _migrate(self, conn: Any) -> None:
        from sqlalchemy import text

        if conn.dialect.name == "postgresql":
            # Serialise concurrent first opens; the lock ends with the transaction.
            conn.execute(text("SELECT pg_advisory_xact_lock(4242071)"))
        schema.migrate(
            lambda sql, params: conn.execute(text(sql), dict(params)),
            lambda: int(conn.execute(text(schema.CURRENT_VERSION)).scalar() or 0),
        )

    def apply(self, ops: Sequence[Mapping[str, Any]]) -> None:
        from sqlalchemy import text

        self._connect()

        def write(conn: Any) -> None:
            for op in ops:
                conn.execute(text(schema.INSERT[op["table"]]), schema.row_values(op))

        self._run(write)

    def query(self, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        from sqlalchemy import text

        self._connect()
        if self.read_only and not self._migrated:
            # Nothing is created when only reading: a database without the schema has no runs.
            if not self._run(self._has_schema):
                return []
            self._migrated = True
        return self._run(
            lambda conn: [dict(r._mapping) for r in conn.execute(text(sql), dict(params))]
        )

    @staticmethod
    def _has_schema(conn: Any) -> bool:
        from sqlalchemy import inspect, text

        if not inspect(conn).has_table("schema_version"):
            return False
        version = int(conn.execute(text(schema.CURRENT_VERSION)).scalar() or 0)
        schema.check_not_newer(version)
        if version < schema.SCHEMA_VERSION:
            # PostgreSQL refuses even a TEMP view in a read-only transaction, so an older
            # schema cannot be shown with the current columns as SQLite's reader does.
            raise LedgerUnavailable(
                f"the ledger database {conn.engine.url.render_as_string(hide_password=True)} "
                f"has schema version {version}, older than this carbon-callbacks reads "
                f"({schema.SCHEMA_VERSION}); any write with this version (a training run, or "
                "`carbon-callbacks spool flush`) migrates it"
            )
        return True

    def metadata_text(self, key_param: str) -> str:
        """SQL for a run's top-level metadata value under the key in ``:key_param``, as text.

        Raises:
            ValueError: for a database other than PostgreSQL (no portable JSON function).
        """
        if not self.url.startswith("postgresql"):
            raise ValueError(
                f"tag filters need a SQLite or PostgreSQL ledger; {self.label} is neither"
            )
        return f"(r.metadata::jsonb ->> :{key_param})"

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
            self._migrated = False

