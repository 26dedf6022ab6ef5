"""Team reports over the ledger: totals by project/team/user/month/framework, tables, equivalents.

Everything here is plain computation on ``RunInfo``/``EpochRecord`` values, so the CLI, the demo
and users' notebooks share one set of sums. Totals are the sums of the ledger's epoch rows.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from carbon_callbacks.ledger import RunInfo
from carbon_callbacks.policies import metric_direction
from carbon_callbacks.records import EpochRecord

# --------------------------------------------------------------------------- equivalents

CAR_G_CO2_PER_KM = 400.0 / 1.609344
"""Grams CO2 per km driven by an average passenger car (about 248.5 g/km).

US EPA, "Greenhouse Gas Emissions from a Typical Passenger Vehicle" (EPA-420-F-23-014, 2023):
a typical passenger vehicle emits about 400 grams of CO2 per mile (tailpipe CO2 of an average
gasoline car; 8,887 g CO2 per gallon of gasoline burned). 1 mile = 1.609344 km.
https://www.epa.gov/greenvehicles/greenhouse-gas-emissions-typical-passenger-vehicle
"""

PHONE_CHARGE_KWH = 4.0 * 3.85 / 0.8 / 1000.0
"""Electricity drawn from the wall by one full smartphone charge (about 0.019 kWh).

A 4,000 mAh battery at a 3.85 V nominal cell voltage stores 15.4 Wh; charger and battery
charging losses of about 20% (0.8 end-to-end efficiency) bring it to ~19 Wh at the plug. The
same method (energy per charge) is behind the "smartphones charged" line of the US EPA
Greenhouse Gas Equivalencies Calculator ("Calculations and References"):
https://www.epa.gov/energy/greenhouse-gas-equivalencies-calculator-calculations-and-references
Phone charges are an *energy* equivalent, so they do not depend on where the run happened.
"""


@dataclass(frozen=True)
class Equivalents:
    """Everyday equivalents of a run's footprint."""

    car_km: float
    """Kilometres by an average passenger car that emit the same CO2e."""
    phone_charges: float
    """Full smartphone charges that use the same electricity."""

    def __str__(self) -> str:
        return f"≈ {_short(self.car_km)} km by car, ≈ {_short(self.phone_charges)} phone charges"


def equivalents(co2_g: float, energy_kwh: float) -> Equivalents:
    """The car-km and phone-charge equivalents of ``co2_g`` grams and ``energy_kwh`` kWh."""
    return Equivalents(
        car_km=co2_g / CAR_G_CO2_PER_KM,
        phone_charges=energy_kwh / PHONE_CHARGE_KWH,
    )


# --------------------------------------------------------------------------- formatting


def _short(x: float) -> str:
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def format_grams(g: float) -> str:
    """Grams CO2e in a readable unit (mg, g, kg, t)."""
    a = abs(g)
    if a >= 1e6:
        return f"{g / 1e6:.3g} t"
    if a >= 1e3:
        return f"{g / 1e3:.3g} kg"
    if a >= 1 or a == 0:
        return f"{g:.3g} g"
    if a >= 1e-3:
        return f"{g * 1e3:.3g} mg"
    return f"{g * 1e6:.3g} µg"


def format_energy(kwh: float) -> str:
    """Energy in a readable unit (mWh, Wh, kWh, MWh)."""
    a = abs(kwh)
    if a >= 1e3:
        return f"{kwh / 1e3:.3g} MWh"
    if a >= 1 or a == 0:
        return f"{kwh:.3g} kWh"
    if a >= 1e-3:
        return f"{kwh * 1e3:.3g} Wh"
    return f"{kwh * 1e6:.3g} mWh"


def format_time(wall: float | None) -> str:
    """A wall time as ``YYYY-MM-DD HH:MM`` UTC ("-" when unknown)."""
    if not wall:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(wall))


def text_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain-text table with right-aligned numbers and a rule under the header."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    # A column is numeric when every filled cell is a number ("-" is an empty cell).
    numeric = [
        any(row[i] != "-" for row in cells[1:])
        and all(row[i] == "-" or _is_number(row[i]) for row in cells[1:])
        for i in range(len(headers))
    ]

    def line(row: Sequence[str]) -> str:
        parts = [
            row[i].rjust(widths[i]) if numeric[i] else row[i].ljust(widths[i])
            for i in range(len(row))
        ]
        return "  ".join(parts).rstrip()

    out = [line(cells[0]), "  ".join("-" * w for w in widths).rstrip()]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:,.0f}"
    return str(v)


def _is_number(s: str) -> bool:
    try:
        float(s.replace(",", ""))
    except ValueError:
        return False
    return True


