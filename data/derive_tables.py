"""Rebuild the embedded intensity tables from the upstream files in ``data/sources/``.

Run by hand when the upstream files change (not at import time, not in CI)::

    python data/derive_tables.py [SOURCES_DIR]

It writes ``countries.csv``, ``cloud_regions.csv`` and ``ipcc_lifecycle.csv`` into
``carbon_callbacks/intensity/data/``. The rules it applies are the ones stated in the
``README.md`` there: Ember for countries and
aggregates; Google's own 2024 file for GCP; for AWS and Azure the Cloud Carbon Footprint factor
only where its source is EPA eGRID or the EEA, otherwise the region's country from the Ember table.
Every value is then raised to its lifecycle floor where it lies below it (``lifecycle_floors``):
the shipped tables are lifecycle intensities, and no grid's lifecycle figure can be 0.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "sources"
TABLES = HERE.parent / "carbon_callbacks" / "intensity" / "data"

# ISO 3166 alpha-3 -> alpha-2 for codes pycountry does not know (user-assigned codes).
EXTRA_ALPHA2 = {"XKX": "XK"}

# Ember aggregate names -> the code users type (case-insensitive at lookup).
AGGREGATES = {
    "World": "WORLD",
    "EU": "EU",
    "Europe": "EUROPE",
    "Africa": "AFRICA",
    "Asia": "ASIA",
    "ASEAN": "ASEAN",
    "G20": "G20",
    "G7": "G7",
    "OECD": "OECD",
    "Latin America and Caribbean": "LATIN-AMERICA",
    "Middle East": "MIDDLE-EAST",
    "North America": "NORTH-AMERICA",
    "Oceania": "OCEANIA",
}

# Where each Google Cloud region is (the 2024 file names a city, not a country).
GCP_COUNTRY = {
    "africa-south1": "ZAF", "asia-east1": "TWN", "asia-east2": "HKG", "asia-northeast1": "JPN",
    "asia-northeast2": "JPN", "asia-northeast3": "KOR", "asia-south1": "IND", "asia-south2": "IND",
    "asia-southeast1": "SGP", "asia-southeast2": "IDN", "australia-southeast1": "AUS",
    "australia-southeast2": "AUS", "europe-central2": "POL", "europe-north1": "FIN",
    "europe-north2": "SWE", "europe-southwest1": "ESP", "europe-west1": "BEL",
    "europe-west2": "GBR", "europe-west3": "DEU", "europe-west4": "NLD", "europe-west6": "CHE",
    "europe-west8": "ITA", "europe-west9": "FRA", "europe-west10": "DEU", "europe-west12": "ITA",
    "me-central1": "QAT", "me-central2": "SAU", "me-west1": "ISR",
    "northamerica-northeast1": "CAN", "northamerica-northeast2": "CAN",
    "northamerica-south1": "MEX", "southamerica-east1": "BRA", "southamerica-west1": "CHL",
    "us-central1": "USA", "us-central2": "USA", "us-east1": "USA", "us-east2": "USA",
    "us-east4": "USA", "us-east5": "USA", "us-south1": "USA", "us-west1": "USA", "us-west2": "USA",
    "us-west3": "USA", "us-west4": "USA",
}

# AWS regions by country (AWS's published region locations). US regions come from eGRID rows.
AWS_COUNTRY = {
    "af-south-1": "ZAF", "ap-east-1": "HKG", "ap-south-1": "IND", "ap-south-2": "IND",
    "ap-northeast-1": "JPN", "ap-northeast-2": "KOR", "ap-northeast-3": "JPN",
    "ap-southeast-1": "SGP", "ap-southeast-2": "AUS", "ap-southeast-3": "IDN",
    "ap-southeast-4": "AUS", "ap-southeast-5": "MYS", "ap-southeast-7": "THA",
    "ca-central-1": "CAN", "ca-west-1": "CAN", "cn-north-1": "CHN", "cn-northwest-1": "CHN",
    "eu-central-1": "DEU", "eu-central-2": "CHE", "eu-west-1": "IRL", "eu-west-2": "GBR",
    "eu-west-3": "FRA", "eu-south-1": "ITA", "eu-south-2": "ESP", "eu-north-1": "SWE",
    "il-central-1": "ISR", "me-south-1": "BHR", "me-central-1": "ARE", "mx-central-1": "MEX",
    "sa-east-1": "BRA",
}

# Azure regions (programmatic names) by country; US regions come from eGRID rows.
AZURE_COUNTRY = {
    "eastasia": "HKG", "southeastasia": "SGP", "southafricanorth": "ZAF",
    "southafricawest": "ZAF", "australiaeast": "AUS", "australiasoutheast": "AUS",
    "australiacentral": "AUS", "australiacentral2": "AUS", "japaneast": "JPN",
    "japanwest": "JPN", "koreacentral": "KOR", "koreasouth": "KOR", "centralindia": "IND",
    "southindia": "IND", "westindia": "IND", "northeurope": "IRL", "westeurope": "NLD",
    "francecentral": "FRA", "francesouth": "FRA", "swedencentral": "SWE",
    "switzerlandnorth": "CHE", "switzerlandwest": "CHE", "uksouth": "GBR", "ukwest": "GBR",
    "germanynorth": "DEU", "germanywestcentral": "DEU", "norwayeast": "NOR",
    "norwaywest": "NOR", "uaenorth": "ARE", "uaecentral": "ARE", "canadacentral": "CAN",
    "canadaeast": "CAN", "brazilsouth": "BRA", "brazilsoutheast": "BRA",
    "polandcentral": "POL", "italynorth": "ITA", "spaincentral": "ESP",
    "israelcentral": "ISR", "qatarcentral": "QAT", "mexicocentral": "MEX",
    "newzealandnorth": "NZL",
}

# Cloud Carbon Footprint's Azure names that differ from Azure's programmatic names.
AZURE_NAME = {
    "uaenorth": "unitedarabemiratesnorth", "uaecentral": "unitedarabemiratescentral",
    "centralindia": "indiacentral", "southindia": "indiasouth", "westindia": "indiawest",
    "koreacentral": "koreaeast",
}

US_STATE_GRID = "EPA eGRID2020 NERC region {nerc}, via Cloud Carbon Footprint (Appendix V)"
EEA = "EEA CO2 emission intensity, via Cloud Carbon Footprint (Appendix V)"


def _alpha2(iso3: str) -> str:
    import pycountry  # only needed to rebuild the table, never at run time

    if iso3 in EXTRA_ALPHA2:
        return EXTRA_ALPHA2[iso3]
    return pycountry.countries.get(alpha_3=iso3).alpha_2


# OWID generation columns -> the IPCC AR5 rows of that technology. The floor takes the lowest
# median among them (solar: CSP, rooftop or utility PV), and for "other renewables" (geothermal,
# tidal, wave) the lowest median of the whole table, so that it stays a lower bound.
LOW_CARBON_ROWS: dict[str, tuple[str, ...]] = {
    "hydroelectricity_TWh": ("hydro",),
    "nuclear_TWh": ("nuclear",),
    "wind_TWh": ("wind_onshore", "wind_offshore"),
    "solar_TWh": ("solar_pv_utility", "solar_pv_rooftop", "solar_csp"),
    "biofuel_TWh": ("biomass",),
    "other_renewable_exc_biofuel_TWh": (),
}


def lifecycle_floors(
    fuels: dict[str, float], mixes: dict[str, dict]
) -> tuple[float, dict[str, float]]:
    """The lowest lifecycle intensity any grid can have, overall and per country.

    Args:
        fuels: IPCC AR5 lifecycle median per fuel, gCO2e/kWh.
        mixes: OWID generation per country (ISO alpha-3), TWh per source.

    Returns:
        The table's lowest median (no kWh from any technology is cleaner), and per country the
        lifecycle emissions of its low-carbon generation alone, spread over all its generation:
        a figure that also counts the fossil share can only be higher.
    """
    lowest = min(fuels.values())
    floors: dict[str, float] = {}
    for iso3, mix in mixes.items():
        total = float(mix.get("total_TWh") or 0.0)
        if total <= 0:
            continue
        grams = sum(
            float(mix.get(column) or 0.0) * min(fuels[f] for f in (rows or tuple(fuels)))
            for column, rows in LOW_CARBON_ROWS.items()
        )
        floors[iso3] = round(max(lowest, grams / total), 2)
    return lowest, floors


def derive(shared: Path, out_dir: Path = TABLES) -> None:
    """Write the three tables from the files in ``shared`` into ``out_dir``."""
    with open(shared / "ipcc_ar5_lifecycle_factors.csv", newline="") as f:
        fuels = [
            [
                r["source_type"],
                float(r["lifecycle_gco2e_per_kwh_median"]),
                r["checked_here"].split(":")[0],
                r["reference"],
            ]
            for r in csv.DictReader(f)
        ]
    mixes = json.loads((shared / "owid_country_energy_mix_codecarbon.json").read_text())
    lowest, floors = lifecycle_floors({r[0]: r[1] for r in fuels}, mixes)

    def floored(g: float, iso3: str) -> tuple[float, float | str]:
        """The value to ship and, when the floor raised it, the upstream value ("" if not)."""
        floor = floors.get(iso3, lowest)
        return (floor, g) if g < floor else (g, "")

    ember = json.loads((shared / "ember_country_intensity_co2js.json").read_text())
    country_value: dict[str, tuple[float, int]] = {}
    country_name: dict[str, str] = {}
    rows = []
    for key, rec in sorted(ember.items()):
        g = float(rec["emissions_intensity_gco2_per_kwh"])
        if rec["country_code"]:
            iso3 = rec["country_code"]
            value, raised_from = floored(g, iso3)
            country_value[iso3] = (value, rec["year"])
            country_name[iso3] = rec["country_or_region"]
            rows.append(
                [iso3, _alpha2(iso3), "country", rec["country_or_region"], rec["year"], value,
                 raised_from]
            )
        else:
            value, raised_from = floored(g, "")
            rows.append([AGGREGATES[key], "", "aggregate", key, rec["year"], value, raised_from])
    with open(out_dir / "countries.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["code", "alpha2", "kind", "name", "year", "g_per_kwh", "raised_from"])
        w.writerows(rows)

    out = []

    def region_row(provider, region, location, iso3, year, g, source) -> list:
        return [provider, region, location, iso3, year, *floored(g, iso3), source]

    with open(shared / "gcp_region_carbon_2024.csv", newline="") as f:
        for r in csv.DictReader(f):
            region = r["Google Cloud Region"]
            out.append(region_row("gcp", region, r["Location"], GCP_COUNTRY[region], 2024,
                                  float(r["Grid carbon intensity (gCO2eq / kWh)"]),
                                  "Google Cloud region-carbon-info 2024 (grid, location-based)"))

    ccf: dict[tuple[str, str], dict[str, str]] = {}
    with open(shared / "ccf_cloud_region_factors.csv", newline="") as f:
        for r in csv.DictReader(f):
            if r["provider"] in ("aws", "azure"):
                name = r["region"] if r["provider"] == "aws" else r["region"].replace(" ", "")
                ccf[(r["provider"], name.lower())] = r

    def country_row(provider: str, region: str, iso3: str) -> list:
        g, year = country_value[iso3]  # already floored with the country
        source = f"Ember {year} country average ({iso3})"
        return [provider, region, country_name[iso3], iso3, year, g, "", source]

    for (provider, name), r in sorted(ccf.items()):
        if r["source"] == "EPA":
            out.append(region_row(provider, name, r["location"], "USA", 2020,
                                  float(r["gco2e_per_kwh"]),
                                  US_STATE_GRID.format(nerc=r["nerc_region"])))
    for region, iso3 in AWS_COUNTRY.items():
        r = ccf.get(("aws", region))
        if r is not None and r["source"] == "EEA":
            out.append(region_row("aws", region, r["location"], iso3, "",
                                  float(r["gco2e_per_kwh"]), EEA))
        else:
            out.append(country_row("aws", region, iso3))
    for region, iso3 in AZURE_COUNTRY.items():
        r = ccf.get(("azure", AZURE_NAME.get(region, region)))
        if r is not None and r["source"] == "EEA":
            out.append(region_row("azure", region, r["location"], iso3, "",
                                  float(r["gco2e_per_kwh"]), EEA))
        else:
            out.append(country_row("azure", region, iso3))
    with open(out_dir / "cloud_regions.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["provider", "region", "location", "country", "year", "g_per_kwh",
                    "raised_from", "source"])
        w.writerows(sorted(out, key=lambda r: (r[0], r[1])))

    with open(out_dir / "ipcc_lifecycle.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["fuel", "g_per_kwh", "checked", "reference"])
        w.writerows(fuels)


if __name__ == "__main__":
    derive(Path(sys.argv[1]) if len(sys.argv) > 1 else SOURCES)
