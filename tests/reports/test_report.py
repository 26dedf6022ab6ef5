"""Team reports: totals equal the epoch rows, grouping, equivalents, per-epoch gains, regions."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from pathlib import Path

import pytest

from carbon_callbacks.cli import main
from carbon_callbacks.ledger import Ledger
from carbon_callbacks.reports import (
    CAR_G_CO2_PER_KM,
    PHONE_CHARGE_KWH,
    compare_regions,
    epochs_rows,
    equivalents,
    gains_per_kg,
    render,
    report_rows,
    summarize,
)
from tests.helpers.ledger_records import make_record

JAN = 1_735_689_600.0  # 2025-01-01 00:00 UTC
FEB = 1_738_368_000.0  # 2025-02-01 00:00 UTC


def _fill(ledger: Ledger, seed: int = 0) -> None:
    rng = random.Random(seed)
    for i in range(9):
        run_id = ledger.start_run(
            {
                "project": ["vision", "nlp", "speech"][i % 3],
                "team": ["a", "b"][i % 2],
                "user": ["ann", "bob", "cy"][i % 3],
                "framework": ["lightning", "keras"][i % 2],
                "start_wall": JAN + i * 86400 * 5,  # spans January and February
            }
        )
        for e in range(rng.randint(1, 6)):
            ledger.add_epoch(
                run_id,
                make_record(
                    e,
                    energy_kwh=rng.uniform(1e-4, 5e-2),
                    intensity=rng.uniform(20, 800),
                    start=JAN + i * 86400 * 5,
                ),
            )
        ledger.end_run(run_id)


def _epoch_sums(ledger: Ledger, runs) -> tuple[float, float, int]:
    recs = [rec for r in runs for rec in ledger.epochs(r.run_id)]
    return (
        math.fsum(r.energy_kwh for r in recs),
        math.fsum(r.co2_g for r in recs),
        len(recs),
    )


@pytest.mark.parametrize("by", [(), ("project",), ("team", "user"), ("month",), ("framework",)])
def test_report_totals_equal_the_sum_of_the_epoch_rows(tmp_path: Path, by) -> None:
    ledger = Ledger.open(tmp_path / "l.sqlite")
    _fill(ledger)
    runs = ledger.runs()
    rows = summarize(runs, by)
    kwh, g, n = _epoch_sums(ledger, runs)
    assert math.fsum(r.energy_kwh for r in rows) == pytest.approx(kwh, rel=1e-12)
    assert math.fsum(r.co2_g for r in rows) == pytest.approx(g, rel=1e-12)
    assert sum(r.epochs for r in rows) == n
    for row in rows:  # and each group equals its own runs' epoch rows
        key = dict(zip(by, row.group, strict=True))
        members = [r for r in runs if all(_value(r, k) == v for k, v in key.items())]
        gk, gg, gn = _epoch_sums(ledger, members)
        assert (row.energy_kwh, row.co2_g, row.epochs) == (
            pytest.approx(gk, rel=1e-12),
            pytest.approx(gg, rel=1e-12),
            gn,
        )


def _value(run, key: str) -> str:
    if key == "month":
        return "2025-01" if run.start_wall < FEB else "2025-02"
    return getattr(run, key) or "(none)"


def test_report_by_month_splits_at_the_month_boundary(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "l.sqlite")
    _fill(ledger)
    months = {r.group[0]: r.runs for r in summarize(ledger.runs(), ["month"])}
    assert months == {"2025-01": 7, "2025-02": 2}


def test_cli_report_json_totals_match_epoch_rows(tmp_path: Path, capsys) -> None:
    path = tmp_path / "l.sqlite"
    ledger = Ledger.open(path)
    _fill(ledger, seed=3)
    assert main(["report", "--ledger", str(path), "--by", "team", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    kwh, g, _ = _epoch_sums(ledger, ledger.runs())
    assert {r["team"] for r in rows} == {"a", "b"}
    assert math.fsum(r["energy_kwh"] for r in rows) == pytest.approx(kwh, rel=1e-12)
    assert math.fsum(r["co2_g"] for r in rows) == pytest.approx(g, rel=1e-12)


def test_report_table_has_a_total_line_and_equivalents(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "l.sqlite")
    _fill(ledger)
    rows = summarize(ledger.runs(), ["project"])
    headers, cells = report_rows(rows, ["project"])
    assert cells[-1][0] == "TOTAL"
    total_g = cells[-1][headers.index("co2_g")]
    assert cells[-1][headers.index("car_km")] == pytest.approx(total_g / CAR_G_CO2_PER_KM)
    text = render(headers, cells, "table")
    assert "TOTAL" in text and "vision" in text


def test_equivalent_factors() -> None:
    # 400 g CO2 per mile (EPA) is 248.5 g per km; a phone charge is about 19 Wh at the plug.
    assert CAR_G_CO2_PER_KM == pytest.approx(248.55, abs=0.01)
    assert PHONE_CHARGE_KWH == pytest.approx(0.01925)
    eq = equivalents(co2_g=248.55, energy_kwh=0.1925)
    assert eq.car_km == pytest.approx(1.0, abs=1e-3)
    assert eq.phone_charges == pytest.approx(10.0)
    assert "km by car" in str(eq) and "phone charges" in str(eq)


def test_grouping_by_an_unknown_key_names_the_choices() -> None:
    with pytest.raises(ValueError, match="choose from project, team"):
        summarize([], ["colour"])


def test_gain_per_kg_is_positive_for_a_falling_loss() -> None:
    recs = [
        dataclasses.replace(make_record(i), metrics={"val_loss": m})
        for i, m in enumerate([1.0, 0.8, 0.7])
    ]
    gains = gains_per_kg(recs, "val_loss")
    kg = recs[1].co2_g / 1000
    assert gains[0] is None
    assert gains[1] == pytest.approx(0.2 / kg) and gains[2] == pytest.approx(0.1 / kg)


@pytest.mark.parametrize(
    ("name", "values", "sign"),
    [
        ("val_mape", [0.3, 0.2, 0.15], 1.0),  # an error: falling is a gain ("map" is inside)
        ("val_map", [0.3, 0.2, 0.15], -1.0),  # a mean average precision: falling is a loss
        ("val_loss", [1.0, 0.8, 0.7], 1.0),
        ("val_acc", [0.5, 0.6, 0.65], 1.0),
        ("eval_f1", [0.5, 0.6, 0.65], 1.0),
    ],
)
def test_gain_per_kg_follows_the_metric_direction(name, values, sign) -> None:
    recs = [dataclasses.replace(make_record(i), metrics={name: m}) for i, m in enumerate(values)]
    kg = recs[1].co2_g / 1000
    expected = [None] + [sign * abs(b - a) / kg for a, b in zip(values, values[1:], strict=False)]
    assert gains_per_kg(recs, name) == pytest.approx(expected)
    headers, cells = epochs_rows(recs, name)  # the gain/kg column of ``show``
    column = [row[headers.index("gain/kg")] for row in cells]
    assert column == pytest.approx(expected)


def test_gain_per_kg_refuses_a_bad_mode_naming_it() -> None:
    with pytest.raises(ValueError, match="mode must be 'min', 'max' or None"):
        gains_per_kg([make_record(0)], "val_acc", mode="up")


def test_epoch_table_shows_the_monitored_metric_and_gain() -> None:
    recs = [make_record(i, metric=0.5 + 0.1 * i) for i in range(3)]
    headers, cells = epochs_rows(recs)
    assert "val_acc" in headers and "gain/kg" in headers
    gain = cells[2][headers.index("gain/kg")]
    assert gain == pytest.approx(0.1 / (recs[2].co2_g / 1000))


def test_compare_regions_orders_lowest_first_and_scales_with_energy() -> None:
    class Z:
        def __init__(self, code, g):
            self.code, self.kind, self.name, self.source = code, "country", code, "test"
            self.g_per_kwh, self.low, self.high = g, g * 0.8, g * 1.2

    recs = [make_record(i, energy_kwh=0.5) for i in range(2)]  # 1 kWh in all
    out = compare_regions(recs, [Z("HIGH", 800.0), Z("LOW", 20.0), Z("MID", 300.0)])
    assert [f.code for f in out] == ["LOW", "MID", "HIGH"]
    assert [f.co2_g for f in out] == pytest.approx([20.0, 300.0, 800.0])
    assert out[0].co2_g_low == pytest.approx(16.0)


def test_compare_regions_uses_the_embedded_tables_by_default() -> None:
    out = compare_regions([make_record(0, energy_kwh=1.0)])
    kinds = {f.kind for f in out}
    assert "country" in kinds and kinds & {"gcp", "aws", "azure"}
    assert [f.co2_g for f in out] == sorted(f.co2_g for f in out)
