"""What the ledger raises: one family, so callers catch ``LedgerError`` and read its message."""

from __future__ import annotations


class LedgerError(Exception):
    """The ledger cannot answer (unknown run, unreadable store); the message says what to do."""


class LedgerUnavailable(LedgerError):
    """The store cannot be reached or written right now; writes go to the spool meanwhile."""


class LedgerDamaged(LedgerUnavailable):
    """The SQLite file a writer was writing is no longer what it wrote: truncated, overwritten,
    replaced or deleted underneath it.

    SQLite would go on accepting rows from its page cache into a file that no longer holds
    them, so the writer copies what its open connection can still read to the spool (see
    ``SqliteStore.salvage``) and writes nothing more to that file.
    """


class LedgerRejected(LedgerError):
    """The store is up but refused the rows (a constraint or a value it cannot hold).

    Retrying cannot help, so spooled writes refused this way are set aside (see ``spool.Spool``)
    instead of blocking every later write.
    """

