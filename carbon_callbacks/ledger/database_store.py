"""The database store: any SQLAlchemy URL (PostgreSQL via psycopg 3 for teams), Core only.

Like the SQLite store it takes a batch of ops in one transaction, answers a query with dict
rows, and raises ``LedgerUnavailable`` when it cannot be reached and ``LedgerRejected`` when it
refuses a row.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NoReturn

from carbon_callbacks.ledger import schema
from carbon_callbacks.ledger.errors import LedgerError, LedgerRejected, LedgerUnavailable
from carbon_callbacks.ledger.location import redact


class SqlAlchemyStore:
    """Any SQLAlchemy database (PostgreSQL via psycopg 3 for teams), SQLAlchemy Core only.

    On PostgreSQL each transaction sets ``lock_timeout`` to ``timeout`` (and, for writes,
    ``statement_timeout`` to one second more), so a locked table or a stuck statement ends a
    write with an error instead of holding it; the connection attempt itself is bounded by
    ``connect_timeout``. ``abort()`` cuts a write in progress short from
    another thread by shutting its socket down (a server that accepts and never answers).
    With ``read_only``, nothing is created or migrated and every PostgreSQL transaction is
    ``READ ONLY``.
    """

    def __init__(self, url: str, timeout: float, *, read_only: bool = False) -> None:
        self.url = url
        self.timeout = timeout
        self.read_only = read_only
        self.label = redact(url)
        self.local = False
        self._engine: Any = None
        self._migrated = False
        self._setup = threading.Lock()
        self._in_flight: Any = None

    def _connect(self) -> Any:
        with self._setup:
            if self._engine is None:
                try:
                    import sqlalchemy
                except ImportError as exc:  # pragma: no cover - depends on the install
                    raise LedgerError(
                        "a database URL ledger needs SQLAlchemy: "
                        "pip install 'carbon-callbacks[ledger]'"
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
                # Only a missing or older schema is migrated: a role that may only read (or
                # only insert) must not need CREATE rights, nor take the migration lock.
                if self._run(self._needs_migration, write=True):
                    self._run(self._migrate, write=True)
                self._migrated = True
            return self._engine

    def _run(self, fn: Callable[[Any], Any], *, write: bool = False) -> Any:
        from sqlalchemy.exc import SQLAlchemyError

        try:
            with self._engine.begin() as conn:
                self._in_flight = conn.connection.dbapi_connection
                try:
                    self._set_timeouts(conn, write=write)
                    return fn(conn)
                finally:
                    self._in_flight = None
        except SQLAlchemyError as exc:
            error = self._error(exc)
        _raise(error)

    def _set_timeouts(self, conn: Any, *, write: bool) -> None:
        """On PostgreSQL: lock (and, for writes, statement) timeouts for this transaction, and
        read-only first when the store only reads (it must precede any query)."""
        if conn.dialect.name != "postgresql":
            return
        from sqlalchemy import text

        if self.read_only:
            conn.execute(text("SET TRANSACTION READ ONLY"))
        ms = max(1, int(self.timeout * 1000))
        # The statement timeout is a second longer, so a wait for a lock ends as a lock
        # timeout and says so.
        conn.execute(
            text(
                "SELECT set_config('lock_timeout', :lock, true),"
                " set_config('statement_timeout', :statement, true)"
            ),
            {"lock": str(ms), "statement": str(ms + 1000) if write else "0"},
        )

    def _error(self, exc: Exception) -> LedgerError:
        from sqlalchemy.exc import (
            DataError,
            DBAPIError,
            IntegrityError,
            ProgrammingError,
            StatementError,
        )

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
        error: LedgerError
        if rejected:
            error = LedgerRejected(f"ledger database {self.label} refused a row ({reason})")
        else:
            error = LedgerUnavailable(f"ledger database {self.label} unavailable ({reason})")
        error.__cause__ = exc
        _release(exc)
        return error

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

    def check(self) -> None:
        """Nothing to check before spooled records are written: the server keeps its files."""

    def apply(self, ops: Sequence[Mapping[str, Any]], *, wait: float | None = None) -> None:
        """Write ``ops`` in one transaction (``wait`` is for local stores: the lock and
        statement timeouts bound a database write)."""
        from sqlalchemy import text

        self._connect()

        def write(conn: Any) -> None:
            for op in ops:
                conn.execute(text(schema.INSERT[op["table"]]), schema.row_values(op))

        self._run(write, write=True)

    def query(self, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        from sqlalchemy import text

        if not self._readable():
            return []
        return self._run(
            lambda conn: [dict(r._mapping) for r in conn.execute(text(sql), dict(params))]
        )

    def _readable(self) -> bool:
        """Connect; False when a read-only store finds no schema (no runs, nothing created)."""
        self._connect()
        if self.read_only and not self._migrated:
            if not self._run(self._has_schema):
                return False
            self._migrated = True
        return True

    def _has_schema(self, conn: Any) -> bool:
        from sqlalchemy import inspect, text

        if not inspect(conn).has_table("schema_version"):
            return False
        version = int(conn.execute(text(schema.CURRENT_VERSION)).scalar() or 0)
        schema.check_not_newer(version)
        if version < schema.SCHEMA_VERSION:
            # PostgreSQL refuses even a TEMP view in a read-only transaction, so an older
            # schema cannot be shown with the current columns as SQLite's reader does.
            raise LedgerUnavailable(
                f"the ledger database {self.label} "
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

    def iter_query(self, sql: str, params: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """The rows of ``sql``, fetched from a server-side cursor as they are iterated."""
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        if not self._readable():
            return
        try:
            with self._engine.connect() as conn:
                self._set_timeouts(conn, write=False)
                result = conn.execution_options(stream_results=True, yield_per=500).execute(
                    text(sql), dict(params)
                )
                for row in result:
                    yield dict(row._mapping)
        except SQLAlchemyError as exc:
            error = self._error(exc)
        else:
            return
        _raise(error)

    def abort(self) -> bool:
        """Cut the transaction in progress short (from another thread): shut its socket down,
        so a call blocked on a server that never answers returns with an error at once.

        Returns:
            Whether there was one to cut short.
        """
        dbapi = self._in_flight
        fileno = getattr(dbapi, "fileno", None)
        if not callable(fileno):
            return False
        try:
            fd = fileno()
            sock = socket.socket(fileno=os.dup(fd))
        except (OSError, ValueError, AttributeError, TypeError):
            return False  # the transaction ended meanwhile (or never had a socket)
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            return False
        finally:
            sock.close()
        return True

    def close(self) -> None:
        with self._setup:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None
                self._migrated = False


def _raise(error: LedgerError) -> NoReturn:
    """Raise ``error`` from outside the ``except`` block that made it (see ``_release``)."""
    try:
        raise error
    finally:
        del error


def _release(exc: BaseException) -> None:
    """Clear the local variables of the finished frames in a driver error's tracebacks.

    SQLAlchemy's and the driver's frames keep the error they raise in a local, and the error's
    traceback keeps those frames: a cycle only the garbage collector breaks, and until then the
    failed connection's socket stays open (to a server that never answers, long after ``fit``).
    """
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        traceback.clear_frames(e.__traceback__)
        todo += [e.__cause__, e.__context__, getattr(e, "orig", None)]
