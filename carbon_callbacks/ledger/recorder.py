"""What a training run is recorded to: the ``RunRecorder`` protocol, which ``Ledger`` implements."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from carbon_callbacks.records import EpochRecord


class RunRecorder(Protocol):
    """A run store as a tracker writes to it: a run's row at its first epoch, then one per epoch.

    ``Ledger`` is one; pass another as ``ledger=`` to send runs elsewhere. If it also has
    ``end_run(run_id, *, end)``, that is called once the run ends, with its ``records.RunEnd``.
    """

    def start_run(self, metadata: Mapping[str, Any], /) -> str:
        """Record a new run and return its id."""
        ...

    def add_epoch(self, run_id: str, record: EpochRecord, /) -> None:
        """Append one epoch's record to the run ``run_id``."""
        ...
