"""A run's running totals and records, their checkpoint form (``EpochTracker.state_dict``), what a
new run continues, and the records and summary built from them."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from carbon_callbacks.records import JOULES_PER_KWH, EpochRecord, RunEnd, RunSummary, Window

STATE_VERSION = 1

EVAL_ENERGY_KEY = "evaluation_energy_kwh"
"""Logged next to the record's own keys: the share of the epoch's energy spent in evaluation.

Not ``eval_...``: transformers' TensorBoard and W&B integrations file every ``eval_`` key under
``eval/`` (``eval/energy_kwh``), as if it were an evaluation metric; this key is part of the
training epoch's energy, so it belongs beside the others (``train/evaluation_energy_kwh``).
"""


class RunTotals:
    """What a run has added up so far: its records, evaluation energy and totals.

    Attributes:
        records: training epoch records (summed over processes under DDP).
        eval_kwh: each record's evaluation energy, in the same order.
        energy_kwh: kWh since fit start, all processes, resumed epochs included.
        co2_g: grams CO2e since fit start, all processes, resumed epochs included.
        local_energy_kwh: kWh measured by this process alone.
        resumed_from: the ledger run id of the checkpoint this run resumed ("" if none).
    """

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        """Forget everything (a new run that does not resume)."""
        self.records: list[EpochRecord] = []
        self.eval_kwh: list[float] = []
        self.energy_kwh = 0.0
        self.co2_g = 0.0
        self.local_energy_kwh = 0.0
        self.resumed_from = ""

    def begin(self, first_epoch: int | None, *, restored: bool, previous_run: str) -> str:
        """Settle what a new run's totals continue, at its first epoch; returns its parent run.

        - Restored from a checkpoint: the checkpoint's records before ``first_epoch`` are kept
          (a checkpoint may be an epoch ahead of the weights resumed), and the parent is the
          run that wrote it.
        - Not restored, but ``first_epoch`` follows the last record of the previous fit (``fit``
          again on the same Lightning trainer, Keras ``initial_epoch``), or repeats the epoch it
          ended inside: the totals go on (the energy of a repeated epoch was spent twice) and
          the parent is that fit's run.
        - Otherwise (a new fit from epoch 0, another model): the totals start from zero.

        Args:
            first_epoch: the run's first epoch, or None if it ended before one started.
            restored: whether ``load`` was called for this run.
            previous_run: the ledger run id of the previous fit of this tracker ("" if none).

        Returns:
            The run this one continues ("" for none).
        """
        if restored:
            if first_epoch is not None:
                self._keep_before(first_epoch)
            return self.resumed_from
        if first_epoch is not None and self.records:
            last = self.records[-1]
            # After a fit that ended inside an epoch (its partial record), that epoch is next.
            if first_epoch == last.epoch + 1 or (last.partial and first_epoch == last.epoch):
                return previous_run
        self.clear()
        return ""

    def add(
        self,
        epoch: int,
        window: Window,
        local: Mapping[str, float],
        summed: Mapping[str, float],
        intensity: tuple[float, str],
        pue: float,
        metrics: dict[str, float],
        *,
        partial: bool = False,
    ) -> EpochRecord:
        """Count one epoch's window (``local``: this process; ``summed``: all ranks) and return
        its record, whose totals include it."""
        self.local_energy_kwh += local["joules"] / JOULES_PER_KWH
        self.energy_kwh += summed["joules"] / JOULES_PER_KWH
        self.co2_g += summed["co2_g"]
        record = epoch_record(epoch, window, summed, self, intensity, pue, metrics, partial=partial)
        self.records.append(record)
        self.eval_kwh.append(summed["eval_joules"] / JOULES_PER_KWH)
        return record

    def _keep_before(self, epoch: int) -> None:
        keep = sum(1 for r in self.records if r.epoch < epoch)
        if keep == len(self.records):
            return
        self.records = self.records[:keep]
        self.eval_kwh = self.eval_kwh[:keep]
        last = self.records[-1] if self.records else None
        energy = last.energy_kwh_total if last else 0.0
        # This process's share shrinks in proportion (exact in one process, where it is all).
        share = self.local_energy_kwh / self.energy_kwh if self.energy_kwh > 0 else 1.0
        self.local_energy_kwh = energy * share
        self.energy_kwh = energy
        self.co2_g = last.co2_g_total if last else 0.0

    @property
    def next_epoch(self) -> int:
        """The epoch after the last record (0 with none)."""
        return self.records[-1].epoch + 1 if self.records else 0

    def log_dict(self, record: EpochRecord | None, prefix: str) -> dict[str, float]:
        """The keys an adapter logs for ``record`` (the last one when None; {} with none)."""
        if record is None:
            if not self.records:
                return {}
            record = self.records[-1]
        return {**record.log_dict(prefix), prefix + EVAL_ENERGY_KEY: self.eval_kwh_of(record)}

    def eval_kwh_of(self, record: EpochRecord) -> float:
        """The evaluation energy recorded with ``record`` (0 if unknown)."""
        position = len(self.records) - 1
        for i, r in enumerate(self.records):
            if r is record:
                position = i
        return self.eval_kwh[position] if 0 <= position < len(self.eval_kwh) else 0.0

    def to_state(self, run_id: str) -> dict[str, Any]:
        """The JSON-ready checkpoint form (the policies keep no state: they read the records)."""
        return {
            "version": STATE_VERSION,
            "records": [r.to_dict() for r in self.records],
            "eval_kwh": list(self.eval_kwh),
            "energy_kwh_total": self.energy_kwh,
            "co2_g_total": self.co2_g,
            "local_energy_kwh_total": self.local_energy_kwh,
            "run_id": run_id or self.resumed_from,
        }

    def load(self, state: Mapping[str, Any]) -> None:
        """Take the totals and records of a checkpoint written by ``to_state``.

        Raises:
            ValueError: A state written by a newer, incompatible version.
        """
        version = int(state.get("version", 0))
        if version > STATE_VERSION:
            raise ValueError(
                f"checkpoint carbon state has version {version}; this carbon-callbacks reads "
                f"up to {STATE_VERSION}: upgrade carbon-callbacks to resume it"
            )
        self.records = [EpochRecord.from_dict(r) for r in state.get("records", [])]
        self.eval_kwh = [float(x) for x in state.get("eval_kwh", [0.0] * len(self.records))]
        self.energy_kwh = float(state.get("energy_kwh_total", 0.0))
        self.co2_g = float(state.get("co2_g_total", 0.0))
        self.local_energy_kwh = float(state.get("local_energy_kwh_total", 0.0))
        self.resumed_from = str(state.get("run_id", ""))


def epoch_record(
    epoch: int,
    window: Window,
    q: Mapping[str, float],
    totals: RunTotals,
    intensity: tuple[float, str],
    pue: float,
    metrics: dict[str, float],
    *,
    stage: str = "train",
    partial: bool = False,
) -> EpochRecord:
    """The record of one epoch from its window's (summed) quantities and the run's totals."""
    g_per_kwh, provenance = intensity
    return EpochRecord.build(
        epoch=epoch,
        start_wall=window.start_wall,
        end_wall=window.end_wall,
        seconds=window.seconds,
        energy_kwh=q["joules"] / JOULES_PER_KWH,
        energy_kwh_low=q["low"] / JOULES_PER_KWH,
        energy_kwh_high=q["high"] / JOULES_PER_KWH,
        co2_g=q["co2_g"],
        co2_g_low=q["co2_low"],
        co2_g_high=q["co2_high"],
        energy_kwh_total=totals.energy_kwh,
        co2_g_total=totals.co2_g,
        power_w=q["joules"] / window.seconds if window.seconds > 0 else 0.0,
        intensity_g_per_kwh=g_per_kwh if math.isfinite(g_per_kwh) else 0.0,
        intensity_source=provenance,
        cpu_energy_kwh=q["cpu"] / JOULES_PER_KWH,
        gpu_energy_kwh=q["gpu"] / JOULES_PER_KWH,
        ram_energy_kwh=q["ram"] / JOULES_PER_KWH,
        methods=window.methods,
        metrics=metrics,
        stage=stage,
        pue=pue,
        partial=partial,
    )


def run_summary(
    run_id: str,
    totals: RunTotals,
    fit_start_wall: float,
    end: RunEnd,
    metadata: Mapping[str, Any],
) -> RunSummary:
    """The summary of a run that ended as ``end``."""
    records = totals.records
    return RunSummary(
        run_id=run_id,
        start_wall=records[0].start_wall if records else fit_start_wall,
        end_wall=records[-1].end_wall if records else time.time(),
        epochs=tuple(records),
        energy_kwh=totals.energy_kwh,
        co2_g=totals.co2_g,
        stopped_early=end.stopped_early,
        stop_reason=end.reason if end.status == "stopped" else "",
        metadata=dict(metadata),
        end=end,
    )
