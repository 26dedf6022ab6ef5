"""How reports look: tables, CSV and JSON, readable energies and masses, and everyday equivalents.

Every figure the CLI and the demo print goes through here, so a unit or a column is changed in
one place.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import textwrap
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

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
    g += 0.0  # a negative zero reads "0 g", not "-0 g"
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
    kwh += 0.0  # a negative zero reads "0 kWh", not "-0 kWh"
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
    return "".join(_table_lines(headers, rows, sample=None)).rstrip("\n")


def _table_lines(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], sample: int | None
) -> Iterator[str]:
    """The table's lines; widths and alignment come from the first ``sample`` rows (all: None)."""
    it = iter(rows)
    head = [[_cell(v) for v in row] for row in itertools.islice(it, sample)]
    cells = [[str(h) for h in headers], *head]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    # A column is numeric when every filled cell is a number ("-" is an empty cell).
    numeric = [
        any(row[i] != "-" for row in head)
        and all(row[i] == "-" or _is_number(row[i]) for row in head)
        for i in range(len(headers))
    ]
    if sample is not None and len(head) == sample:
        # More rows follow, unseen: numbers get the widest a cell prints below 1e5.
        widths = [
            max(w, _NUMBER_WIDTH) if num else w for w, num in zip(widths, numeric, strict=True)
        ]

    def line(row: Sequence[str]) -> str:
        parts = [
            row[i].rjust(widths[i]) if numeric[i] else row[i].ljust(widths[i])
            for i in range(len(row))
        ]
        return "  ".join(parts).rstrip() + "\n"

    yield line(cells[0])
    yield "  ".join("-" * w for w in widths).rstrip() + "\n"
    for row in head:
        yield line(row)
    for values in it:
        yield line([_cell(v) for v in values])


_NUMBER_WIDTH = len("-1.234e-05")
"""The widest number ``_cell`` writes for a value below 1e5 in magnitude."""


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        v += 0.0  # a negative zero reads "0", not "-0"
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:,.0f}"
    return str(v)


def _is_number(s: str) -> bool:
    try:
        float(s.replace(",", ""))
    except ValueError:
        return False
    return True


def _written(v: Any) -> Any:
    """A cell as CSV/JSON write it: floats to 12 significant digits, no negative zero.

    Twelve digits keep every figure far beyond what was measured while dropping float noise
    (200.00000000000003 g/kWh from 200 x kWh / kWh).
    """
    if isinstance(v, float) and math.isfinite(v):
        return float(f"{v:.12g}") + 0.0
    return v


def as_csv(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """The rows as CSV text with a header line."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(headers)
    writer.writerows([_written(v) for v in row] for row in rows)
    return buf.getvalue()


def as_json(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """The rows as a JSON list of objects keyed by the headers."""
    return json.dumps(
        [{h: _written(v) for h, v in zip(headers, row, strict=True)} for row in rows], indent=2
    )


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


def stream_render(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], fmt: str = "table", *, sample: int = 1000
) -> Iterator[str]:
    """``render``, a line at a time, for tables too long to hold in memory.

    The text is ``render``'s (each piece ends in a newline), except that a table of more than
    ``sample`` rows takes its column widths and alignment from its first ``sample`` rows, its
    number columns at least as wide as any number below 1e5 prints: a wider cell further down
    widens its own line only.

    Raises:
        ValueError: for another format.
    """
    if fmt == "table":
        yield from _table_lines(headers, rows, sample)
    elif fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(headers)
        for row in rows:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
            writer.writerow([_written(v) for v in row])
        yield buf.getvalue()
    elif fmt == "json":
        # The same text as json.dumps(list, indent=2), one object at a time.
        opening = "[\n"
        for row in rows:
            item = json.dumps({h: _written(v) for h, v in zip(headers, row, strict=True)}, indent=2)
            yield opening + textwrap.indent(item, "  ")
            opening = ",\n"
        yield "[]\n" if opening == "[\n" else "\n]\n"
    else:
        raise ValueError(f"format must be 'table', 'csv' or 'json', got {fmt!r}")
