"""The spool: where ledger writes wait, as JSON lines, while the store cannot take them."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from carbon_callbacks.ledger.errors import LedgerRejected
from carbon_callbacks.ledger.schema import is_op

logger = logging.getLogger(__name__)


class Spool:
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
            if sys.platform == "win32":  # no advisory locks: a single writer is assumed
                yield fh
                return
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield fh
            finally:
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
                if is_op(op):
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


