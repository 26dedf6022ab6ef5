"""The embedded tables are lifecycle intensities: no zone below its lifecycle floor, none at 0.

The floors are recomputed here from the source files with ``derive_tables.lifecycle_floors``,
and the whole derivation is rerun to show the shipped CSV files are exactly what it produces.
"""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest

from carbon_callbacks.intensity import all_zones, lookup_country, tables
from carbon_callbacks.records import EpochRecord
from carbon_callbacks.reports import compare_regions

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ROOT / "data" / "sources"
SHIPPED = ROOT / "carbon_callbacks" / "intensity" / "data"


def derive_tables():
    path = ROOT / "data" / "derive_tables.py"
    spec = importlib.util.spec_from_file_location("derive_tables", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def lowest_median() -> float:
    return min(g for g, _ in tables.fuel_factors().values())


def floors() -> dict[str, float]:
    fuels = {fuel: g for fuel, (g, _) in tables.fuel_factors().items()}
    mixes = json.loads((SOURCES / "owid_country_energy_mix_codecarbon.json").read_text())
    return derive_tables().lifecycle_floors(fuels, mixes)[1]


def test_no_zone_is_below_the_lowest_lifecycle_median_of_any_technology():
    floor = lowest_median()
    assert floor == pytest.approx(11.0)  # wind onshore, IPCC AR5
    low = [(z.code, z.g_per_kwh) for z in all_zones() if z.g_per_kwh < floor]
    assert low == []


def test_no_country_or_cloud_region_is_below_its_countrys_lifecycle_floor():
    by_country = floors()
    checked = 0
    for zone in all_zones():
        if zone.country in by_country:
            assert zone.g_per_kwh >= by_country[zone.country] - 1e-9, zone
            checked += 1
    assert checked > 200  # countries and cloud regions, not a handful


def test_central_african_republic_is_its_hydro_lifecycle_not_zero():
    car = lookup_country("CAF")
    hydro = tables.fuel_factors()["hydro"][0]
    assert car.g_per_kwh > 0
    assert car.g_per_kwh == pytest.approx(hydro)  # its whole generation is hydro
    assert "raised from 0 to its lifecycle floor" in car.provenance
    assert car.low > 0


def test_a_raised_value_keeps_its_upstream_figure_and_says_so():
    with open(SHIPPED / "cloud_regions.csv", newline="", encoding="utf-8") as f:
        stockholm = next(r for r in csv.DictReader(f) if r["region"] == "europe-north2")
    assert float(stockholm["raised_from"]) == pytest.approx(2.73)
    zone = tables.lookup_cloud("gcp:europe-north2")
    assert zone.g_per_kwh == pytest.approx(floors()["SWE"])
    assert "raised from 2.73" in zone.provenance and "Google" in zone.provenance
    # A value above its floor is shipped as the source gave it, with no note.
    assert "raised" not in lookup_country("FR").provenance


def test_rebuilding_the_tables_gives_the_shipped_files_byte_for_byte(tmp_path):
    pytest.importorskip("pycountry")  # in the dev extra; only derive_tables needs it
    derive_tables().derive(SOURCES, tmp_path)
    for name in ("countries.csv", "cloud_regions.csv", "ipcc_lifecycle.csv"):
        assert (tmp_path / name).read_bytes() == (SHIPPED / name).read_bytes(), name


def test_compare_regions_starts_with_a_real_lifecycle_figure():
    record = EpochRecord(
        epoch=0, start_wall=0.0, end_wall=60.0, seconds=60.0,
        energy_kwh=1.0, energy_kwh_low=0.9, energy_kwh_high=1.1,
        co2_g=56.0, co2_g_low=30.0, co2_g_high=80.0, energy_kwh_total=1.0, co2_g_total=56.0,
        power_w=60_000.0, intensity_g_per_kwh=56.0,
    )
    footprints = compare_regions([record])
    first = footprints[0]
    assert first.co2_g >= lowest_median() > 0
    assert first.code != "CAF"
    assert all(f.co2_g > 0 for f in footprints)