def as_csv(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """The rows as CSV text with a header line."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(headers)
    writer.writerows(rows)
    return buf.getvalue()


def as_json(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """The rows as a JSON list of objects keyed by the headers."""
    return json.dumps([dict(zip(headers, row, strict=True)) for row in rows], indent=2)


def render(headers: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "table") -> str:
    """Rows as ``table``, ``csv`` or ``json`` text.

    Raises:
        ValueError: for another format.
    """
    if fmt == "table":
        return text_table(headers, rows)
    if fmt == "csv":
        return as_csv(headers, rows)
    if fmt == "json":
        return as_json(headers, rows)
    raise ValueError(f"format must be 'table', 'csv' or 'json', got {fmt!r}")


# --------------------------------------------------------------------------- totals

GROUP_KEYS = ("project", "team", "user", "month", "framework", "host", "source")
"""What ``summarize`` can group by (``month`` is the run's start month, UTC)."""


def group_value(run: RunInfo, key: str) -> str:
    """The value of one grouping key for a run ("(none)" when the run does not say)."""
    if key not in GROUP_KEYS:
        raise ValueError(f"cannot group by {key!r}; choose from {', '.join(GROUP_KEYS)}")
    if key == "month":
        value = time.strftime("%Y-%m", time.gmtime(run.start_wall)) if run.start_wall else ""
    else:
        value = getattr(run, key)
    return value or "(none)"


@dataclass(frozen=True)
class ReportRow:
    """Totals of one group of runs."""

    group: tuple[str, ...]
    runs: int
    epochs: int
    energy_kwh: float
    co2_g: float
    hours: float

    @property
    def equivalents(self) -> Equivalents:
        """Car-km and phone-charge equivalents of the totals."""
        return equivalents(self.co2_g, self.energy_kwh)


def summarize(runs: Iterable[RunInfo], by: Sequence[str] = ("project",)) -> list[ReportRow]:
    """Totals per group, largest CO2e first.

    Args:
        runs: the runs (``Ledger.runs()``); their totals are sums over their epoch rows.
        by: grouping keys from ``GROUP_KEYS``; empty for one grand total.

    Returns:
        One row per group.

    Raises:
        ValueError: for an unknown grouping key.
    """
    for key in by:
        if key not in GROUP_KEYS:
            raise ValueError(f"cannot group by {key!r}; choose from {', '.join(GROUP_KEYS)}")
    groups: dict[tuple[str, ...], list[RunInfo]] = {}
    for run in runs:
        groups.setdefault(tuple(group_value(run, k) for k in by), []).append(run)
    rows = [
        ReportRow(
            group=g,
            runs=len(rs),
            epochs=sum(r.epochs for r in rs),
            energy_kwh=math.fsum(r.energy_kwh for r in rs),
            co2_g=math.fsum(r.co2_g for r in rs),
            hours=math.fsum(r.seconds for r in rs) / 3600.0,
        )
        for g, rs in groups.items()
    ]
    return sorted(rows, key=lambda r: (-r.co2_g, r.group))


def report_rows(
    rows: Sequence[ReportRow], by: Sequence[str], *, total: bool = True
) -> tuple[list[str], list[list[Any]]]:
    """Headers and cells for a report (numbers in base units, so CSV/JSON stay exact)."""
    headers = [*by, "runs", "epochs", "hours", "energy_kwh", "co2_g", "car_km", "phone_charges"]
    cells = []
    for r in rows:
        eq = r.equivalents
        cells.append(
            [
                *r.group,
                r.runs,
                r.epochs,
                r.hours,
                r.energy_kwh,
                r.co2_g,
                eq.car_km,
                eq.phone_charges,
            ]
        )
    if total and len(rows) > 1:
        t = ReportRow(
            group=("TOTAL",) + ("",) * (len(by) - 1) if by else (),
            runs=sum(r.runs for r in rows),
            epochs=sum(r.epochs for r in rows),
            energy_kwh=math.fsum(r.energy_kwh for r in rows),
            co2_g=math.fsum(r.co2_g for r in rows),
            hours=math.fsum(r.hours for r in rows),
        )
        eq = t.equivalents
        cells.append(
            [
                *t.group,
                t.runs,
                t.epochs,
                t.hours,
                t.energy_kwh,
                t.co2_g,
                eq.car_km,
                eq.phone_charges,
            ]
        )
    return headers, cells


def runs_rows(runs: Sequence[RunInfo]) -> tuple[list[str], list[list[Any]]]:
    """Headers and cells for the list of runs."""
    headers = [
        "run_id",
        "started (UTC)",
        "project",
        "team",
        "user",
        "framework",
        "epochs",
        "energy",
        "co2e",
        "status",
    ]
    cells = []
    for r in runs:
        if not r.finished:
            status = "running/killed"
        elif r.stopped_early:
            status = "stopped early"
        else:
            status = "finished"
        cells.append(
            [
                r.run_id,
                format_time(r.start_wall),
                r.project or "-",
                r.team or "-",
                r.user or "-",
                r.framework or "-",
                r.epochs,
                format_energy(r.energy_kwh),
                format_grams(r.co2_g),
                status,
            ]
        )
    return headers, cells


# --------------------------------------------------------------------------- per epoch


def metric_mode(name: str) -> str:
    """``"max"`` for metrics that grow when better, else ``"min"``.

    Kept for callers of the old name: the rule is ``policies.metric_direction`` (whole words
    of the name, so ``val_mape`` is an error to lower and ``val_map`` a score to raise), with
    ``"min"`` for names that do not say.
    """
    return metric_direction(name) or "min"


def pick_monitor(records: Sequence[EpochRecord], preferred: str | None = None) -> str | None:
    """The metric to show: ``preferred`` if logged, else a validation metric, else any."""
    names: list[str] = []
    for rec in records:
        names.extend(k for k in rec.metrics if k not in names)
    if preferred and preferred in names:
        return preferred
    for want in ("val_acc", "val_accuracy", "val_loss", "eval_loss"):
        if want in names:
            return want
    for name in names:
        if name.startswith(("val", "eval")):
            return name
    return names[0] if names else None


def train_records(records: Sequence[EpochRecord]) -> list[EpochRecord]:
    """The training-epoch records (not evaluation or imported totals), or all if none."""
    train = [r for r in records if r.stage == "train"]
    return train or list(records)


def gains_per_kg(
    records: Sequence[EpochRecord], monitor: str, mode: str | None = None
) -> list[float | None]:
    """Metric improvement per kg CO2e of each epoch over the one before (None for the first).

    Positive means better whatever the metric's direction (a loss going down is a gain).

    Args:
        records: The run's training records, oldest first.
        monitor: The metric to measure the gain of.
        mode: ``"max"``/``"min"``; default read from the metric's name (``metric_direction``).

    Raises:
        ValueError: When ``mode`` is not "min", "max" or None.
    """
    if mode not in (None, "min", "max"):
        raise ValueError(
            f"mode must be 'min', 'max' or None (read from the metric's name), got {mode!r}"
        )
    sign = 1.0 if (mode or metric_mode(monitor)) == "max" else -1.0
    out: list[float | None] = []
    prev: float | None = None
    for rec in records:
        value = rec.metric(monitor)
        if prev is None or value is None or rec.co2_g <= 0:
            out.append(None)
        else:
            out.append(sign * (value - prev) / (rec.co2_g / 1000.0))
        if value is not None:
            prev = value
    return out


def epochs_rows(
    records: Sequence[EpochRecord], monitor: str | None = None
) -> tuple[list[str], list[list[Any]]]:
    """Headers and cells for a run's per-epoch table (``carbon-callbacks show``)."""
    monitor = pick_monitor(records, monitor)
    gains: list[float | None] = [None] * len(records)
    if monitor:
        train = train_records(records)
        by_id = dict(zip(map(id, train), gains_per_kg(train, monitor), strict=True))
        gains = [by_id.get(id(r)) for r in records]
    headers = ["epoch", "stage", "seconds", "Wh", "g CO2e", "W", "g/kWh"]
    if monitor:
        headers += [monitor, "gain/kg"]
    headers += ["CO2e total", "methods"]
    cells = []
    for rec, gain in zip(records, gains, strict=True):
        row: list[Any] = [
            rec.epoch,
            rec.stage,
            round(rec.seconds, 3),
            rec.energy_kwh * 1000.0,
            rec.co2_g,
            rec.power_w,
            rec.intensity_g_per_kwh,
        ]
        if monitor:
            row += [rec.metric(monitor), gain]
        methods = ",".join(f"{k}:{v}" for k, v in sorted(rec.methods.items())) or "-"
        row += [format_grams(rec.co2_g_total), methods]
        cells.append(row)
    return headers, cells


def run_summary_text(run: RunInfo) -> str:
    """A few lines about one run: who, where, totals, equivalents and how it ended."""
    lines = [
        f"run {run.run_id}  project={run.project or '-'}  team={run.team or '-'}  "
        f"user={run.user or '-'}  framework={run.framework or '-'}",
        f"started {format_time(run.start_wall)} UTC on {run.host or '-'}"
        + (f", git {run.git_commit[:10]}" if run.git_commit else ""),
        f"location {run.location or '-'}; intensity: {run.intensity_source or '-'}",
        f"total {format_energy(run.energy_kwh)}, {format_grams(run.co2_g)} CO2e over "
        f"{run.epochs} records ({equivalents(run.co2_g, run.energy_kwh)})",
    ]
    if run.hyperparameters:
        lines.append(
            "hyperparameters: "
            + ", ".join(f"{k}={v}" for k, v in sorted(run.hyperparameters.items()))
        )
    if not run.finished:
        lines.append("not ended: still running, or killed (its finished epochs are kept)")
    elif run.stopped_early:
        lines.append(f"stopped early: {run.stop_reason or 'no reason recorded'}")
    else:
        lines.append("ran to its end" + (f": {run.stop_reason}" if run.stop_reason else ""))
    return "\n".join(lines)


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


def describe_totals(rows: Mapping[str, float]) -> str:
    """``"12.3 Wh, 4.56 g CO2e (≈ ...)"`` for a mapping with ``energy_kwh`` and ``co2_g``."""
    kwh, g = rows["energy_kwh"], rows["co2_g"]
    return f"{format_energy(kwh)}, {format_grams(g)} CO2e ({equivalents(g, kwh)})"
