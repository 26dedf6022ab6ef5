"""Evaluation passes after a fit (validate, test, predict, evaluate), each measured as a run.

A pass run has its ``kind`` (the framework's name for the pass), one record whose ``stage`` is
that kind, and the fit it evaluates as its ``parent_run``, so ``carbon-callbacks runs`` lists it
next to the fit and a report can add test-time or inference energy to training's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from carbon_callbacks.records import JOULES_PER_KWH, EpochRecord, RunEnd
from carbon_callbacks.tracking.endings import open_runs
from carbon_callbacks.tracking.metrics import scalar_metrics
from carbon_callbacks.tracking.sinks import LedgerSink, Warn
from carbon_callbacks.tracking.state import RunTotals, epoch_record
from carbon_callbacks.tracking.windows import EpochWindows, WindowCarbon

PASS_KINDS = ("validate", "test", "predict", "evaluate")
"""The evaluation passes an adapter can measure (Lightning's three, Keras and transformers'
``evaluate``/``predict``)."""


class EvalPasses:
    """Measures evaluation passes one at a time, each into its own ledger run.

    Args:
        meter: the tracker's ``meter=`` argument (None: an ``EnergyMeter`` built at the first
            pass and started for each).
        carbon: builds the ``WindowCarbon`` a pass converts its window with.
        ledger: the tracker's ``ledger=`` argument.
        warn: the tracker's warn-once.
    """

    def __init__(
        self,
        meter: Any,
        carbon: Callable[[], WindowCarbon],
        ledger: Any,
        warn: Warn,
        describe: Callable[[str, Mapping[str, Any] | None], dict[str, Any]],
    ) -> None:
        self._windows = EpochWindows(meter, warn)
        self._carbon_for = carbon
        self._ledger_arg = ledger
        self._warn = warn
        self._describe = describe
        self._kind = ""
        self._epoch = 0
        self._ledger: LedgerSink | None = None
        self.records: list[EpochRecord] = []
        """Every pass's record, oldest first."""

    @property
    def active(self) -> bool:
        """True between ``start`` and ``end``."""
        return bool(self._kind)

    def start(
        self, kind: str, metadata: Mapping[str, Any] | None = None, *, primary: bool = True
    ) -> None:
        """Start measuring a pass of ``kind`` (one of ``PASS_KINDS``); ends one left open.

        Args:
            kind: the pass.
            metadata: run metadata for the ledger, over the tracker's.
            primary: False on non-zero DDP ranks (they write no ledger).

        Raises:
            ValueError: an unknown ``kind``.
        """
        if kind not in PASS_KINDS:
            raise ValueError(f"kind must be one of {PASS_KINDS}, got {kind!r}")
        if self.active:
            open_runs.close(id(self), "closed when the next pass started")
        self._kind = kind
        self._windows.reset()
        self._windows.start()
        meta = self._describe(kind, metadata)
        self._epoch = int(meta.get("after_epoch") or 0)
        self._ledger = LedgerSink(self._ledger_arg, self._warn)
        if primary:
            self._ledger.start(lambda: meta)
        open_runs.add(id(self), lambda end: self.end(None, end), None)

    def end(
        self, metrics: Mapping[str, Any] | None = None, end: RunEnd | None = None
    ) -> EpochRecord | None:
        """Close the pass: its record (also in the ledger), or None if none was open.

        Args:
            metrics: the framework's metrics for the pass (the test loss...).
            end: how it ended (default completed); a failed pass's record is ``partial``.
        """
        if not self.active:
            return None
        open_runs.discard(id(self))
        kind, self._kind = self._kind, ""
        end = end or RunEnd("completed")
        window, _ = self._windows.close()
        self._windows.stop()
        carbon = self._carbon_for()
        quantities = carbon.quantities(window, 0.0)
        totals = RunTotals()  # a pass stands alone: its totals are its own
        totals.energy_kwh = quantities["joules"] / JOULES_PER_KWH
        totals.co2_g = quantities["co2_g"]
        record = epoch_record(
            self._epoch, window, quantities, totals, carbon.last, carbon.pue,
            scalar_metrics(metrics),
            stage=kind, partial=end.status != "completed",
        )
        self.records.append(record)
        if self._ledger is not None:
            self._ledger.add(record)
            self._ledger.end(end)
        return record

