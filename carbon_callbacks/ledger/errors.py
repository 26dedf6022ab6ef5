"""What the ledger raises: one family, so callers catch ``LedgerError`` and read its message."""

from __future__ import annotations


class LedgerError(Exception):
    """The ledger cannot answer (unknown run, unreadable store); the message says what to do."""


class LedgerUnavailable(LedgerError):
    """The store cannot be reached or written right now; writes go to the spool meanwhile."""


class LedgerRejected(LedgerError):
    """The store is up but refused the rows (a constraint or a value it cannot hold).

    Retrying cannot help, so spooled writes refused this way are set aside (see ``spool.Spool``)
    instead of blocking every later write.
    """

