"""The SQLite store: the default ledger, one file through the standard library's ``sqlite3``.

Like the database store (``database_store.py``) it takes a batch of ops in one transaction,
answers a query with dict rows, and raises ``LedgerUnavailable`` when it cannot be written and
``LedgerRejected`` when it refuses a row; it also raises ``LedgerDamaged`` when the file was
destroyed under it (see ``sqlite_file.py``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from carbon_callbacks.ledger import schema
from carbon_callbacks.ledger.errors import (
    LedgerDamaged,
    LedgerError,
    LedgerRejected,
    LedgerUnavailable,
)
from carbon_callbacks.ledger.sqlite_file import FileWatch, mark_file, read_back, reader, salvage


class SqliteStore:
    """SQLite through the standard library, WAL mode, one transaction per write.

    After each commit the file is checked to still be the one written (``sqlite_file``); when
    it is not, ``apply`` raises ``LedgerDamaged``, the connection is kept so that ``salvage``
    can read what it still holds, and the file is not written again by this store (until it
    is moved aside or deleted).
    """

    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._conn: sqlite3.Connection | None = None
        self._watch: FileWatch | None = None
        self._verifier: sqlite3.Connection | None = None
        self._checked = False
        self._damaged: tuple[int, int] | None = None
        self._damage = ""
        self._runs: dict[str, None] = {}
        self._busy_ms = int(timeout * 1000)
        self.label = str(path)
        self.local = True

    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        self._refuse_damaged()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                str(self.path), timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise LedgerUnavailable(_sqlite_reason(self.path, exc)) from exc
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on disk before add_epoch returns, not just in the OS cache.
            conn.execute("PRAGMA synchronous=FULL")
            mark = _migrate_sqlite(conn)
            self._watch = FileWatch(self.path, mark)
        except LedgerError:
            conn.close()
            raise
        except (OSError, sqlite3.Error) as exc:
            conn.close()
            raise LedgerUnavailable(_sqlite_reason(self.path, exc)) from exc
        self._conn = conn
        self._busy_ms = int(self.timeout * 1000)
        self._checked = False
        return conn

    def _refuse_damaged(self) -> None:
        """Never reopen the very file found damaged: a truncated file is an empty database to
        SQLite, and rows written there would be lost with it once it is moved aside."""
        if self._damaged is None:
            return
        try:
            st = os.stat(self.path)
        except OSError:
            return  # moved aside or deleted: a fresh ledger may be created here
        if (st.st_dev, st.st_ino) == self._damaged:
            raise LedgerDamaged(self._damage)

    def _damaged_error(self, problem: str) -> LedgerDamaged:
        self._damage = f"SQLite ledger {self.path} is corrupt: it {problem}; {_RECOVER}"
        return LedgerDamaged(self._damage)

    def check(self) -> None:
        """Before spooled records are written: refuse a file that fails SQLite's quick_check
        (once per connection; it reads the whole file)."""
        conn = self._connect()
        if self._checked:
            return
        try:
            result = conn.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.Error as exc:
            if "malformed" not in str(exc) and "not a database" not in str(exc):
                self.close()
                raise LedgerUnavailable(_sqlite_reason(self.path, exc)) from exc
            result = str(exc)
        if result != "ok":
            # Not closed: ``salvage`` reads what this connection still can, then closes it.
            raise self._damaged_error(f"fails SQLite's quick_check ({result})")
        self._checked = True

    def apply(self, ops: Sequence[Mapping[str, Any]], *, wait: float | None = None) -> None:
        """Write ``ops`` in one transaction; ``wait``: seconds to wait for a lock (default
        ``timeout``)."""
        conn = self._connect()
        busy_ms = max(1, int((self.timeout if wait is None else wait) * 1000))
        try:
            if busy_ms != self._busy_ms:
                conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
                self._busy_ms = busy_ms
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
            problem = self._watch.problem() if self._watch else ""
            if problem or "malformed" in str(exc) or "not a database" in str(exc):
                raise self._damaged_error(problem or f"cannot be written ({exc})") from exc
            # Locked, read-only, full: the file is sound, the next try reconnects.
            self.close()
            raise LedgerUnavailable(_sqlite_reason(self.path, exc)) from exc
        for op in ops:
            self._runs[str(op["row"].get("run_id"))] = None
        problem = self._proof(ops)
        if problem:
            raise self._damaged_error(problem)

    def _proof(self, ops: Sequence[Mapping[str, Any]]) -> str:
        """Why the rows just committed are not proven in the file ("" when they are)."""
        assert self._watch is not None
        problem = self._watch.problem()
        if problem:
            return problem  # before any connection reads a file that may be empty
        if self._verifier is None:
            try:
                self._verifier = reader(self.path, self.timeout)
            except sqlite3.Error as exc:
                return f"cannot be opened again ({exc})"
        return read_back(self._verifier, ops)

    def salvage(self, seconds: float) -> Iterator[list[dict[str, Any]]]:
        """What the open connection can still read, as ops in batches (see ``sqlite_file``);
        then the connection is closed and the file is not written again by this store.

        Only a connection that wrote rows salvages: its cache and the WAL may hold the only
        copy of them. Rows it never wrote are where they were, in the file moved aside.
        """
        try:
            if self._conn is not None and self._runs:
                yield from salvage(self._conn, list(reversed(self._runs)), seconds)
        finally:
            if self._watch is not None:
                self._damaged = self._watch.identity
            self.close()

    def query(self, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        return list(self.iter_query(sql, params))

    def iter_query(self, sql: str, params: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """The rows of ``sql``, read as they are iterated (a read-only connection per call)."""
        try:
            if self.path.stat().st_size == 0:
                return  # nothing written yet; and a reader would delete a WAL beside it
        except FileNotFoundError:
            return
        except OSError as exc:
            raise LedgerUnavailable(_sqlite_reason(self.path, exc, reading=True)) from exc
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
                return  # nothing written yet (an empty file): no runs
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
            while rows := cur.fetchmany(500):
                for values in rows:
                    yield dict(zip(names, values, strict=True))
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

    def abort(self) -> bool:
        """Nothing to cut short (False): a SQLite write waits at most ``timeout`` for a lock."""
        return False

    def close(self) -> None:
        for conn in (self._verifier, self._conn):
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
        self._conn = self._verifier = None
        if self._watch is not None:
            self._watch.close()
            self._watch = None


# Errors about the rows themselves (a NULL key, a value SQLite cannot bind), not the file.
_SQLITE_REJECTED = (
    sqlite3.IntegrityError,
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
    sqlite3.DataError,
)


_RECOVER = (
    "move it aside and run `carbon-callbacks spool flush` to write the spooled records to a "
    "fresh one"
)


def _sqlite_reason(path: Path, exc: Exception, *, reading: bool = False) -> str:
    text = str(getattr(exc, "strerror", None) or exc)
    if "not a database" in text or "malformed" in text:
        return f"SQLite ledger {path} is corrupt ({text}); {_RECOVER}"
    if "locked" in text or "busy" in text:
        return f"SQLite ledger {path} is locked by another process ({text})"
    if "readonly" in text or "read-only" in text.lower() or (
        "unable to open" in text and not reading and not _writable(path)
    ):
        return f"SQLite ledger {path} is read-only for this process ({text})"
    if "full" in text or "I/O error" in text:
        room = _no_room(path)
        if room or "full" in text:
            return f"SQLite ledger {path} cannot grow: {room or 'its disk is full'} ({text})"
    return f"SQLite ledger {path} cannot be {'read' if reading else 'written'} ({text})"


def _writable(path: Path) -> bool:
    """Whether this process may write the file (if it exists) and its folder (for the WAL)."""
    folder_ok = os.access(path.parent, os.W_OK) if path.parent.is_dir() else True
    return folder_ok and (not path.exists() or os.access(path, os.W_OK))


def _no_room(path: Path) -> str:
    """Why a write found no room, when it can be seen: a file-size limit or a full disk."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if soft != resource.RLIM_INFINITY:
            return f"a file-size limit of {soft} bytes (ulimit -f) was reached"
    except (ImportError, OSError, ValueError):
        pass  # no such limit on this platform
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return ""
    return f"its disk is full ({free} bytes free)" if free < 16 * 1024 * 1024 else ""


def _migrate_sqlite(conn: sqlite3.Connection) -> int:
    """Migrate (and mark, see ``sqlite_file.mark_file``) the file; returns its mark."""
    # IMMEDIATE takes the write lock first, so two processes opening a new file at once
    # do not both run the same step.
    conn.execute("BEGIN IMMEDIATE")
    try:
        schema.migrate(
            conn.execute, lambda: int(conn.execute(schema.CURRENT_VERSION).fetchone()[0] or 0)
        )
        mark = mark_file(conn)
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    return mark
