"""A training run turned into epoch records: ``EpochTracker`` (``tracker.py``) cuts the meter's
readings at epoch boundaries (``windows.py``), converts them to CO2e, keeps the totals
(``state.py``), sums them across DDP ranks (``distributed.py``), asks the stopping policy and the
trial (``stopping.py``), and hands each record to the ledger and a trial (``sinks.py``). A fit's
life, from its start to how it ended, is ``lifecycle.py``; the backstops for endings no hook
reports (exceptions, SIGTERM, a fit left open) are ``endings.py``; evaluation passes after a fit
are ``passes.py``. It knows no ML framework; the adapters call its hooks."""

from __future__ import annotations

from carbon_callbacks.tracking.distributed import Reducer
from carbon_callbacks.tracking.metrics import find_caller_instance, scalar_metrics
from carbon_callbacks.tracking.sinks import LedgerSink, LedgerSpec, TrialSink
from carbon_callbacks.tracking.tracker import EVAL_ENERGY_KEY, LOG_KEYS, EpochTracker

__all__ = [
    "EVAL_ENERGY_KEY",
    "LOG_KEYS",
    "EpochTracker",
    "LedgerSink",
    "LedgerSpec",
    "Reducer",
    "TrialSink",
    "find_caller_instance",
    "scalar_metrics",
]
