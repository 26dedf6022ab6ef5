"""The embedded intensity tables: countries, aggregates, cloud regions and IPCC fuel factors.

The CSV files in ``data/`` are read on first use only (``import carbon_callbacks`` stays cheap)
and cached for the life of the process. ``data/README.md`` says where every number comes from,
under which licence, and which spread is used for each table.
"""

from __future__ import annotations

import csv
import difflib
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"

# Relative half-width of the low/high band around each table's value (see data/README.md).
# A yearly average applied to a given hour: the grid swings around it through the day and year.
YEARLY_SPREAD = 0.40
# A continent or group applied to an unknown country in it: countries differ more than hours do.
AGGREGATE_SPREAD = 0.50
# IPCC lifecycle medians: the AR5 ranges per fuel are wide; the shipped file carries medians only.
MIX_SPREAD = 0.30

CLOUD_PROVIDERS = ("gcp", "aws", "azure")


@dataclass(frozen=True)
class ZoneIntensity:
    """One row of the embedded tables: a place, its intensity, its band and where it comes from.

    Attributes:
        code: What a user types: ``"FRA"`` for a country, ``"WORLD"`` for an aggregate,
            ``"gcp:europe-west1"`` for a cloud region.
        kind: ``"country"``, ``"aggregate"``, or the cloud provider (``"gcp"``, ``"aws"``,
            ``"azure"``).
        name: A readable name (country or region location).
        g_per_kwh: Average intensity in gCO2e/kWh.
        low: Lower bound of the band used for CO2e ranges, gCO2e/kWh.
        high: Upper bound, gCO2e/kWh.
        year: Year of the underlying figure, or None where the source does not state it.
        source: Where the figure comes from (shown as provenance in every result).
        country: ISO 3166 alpha-3 code of the country the zone lies in ("" for aggregates).
    """

    code: str
    kind: str
    name: str
    g_per_kwh: float
    low: float
    high: float
    year: int | None
    source: str
    country: str = ""

    @property
    def provenance(self) -> str:
        """One line saying what this value is, for logs and records."""
        stated = self.year is not None and str(self.year) in self.source
        year = f" {self.year}" if self.year is not None and not stated else ""
        return f"{self.source}{year} [{self.code}]"


def _band(value: float, spread: float) -> tuple[float, float]:
    return value * (1.0 - spread), value * (1.0 + spread)


def _year(text: str) -> int | None:
    return int(text) if text.strip() else None


def _ember_source(row: dict[str, str]) -> str:
    note = _floor_note(row.get("raised_from"))
    # With a note the year goes before it ("... 2022, raised from 0 ..."), not after.
    year = f" {row['year']}" if note and row["year"].strip() else ""
    return f"Ember yearly average, {row['name']}{year}{note}"


def _floor_note(raised_from: str | None) -> str:
    """What the provenance says when derive_tables raised an upstream value to its floor."""
    if not raised_from:
        return ""
    return f", raised from {float(raised_from):g} to its lifecycle floor"


