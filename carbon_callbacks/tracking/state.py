"""A run's running totals and records, and their checkpoint form (``EpochTracker.state_dict``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from carbon_callbacks.records import JOULES_PER_KWH, EpochRecord, Window

STATE_VERSION = 1


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
        stage="train",
        pue=pue,
    )
