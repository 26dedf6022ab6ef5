"""Whether the SQLite file a writer writes is still the one it opened, and what to save when not.

SQLite reads and writes through its page cache and the WAL: truncate, overwrite, replace or
delete the database file under an open connection and its commits still succeed, into a file
that no longer holds them. So after every commit the writer looks at the file itself (its
identity, size and header, from one descriptor held open, so no lock of SQLite's is dropped) and
reads the row it just wrote back through a read-only connection of its own; the first commit
that cannot be proven on disk raises ``LedgerDamaged``. The writer then ``salvage()``s what its
own connection can still read (its cache and the WAL hold every page it wrote since the last
checkpoint) into the spool: its own runs first, then every other row it can read.

A fresh connection to a database file of 0 bytes deletes the WAL beside it (SQLite's rule for
an empty database), which would destroy the only copy of those pages: the file is checked
before any fresh connection is opened, and readers skip an empty file.
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from carbon_callbacks.ledger import schema

_MAGIC = b"SQLite format 3\x00"
_PRIMARY_KEYS = {"runs": "run_id", "epochs": "uid", "run_ends": "run_id"}
SALVAGE_BATCH = 500
"""Rows read (and spooled) per step of a salvage."""


def mark_file(conn: sqlite3.Connection) -> int:
    """Give the database a random non-zero ``user_version`` (once), so that another SQLite file
    copied over it in place is told apart from it. Called inside the writer's migration
    transaction; returns the mark."""
    mark = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if mark == 0:
        mark = random.randint(1, 2**31 - 1)
        conn.execute(f"PRAGMA user_version = {mark}")
    return mark


# Closing any descriptor of a file drops every POSIX lock the process holds on it, SQLite's
# included (https://www.sqlite.org/howtocorrupt.html, 2.2): the writers of one process share
# one descriptor per file, closed only when the last of them closes.
_descriptors: dict[tuple[int, int], list[int]] = {}  # (dev, inode) -> [fd, users]
_descriptors_lock = threading.Lock()


def _share_descriptor(path: Path) -> tuple[int, tuple[int, int]]:
    st = os.stat(path)
    with _descriptors_lock:
        entry = _descriptors.get((st.st_dev, st.st_ino))
        if entry is None:
            fd = os.open(path, os.O_RDONLY)
            fst = os.fstat(fd)
            entry = _descriptors.setdefault((fst.st_dev, fst.st_ino), [fd, 0])
            st = fst
        entry[1] += 1
        return entry[0], (st.st_dev, st.st_ino)


def _release_descriptor(identity: tuple[int, int]) -> None:
    with _descriptors_lock:
        entry = _descriptors.get(identity)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            del _descriptors[identity]
            os.close(entry[0])


class FileWatch:
    """The database file as the writer opened it: its inode, page size and mark.

    Args:
        path: the database file, already opened (and marked) by the writer's connection.
        mark: the mark ``mark_file`` returned.
    """

    def __init__(self, path: Path, mark: int) -> None:
        self.path = path
        self._fd, self.identity = _share_descriptor(path)
        header = _header(self._fd)
        self._page_size = _page_size(header) if header.startswith(_MAGIC) else 0
        # WAL mode writes page 1 back to the file only at a checkpoint: until then the file
        # may still carry the mark it had when it was opened.
        self._marks = {mark, int.from_bytes(header[60:64], "big")} if len(header) >= 64 else {mark}

    def problem(self) -> str:
        """Why the file is not the one opened, or "" when it still is.

        Costs two ``stat`` calls and one 100-byte read.
        """
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return "was deleted"
        except OSError as exc:
            return f"cannot be looked at ({exc.strerror or exc})"
        fst = os.fstat(self._fd)
        if (st.st_dev, st.st_ino) != (fst.st_dev, fst.st_ino):
            return "was replaced by another file"
        header = _header(self._fd)
        if fst.st_size < 100 or len(header) < 100:
            return f"was truncated (now {fst.st_size} bytes)"
        if not header.startswith(_MAGIC):
            return "was overwritten (its header is not SQLite's)"
        if self._page_size and (
            _page_size(header) != self._page_size or fst.st_size % self._page_size
        ):
            return f"was truncated or overwritten (now {fst.st_size} bytes)"
        if int.from_bytes(header[60:64], "big") not in self._marks:
            return "was overwritten by another SQLite file"
        if not os.path.exists(f"{self.path}-wal"):
            return "lost its write-ahead log (the -wal file was deleted)"
        return ""

    def close(self) -> None:
        """Let go of the shared descriptor (closed with the last watch of this file)."""
        if self._fd >= 0:
            _release_descriptor(self.identity)
            self._fd = -1


def _header(fd: int) -> bytes:
    """The first 100 bytes of the file (the SQLite header)."""
    if hasattr(os, "pread"):
        return os.pread(fd, 100, 0)
    with _descriptors_lock:  # Windows: no pread; the descriptor's offset is shared
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 100)


def _page_size(header: bytes) -> int:
    size = int.from_bytes(header[16:18], "big")
    return 65536 if size == 1 else size


def reader(path: Path, timeout: float) -> sqlite3.Connection:
    """A read-only connection of its own to the file, to read rows back through."""
    return sqlite3.connect(
        f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=timeout, check_same_thread=False
    )


def read_back(conn: sqlite3.Connection, ops: Sequence[Mapping[str, Any]]) -> str:
    """Read the last row of each table in ``ops`` back through ``conn`` (see ``reader``): its
    own page cache, refreshed from the file and the WAL whenever they changed.

    Returns:
        Why they could not be read, or "" when they all were.
    """
    last = {op["table"]: op["row"] for op in ops if op["table"] in _PRIMARY_KEYS}
    try:
        for table, row in last.items():
            key = _PRIMARY_KEYS[table]
            sql = f"SELECT 1 FROM {table} WHERE {key} = ?"
            if conn.execute(sql, (row[key],)).fetchone() is None:
                return f"does not hold the {table} row just written"
    except sqlite3.Error as exc:
        return f"cannot be read back ({exc})"
    return ""


def salvage(
    conn: sqlite3.Connection, own_runs: Sequence[str], seconds: float
) -> Iterator[list[dict[str, Any]]]:
    """Every row ``conn`` can still read, as ops in batches: ``own_runs`` first, then the rest.

    Reads in one read transaction (one snapshot, so pages already in the connection's cache
    stay valid) and stops after ``seconds``. A page that cannot be read costs the rows on it;
    the scan skips ahead past it.
    """
    deadline = time.monotonic() + seconds
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
    try:
        conn.execute("BEGIN")
        for run_id in own_runs:
            for table in ("runs", "epochs", "run_ends"):
                yield from _batches(conn, table, "run_id = ?", (run_id,))
        own = set(own_runs)
        for table in ("runs", "epochs", "run_ends"):
            for batch in _scan(conn, table, deadline):
                kept = [op for op in batch if op["row"].get("run_id") not in own]
                if kept:
                    yield kept
    finally:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        conn.set_progress_handler(None, 0)


def _batches(
    conn: sqlite3.Connection, table: str, where: str, params: tuple[Any, ...]
) -> Iterator[list[dict[str, Any]]]:
    try:
        cur = conn.execute(f"SELECT * FROM {table} WHERE {where}", params)
        names = [d[0] for d in cur.description]
        while rows := cur.fetchmany(SALVAGE_BATCH):
            yield [_op(table, names, row) for row in rows]
    except sqlite3.Error:
        return  # the rows of this run on pages that cannot be read are gone


def _scan(
    conn: sqlite3.Connection, table: str, deadline: float
) -> Iterator[list[dict[str, Any]]]:
    """The table in rowid order; past a page that cannot be read, skip ahead (1, 2, 4... rows)."""
    last, skip = 0, 1
    while time.monotonic() < deadline:
        try:
            cur = conn.execute(
                f"SELECT rowid, * FROM {table} WHERE rowid > ? ORDER BY rowid LIMIT ?",
                (last, SALVAGE_BATCH),
            )
            names = [d[0] for d in cur.description][1:]
            rows = cur.fetchall()
        except sqlite3.Error:
            if skip > 1 << 24:
                return
            last, skip = last + skip, skip * 2
            continue
        if not rows:
            return
        skip = 1
        last = rows[-1][0]
        yield [_op(table, names, row[1:]) for row in rows]


def _op(table: str, names: Sequence[str], row: Sequence[Any]) -> dict[str, Any]:
    known = schema.columns(table)
    return {"table": table, "row": {n: v for n, v in zip(names, row, strict=True) if n in known}}