@functools.lru_cache(maxsize=1)
def _countries() -> tuple[dict[str, ZoneIntensity], dict[str, str]]:
    """Zones by upper-case code, and alpha-2 -> alpha-3."""
    zones: dict[str, ZoneIntensity] = {}
    alpha2: dict[str, str] = {}
    with open(DATA_DIR / "countries.csv", newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            g = float(r["g_per_kwh"])
            aggregate = r["kind"] == "aggregate"
            low, high = _band(g, AGGREGATE_SPREAD if aggregate else YEARLY_SPREAD)
            zones[r["code"]] = ZoneIntensity(
                code=r["code"],
                kind=r["kind"],
                name=r["name"],
                g_per_kwh=g,
                low=low,
                high=high,
                year=_year(r["year"]),
                source=_ember_source(r),
                country="" if aggregate else r["code"],
            )
            if r["alpha2"]:
                alpha2[r["alpha2"]] = r["code"]
    world = zones["WORLD"]
    # Nothing says where the machine is, so the band is the spread between countries: the
    # 10th-90th percentile of the country table, not a guess around the world mean.
    values = sorted(z.g_per_kwh for z in zones.values() if z.kind == "country")
    p10 = values[len(values) // 10]
    p90 = values[(9 * len(values)) // 10]
    zones["WORLD"] = ZoneIntensity(
        code=world.code,
        kind=world.kind,
        name=world.name,
        g_per_kwh=world.g_per_kwh,
        low=min(p10, world.g_per_kwh),
        high=max(p90, world.g_per_kwh),
        year=world.year,
        source=world.source,
    )
    # "UK" is what people type for the United Kingdom; ISO's alpha-2 is "GB".
    alpha2.setdefault("UK", alpha2["GB"])
    return zones, alpha2


@functools.lru_cache(maxsize=1)
def _cloud_regions() -> dict[str, ZoneIntensity]:
    """Cloud regions by ``provider:region`` (lower case, Azure names without spaces)."""
    regions: dict[str, ZoneIntensity] = {}
    with open(DATA_DIR / "cloud_regions.csv", newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            g = float(r["g_per_kwh"])
            low, high = _band(g, YEARLY_SPREAD)
            code = f"{r['provider']}:{r['region']}"
            regions[code] = ZoneIntensity(
                code=code,
                kind=r["provider"],
                name=r["location"],
                g_per_kwh=g,
                low=low,
                high=high,
                year=_year(r["year"]),
                source=r["source"] + _floor_note(r.get("raised_from")),
                country=r["country"],
            )
    return regions


@functools.lru_cache(maxsize=1)
def fuel_factors() -> dict[str, tuple[float, str]]:
    """IPCC AR5 lifecycle medians: fuel -> (gCO2e/kWh, reference)."""
    with open(DATA_DIR / "ipcc_lifecycle.csv", newline="", encoding="utf-8") as f:
        return {r["fuel"]: (float(r["g_per_kwh"]), r["reference"]) for r in csv.DictReader(f)}


def _suggest(word: str, choices: Iterable[str], n: int = 3) -> list[str]:
    choices = list(choices)
    close = difflib.get_close_matches(word, choices, n=n, cutoff=0.5)
    if not close:
        # Codes are short, so similarity ratios are low; fall back to a shared first letter.
        close = [c for c in sorted(choices) if c[:1] == word[:1]][:n]
    return close


def world() -> ZoneIntensity:
    """The world average, used only when nothing names a place."""
    return _countries()[0]["WORLD"]


def lookup_country(code: str) -> ZoneIntensity:
    """A country (ISO 3166 alpha-2 or alpha-3) or aggregate (``"WORLD"``, ``"EU"``, ...).

    Args:
        code: The code, case-insensitive. ``"UK"`` is accepted for ``"GB"``.

    Returns:
        The table row for that country or aggregate.

    Raises:
        ValueError: The code is unknown; the message names it and the closest valid codes.
    """
    zones, alpha2 = _countries()
    key = code.strip().upper().replace(" ", "-").replace("_", "-")
    if key in zones:
        return zones[key]
    if key in alpha2:
        return zones[alpha2[key]]
    names = {z.name.upper(): z.code for z in zones.values()}
    if key.replace("-", " ") in names:
        return zones[names[key.replace("-", " ")]]
    pool = list(zones) + list(alpha2)
    hints = _suggest(key, pool)
    hints += [names[n] for n in difflib.get_close_matches(key, list(names), n=2, cutoff=0.7)]
    hint = ", ".join(dict.fromkeys(hints)) or "see carbon_callbacks.intensity.all_zones()"
    raise ValueError(
        f"intensity: unknown country or zone code {code!r}; closest valid codes: {hint}. "
        "Use an ISO 3166 alpha-2/alpha-3 code (e.g. 'FR', 'FRA'), an aggregate such as 'WORLD', "
        "or a cloud region such as 'gcp:europe-west1'."
    )


def country_alpha2(code: str) -> str:
    """The ISO 3166 alpha-2 code of a country row's alpha-3 code (``"FRA"`` -> ``"FR"``).

    Args:
        code: A country's alpha-3 code, as in ``ZoneIntensity.code``.

    Returns:
        The alpha-2 code, or ``""`` for an aggregate or a code not in the table.
    """
    _, alpha2 = _countries()
    key = code.strip().upper()
    # "UK" maps to GBR too, as an alias: the ISO code is the one that comes first, "GB".
    return next((a2 for a2, a3 in alpha2.items() if a3 == key and a2 != "UK"), "")


def normalize_cloud(provider: str, region: str) -> str:
    """``("Azure", "West Europe")`` -> ``"azure:westeurope"``."""
    provider = provider.strip().lower()
    region = region.strip().lower()
    if provider == "azure":
        region = region.replace(" ", "").replace("-", "")
    return f"{provider}:{region}"


def lookup_cloud(spec: str) -> ZoneIntensity:
    """A cloud region written ``provider:region`` (``gcp``, ``aws`` or ``azure``).

    Args:
        spec: e.g. ``"gcp:europe-west1"``, ``"aws:eu-west-3"``, ``"azure:westeurope"``
            (case-insensitive; Azure display names such as ``"azure:West Europe"`` work too).

    Returns:
        The table row for that region.

    Raises:
        ValueError: Unknown provider or region; the message suggests the closest regions.
    """
    provider, _, region = spec.partition(":")
    key = normalize_cloud(provider, region)
    regions = _cloud_regions()
    if key in regions:
        return regions[key]
    provider = key.partition(":")[0]
    if provider not in CLOUD_PROVIDERS:
        raise ValueError(
            f"intensity: unknown cloud provider {provider!r} in {spec!r}; use one of "
            f"{', '.join(CLOUD_PROVIDERS)} (e.g. 'gcp:europe-west1')."
        )
    same = [c for c in regions if c.startswith(provider + ":")]
    hint = ", ".join(_suggest(key, same)) or ", ".join(same[:3])
    raise ValueError(
        f"intensity: unknown {provider} region {spec!r}; closest valid regions: {hint}. "
        "carbon_callbacks.intensity.all_zones() lists every region."
    )


def all_zones() -> list[ZoneIntensity]:
    """Every embedded zone: countries, aggregates and cloud regions, with value and source.

    For ``carbon-callbacks compare-regions`` and for users choosing where to train. Sorted by
    kind (countries, aggregates, then gcp/aws/azure) and code.

    Returns:
        One ``ZoneIntensity`` per zone.
    """
    order = {"country": 0, "aggregate": 1, "gcp": 2, "aws": 3, "azure": 4}
    zones = list(_countries()[0].values()) + list(_cloud_regions().values())
    return sorted(zones, key=lambda z: (order.get(z.kind, 9), z.code))
