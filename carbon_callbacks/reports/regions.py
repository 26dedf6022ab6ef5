"""What a run's energy would have emitted elsewhere: one row per region of the embedded tables."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from carbon_callbacks.records import EpochRecord
from carbon_callbacks.reports.format import equivalents

# --------------------------------------------------------------------------- regions


@dataclass(frozen=True)
class RegionFootprint:
    """What a run's energy would have emitted in one place."""

    code: str
    kind: str
    name: str
    g_per_kwh: float
    co2_g: float
    co2_g_low: float
    co2_g_high: float
    source: str


def compare_regions(
    records: Sequence[EpochRecord], zones: Iterable[Any] | None = None
) -> list[RegionFootprint]:
    """The same energy (with each record's PUE) under every embedded zone, lowest CO2e first.

    Args:
        records: the run's epoch records.
        zones: objects with ``code, kind, name, g_per_kwh, low, high, source`` (default:
            ``carbon_callbacks.intensity.all_zones()``).

    Returns:
        One footprint per zone.
    """
    if zones is None:
        from carbon_callbacks.intensity import all_zones

        zones = all_zones()
    kwh = math.fsum(r.energy_kwh * (r.pue or 1.0) for r in records)
    out = [
        RegionFootprint(
            code=z.code,
            kind=z.kind,
            name=z.name,
            g_per_kwh=float(z.g_per_kwh),
            co2_g=kwh * z.g_per_kwh,
            co2_g_low=kwh * z.low,
            co2_g_high=kwh * z.high,
            source=z.source,
        )
        for z in zones
    ]
    return sorted(out, key=lambda f: (f.co2_g, f.code))


def regions_rows(footprints: Sequence[RegionFootprint]) -> tuple[list[str], list[list[Any]]]:
    """Headers and cells for ``compare-regions``."""
    headers = ["rank", "zone", "kind", "name", "g/kWh", "co2_g", "low", "high", "car_km"]
    cells = [
        [
            i,
            f.code,
            f.kind,
            f.name,
            f.g_per_kwh,
            f.co2_g,
            f.co2_g_low,
            f.co2_g_high,
            equivalents(f.co2_g, 0.0).car_km,
        ]
        for i, f in enumerate(footprints, 1)
    ]
    return headers, cells
