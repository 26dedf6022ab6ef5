"""The run ledger: an append-only store of every run and each of its epoch records.

``Ledger`` (``ledger.py``, its reads in ``reads.py``) is the one entry point; the rest of the
package is what it is made of: the tables and migrations (``schema.py``), the SQLite store
(``sqlite_store.py``, with ``sqlite_file.py`` checking that the file under it is still the one
it writes) and the SQLAlchemy store (``database_store.py``), the write path (``writer.py``:
a worker thread, bounded waits, background retries) and the spool that keeps writes while a
store is down (``spool.py``), runs as the ledger reports them (``runs.py``) and a page at a
time (``pages.py``), where a ledger lives (``location.py``), what a run records about its
machine (``host.py``), and imports and exports (``interchange.py``, ``codecarbon.py``).
Anything else a tracker can record runs to is a ``RunRecorder`` (``recorder.py``).
"""

from __future__ import annotations

from carbon_callbacks.ledger.codecarbon import CODECARBON_REQUIRED, read_codecarbon_csv
from carbon_callbacks.ledger.errors import (
    LedgerDamaged,
    LedgerError,
    LedgerRejected,
    LedgerUnavailable,
)
from carbon_callbacks.ledger.interchange import (
    export_csv,
    export_jsonl,
    import_files,
    read_jsonl,
)
from carbon_callbacks.ledger.ledger import Ledger
from carbon_callbacks.ledger.location import ENV_LEDGER, default_data_dir, default_location
from carbon_callbacks.ledger.pages import RUN_ORDERS, RUN_STATUSES, EpochMetrics, RunsPage
from carbon_callbacks.ledger.recorder import RunRecorder
from carbon_callbacks.ledger.runs import RunInfo, select_runs
from carbon_callbacks.ledger.schema import ENV_PROJECT, ENV_TEAM, MIGRATIONS, SCHEMA_VERSION

__all__ = [
    "CODECARBON_REQUIRED",
    "ENV_LEDGER",
    "ENV_PROJECT",
    "ENV_TEAM",
    "MIGRATIONS",
    "RUN_ORDERS",
    "RUN_STATUSES",
    "SCHEMA_VERSION",
    "EpochMetrics",
    "Ledger",
    "LedgerDamaged",
    "LedgerError",
    "LedgerRejected",
    "LedgerUnavailable",
    "RunInfo",
    "RunRecorder",
    "RunsPage",
    "default_data_dir",
    "default_location",
    "export_csv",
    "export_jsonl",
    "import_files",
    "read_codecarbon_csv",
    "read_jsonl",
    "select_runs",
]
