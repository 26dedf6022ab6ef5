"""The spool: where ledger writes wait, as JSON lines, while the store cannot take them.

Several processes (training runs, ``carbon-callbacks spool flush``) may append to and drain one
spool at once. Each holds the spool's lock file (``filelock``) only to append a batch or to
read or cut the head of the file, never while a store is being written, so a drain stuck on a
slow database holds back no one's appends. A drain reads a chunk from the head, writes it to
the store, then cuts it off only if the head is still exactly what it read (another drainer
may have cut it first): every line is written at least once and never dropped unwritten.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from filelock import FileLock

from carbon_callbacks._warn import WarnOnce
from carbon_callbacks.ledger.errors import LedgerError, LedgerRejected
from carbon_callbacks.ledger.schema import is_op

logger = logging.getLogger(__name__)
_warned = WarnOnce(logger)

LOCK_TIMEOUT = 10.0
"""Seconds to wait for the spool's lock; past it the write goes to the next spool instead.

The lock is only held to append a batch or to read or cut the head of the file (file work,
milliseconds), so a wait this long means a stuck process, not a busy one."""

DRAIN_CHUNK = 2000
"""Lines written to the store per transaction when a spool is drained."""


class Spool:
    """A JSONL file of pending writes, appended and drained under a lock file.

    Writes the store refuses for good (``LedgerRejected``) are moved to
    ``<spool>.rejected.jsonl``, and lines that cannot be read as a write (cut short by a kill,
    bytes that are not ours, an op this version does not know) to ``<spool>.unreadable``, so
    that one bad line cannot hold back every later write, and nothing is deleted.

    Args:
        path: the spool file.
        lock_timeout: seconds to wait for the lock (``filelock.Timeout``, an ``OSError``).
    """

    def __init__(self, path: Path, *, lock_timeout: float = LOCK_TIMEOUT) -> None:
        self.path = path
        self.rejected_path = path.with_suffix(".rejected.jsonl")
        self.unreadable_path = path.with_suffix(".unreadable")
        self._lock = FileLock(str(path) + ".lock", timeout=lock_timeout)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            yield

    def append(self, op: Mapping[str, Any]) -> None:
        """Add one write, on disk (fsync) when this returns.

        Raises:
            OSError: if the file cannot be written or locked in ``lock_timeout``.
        """
        self.extend([op])

    def extend(self, ops: Iterable[Mapping[str, Any]]) -> None:
        """Add writes in one locked, synced append (see ``append``)."""
        data = b"".join(
            (json.dumps(op, default=str, allow_nan=True) + "\n").encode() for op in ops
        )
        if not data:
            return
        with self._locked(), open(self.path, "a+b") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() > 0:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    # The last write was cut short (a kill, a full disk): end it, or this
                    # batch's first line would be joined to it and both lost.
                    data = b"\n" + data
            fh.write(data)
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

    def drain(self, write: Callable[[Sequence[Mapping[str, Any]]], None]) -> int:
        """Hand every pending op to ``write``, a chunk at a time, and cut each chunk once done.

        One call per chunk; if the store refuses a chunk (``LedgerRejected``), its ops are
        written one at a time and the refused ones are set aside. ``LedgerUnavailable``
        propagates and keeps the chunk (and everything after it) in the spool.

        Returns:
            How many ops were written.

        Raises:
            OSError: if the spool cannot be read or cut.
        """
        written = 0
        while True:
            head = self._head()
            if not head:
                return written
            ops, unreadable = _parse(head)
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
            if unreadable:
                self._set_aside_lines(unreadable)
            if rejected:
                self._set_aside(rejected)
            self._cut(head)
            written += len(ops) - len(rejected)

    def _head(self) -> bytes:
        """The first ``DRAIN_CHUNK`` lines of the spool, as bytes (b"" when empty)."""
        if not self.pending():
            return b""
        with self._locked(), open(self.path, "rb") as fh:
            lines = []
            for line in fh:
                lines.append(line)
                if len(lines) >= DRAIN_CHUNK:
                    break
            return b"".join(lines)

    def _cut(self, head: bytes) -> None:
        """Remove ``head`` from the front of the spool, if it is still there."""
        with self._locked():
            with open(self.path, "r+b") as fh:
                if fh.read(len(head)) != head:
                    return  # another drainer cut it first
                rest = fh.read()
                if not rest:
                    fh.truncate(0)
                    fh.flush()
                    os.fsync(fh.fileno())
                    return
            # What was appended since the head was read stays; the rename makes the cut atomic.
            tmp = self.path.with_name(self.path.name + ".tmp")
            with open(tmp, "wb") as out:
                out.write(rest)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)

    def _set_aside(self, rejected: Sequence[tuple[Mapping[str, Any], str]]) -> None:
        _append_synced(
            self.rejected_path,
            b"".join(
                (json.dumps(op, default=str, allow_nan=True) + "\n").encode() for op, _ in rejected
            ),
        )
        logger.warning(
            "the ledger refused %d spooled write(s) (%s); they were moved to %s",
            len(rejected),
            rejected[0][1],
            self.rejected_path,
        )

    def _set_aside_lines(self, unreadable: Sequence[tuple[int, bytes]]) -> None:
        _append_synced(
            self.unreadable_path,
            b"".join(raw if raw.endswith(b"\n") else raw + b"\n" for _, raw in unreadable),
        )
        logger.warning(
            "set aside %d unreadable line(s) of ledger spool %s (line %s) in %s",
            len(unreadable),
            self.path,
            ", ".join(str(n) for n, _ in unreadable[:5]),
            self.unreadable_path,
        )


class Spools:
    """A ledger's spools, first choice first: a write goes to the first that takes it (the
    next when a folder is read-only, gone or full), and every one is drained.

    Args:
        spools: the spools.
        label: the ledger, for messages.
    """

    def __init__(self, spools: Sequence[Spool], label: str) -> None:
        self.all = list(spools)
        self.primary = self.all[0]
        self.label = label

    def extend(self, ops: Sequence[Mapping[str, Any]]) -> None:
        """Keep ``ops`` in the first spool that can be written; never raises."""
        errors = []
        for spool in self.all:
            try:
                spool.extend(ops)
            except OSError as exc:
                errors.append(f"{spool.path}: {exc.strerror or exc}")
                continue
            if errors:
                _warned(
                    ("spool", str(self.primary.path)),
                    "cannot write the ledger spool (%s); records are kept in %s instead",
                    errors[0],
                    spool.path,
                )
            return
        # Nowhere left to keep it: say so, but never take training down.
        _warned(("lost", self.label), "ledger record lost: %s", "; ".join(errors))

    def pending(self) -> bool:
        return any(spool.pending() for spool in self.all)

    def count(self) -> int:
        return sum(spool.count() for spool in self.all)

    def drain(self, write: Callable[[Sequence[Mapping[str, Any]]], None], *, strict: bool) -> int:
        """Drain every spool into ``write``; returns how many ops were written.

        A spool that cannot be read raises ``LedgerError`` when ``strict`` (a flush the user
        asked for); otherwise it is left for later with one warning, and the others drain.

        Raises:
            LedgerUnavailable: if the store cannot be written (the spools are kept).
        """
        n = 0
        for spool in self.all:
            if not spool.pending():
                continue
            try:
                n += spool.drain(write)
            except LedgerError:
                raise
            except Exception as exc:  # noqa: BLE001 - the spool file, not the store, failed
                if strict:
                    why = getattr(exc, "strerror", None) or exc
                    raise LedgerError(f"cannot read the ledger spool {spool.path}: {why}") from exc
                _warned(
                    ("drain", str(spool.path)),
                    "cannot read the ledger spool %s (%s: %s); its records stay there until "
                    "`carbon-callbacks spool flush` can read it",
                    spool.path,
                    type(exc).__name__,
                    exc,
                )
        return n


def _parse(head: bytes) -> tuple[list[dict[str, Any]], list[tuple[int, bytes]]]:
    """The ops in ``head``, and the lines that are not one (with their line numbers)."""
    ops = []
    unreadable = []
    for n, raw in enumerate(head.splitlines(keepends=True), 1):
        if not raw.strip():
            continue
        try:
            op = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            op = None  # a line cut short by a kill mid-write, or bytes not ours
        if is_op(op):
            ops.append(op)
        else:
            unreadable.append((n, raw))
    return ops, unreadable


def _append_synced(path: Path, data: bytes) -> None:
    with open(path, "ab") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
