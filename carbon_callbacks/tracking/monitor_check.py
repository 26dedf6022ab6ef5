"""The warning about a monitored metric that is never logged, given where it could have been."""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence

from carbon_callbacks.records import EpochRecord

logger = logging.getLogger(__name__)


class MonitorCheck:
    """Warns once, naming the metrics that exist, when a monitored metric is missing.

    An epoch without evaluation (Lightning's ``check_val_every_n_epoch=2``, Keras'
    ``validation_freq=2``, transformers evaluating every few hundred steps) cannot hold a
    validation metric, so the check waits for the first epoch that evaluated; a run in which
    none did is checked at its end, against all its epochs.

    Args:
        names: the monitored metric names (``monitor`` and the policy's).
        own: the keys the tracker logs itself, which are never missing.
    """

    def __init__(self, names: Sequence[str], own: Collection[str]) -> None:
        self.names = tuple(names)
        self.own = frozenset(own)
        self.done = not self.names

    def _missing(self, records: Sequence[EpochRecord]) -> list[str]:
        return [
            name
            for name in self.names
            if name not in self.own and all(name not in r.metrics for r in records)
        ]

    def epoch(self, record: EpochRecord, evaluated: bool) -> None:
        """Check an epoch's record; ``evaluated``: whether an evaluation ran in the epoch."""
        if self.done:
            return
        missing = self._missing([record])
        if missing and not evaluated:
            return  # it may be an evaluation metric, and no evaluation has run yet
        self.done = True
        for name in missing:
            logger.warning(
                "monitor %r was not logged by the end of epoch %d; the metrics that exist "
                "are: %s. Log it, or pass one of these as monitor.",
                name,
                record.epoch,
                ", ".join(sorted(record.metrics)) or "none",
            )

    def run_end(self, records: Sequence[EpochRecord]) -> None:
        """Check a run none of whose epochs settled it (none evaluated)."""
        if self.done or not records:
            return
        self.done = True
        available = ", ".join(sorted({k for r in records for k in r.metrics})) or "none"
        for name in self._missing(records):
            logger.warning(
                "monitor %r was not logged in any of the run's %d epochs, and none of them ran "
                "an evaluation; the metrics that exist are: %s. Log it, or pass one of these "
                "as monitor.",
                name,
                len(records),
                available,
            )
