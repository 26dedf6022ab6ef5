"""Epoch records for the ledger tests (and their worker subprocesses)."""

from __future__ import annotations

from carbon_callbacks.records import EpochRecord


def make_record(
    epoch: int,
    *,
    energy_kwh: float = 0.001,
    intensity: float = 400.0,
    start: float = 1_700_000_000.0,
    seconds: float = 10.0,
    metric: float | None = None,
    stage: str = "train",
) -> EpochRecord:
    """A plausible epoch record whose figures depend on ``epoch`` so sums are checkable."""
    co2 = energy_kwh * intensity
    return EpochRecord(
        epoch=epoch,
        start_wall=start + epoch * seconds,
        end_wall=start + (epoch + 1) * seconds,
        seconds=seconds,
        energy_kwh=energy_kwh,
        energy_kwh_low=energy_kwh * 0.9,
        energy_kwh_high=energy_kwh * 1.1,
        co2_g=co2,
        co2_g_low=co2 * 0.8,
        co2_g_high=co2 * 1.2,
        energy_kwh_total=energy_kwh * (epoch + 1),
        co2_g_total=co2 * (epoch + 1),
        power_w=energy_kwh * 3.6e6 / seconds,
        intensity_g_per_kwh=intensity,
        intensity_source="fixed 400 g/kWh (test)",
        cpu_energy_kwh=energy_kwh * 0.7,
        gpu_energy_kwh=0.0,
        ram_energy_kwh=energy_kwh * 0.3,
        methods={"cpu": "model", "ram": "model"},
        metrics={"val_acc": metric if metric is not None else 0.5 + 0.04 * epoch},
        stage=stage,
    )
