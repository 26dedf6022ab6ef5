"""Bringing history in and out: CodeCarbon emissions.csv import, JSONL/CSV export round trip."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from pathlib import Path

import pytest

from carbon_callbacks.ledger import (
    Ledger,
    LedgerError,
    export_csv,
    export_jsonl,
    import_files,
    read_codecarbon_csv,
)
from tests.helpers.ledger_records import make_record

# The columns CodeCarbon 2.x/3.x writes, in EmissionsData's field order
# (codecarbon/output_methods/emissions_data.py).
CODECARBON_HEADER = [
    "timestamp", "project_name", "run_id", "experiment_id", "duration", "emissions",
    "emissions_rate", "cpu_power", "gpu_power", "ram_power", "cpu_energy", "gpu_energy",
    "ram_energy", "energy_consumed", "water_consumed", "country_name", "country_iso_code",
    "region", "cloud_provider", "cloud_region", "os", "python_version", "codecarbon_version",
    "cpu_count", "cpu_model", "gpu_count", "gpu_model", "longitude", "latitude",
    "ram_total_size", "tracking_mode", "on_cloud", "pue", "wue",
]  # fmt: skip


def _cc_row(**over: object) -> dict[str, object]:
    row: dict[str, object] = {
        "timestamp": "2025-03-04T10:20:30",
        "project_name": "bert-finetune",
        "run_id": "5b0fa12a-3dd7-45bb-9766-cc326314d9f1",
        "experiment_id": "",
        "duration": 3600.0,
        "emissions": 0.0425,  # kg
        "emissions_rate": 0.0425 / 3600,
        "cpu_power": 42.5,
        "gpu_power": 250.0,
        "ram_power": 10.0,
        "cpu_energy": 0.0425,
        "gpu_energy": 0.25,
        "ram_energy": 0.01,
        "energy_consumed": 0.3025,
        "water_consumed": 0.0,
        "country_name": "France",
        "country_iso_code": "FRA",
        "region": "ile-de-france",
        "cloud_provider": "",
        "cloud_region": "",
        "os": "Linux-6.1",
        "python_version": "3.11.9",
        "codecarbon_version": "2.8.3",
        "cpu_count": 16,
        "cpu_model": "AMD EPYC 7R13",
        "gpu_count": 1,
        "gpu_model": "1 x NVIDIA A10G",
        "longitude": 2.35,
        "latitude": 48.85,
        "ram_total_size": 64.0,
        "tracking_mode": "machine",
        "on_cloud": "N",
        "pue": 1.0,
        "wue": 0.0,
    }
    row.update(over)
    return row


def _write_csv(path: Path, rows: list[dict[str, object]], header=CODECARBON_HEADER) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=header, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


def test_codecarbon_csv_rows_become_runs_with_their_totals(tmp_path: Path) -> None:
    path = _write_csv(
        tmp_path / "emissions.csv",
        [
            _cc_row(),
            _cc_row(
                run_id="aa-cloud",
                project_name="resnet",
                on_cloud="Y",
                cloud_provider="gcp",
                cloud_region="europe-west1",
                emissions=0.001,
                energy_consumed=0.01,
                cpu_energy=0.008,
                gpu_energy=0.0,
                ram_energy=0.002,
                duration=60.0,
            ),
        ],
    )
    ledger = Ledger.open(tmp_path / "l.sqlite")
    assert import_files(ledger, [path]) == {str(path): 2}

    runs = {r.project: r for r in ledger.runs()}
    bert = runs["bert-finetune"]
    assert bert.run_id == "cc-5b0fa12a-3dd7-45bb-9766-cc326314d9f1"
    assert bert.energy_kwh == pytest.approx(0.3025)
    assert bert.co2_g == pytest.approx(42.5)  # kg in the CSV, grams in the ledger
    assert bert.location == "FRA"
    assert bert.source == "codecarbon:emissions.csv"
    assert bert.hardware["gpu_model"] == "1 x NVIDIA A10G"
    end = datetime(2025, 3, 4, 10, 20, 30).timestamp()
    assert bert.end_wall == pytest.approx(end)
    assert bert.start_wall == pytest.approx(end - 3600)
    [rec] = ledger.epochs(bert.run_id)
    assert rec.stage == "codecarbon"
    assert (rec.cpu_energy_kwh, rec.gpu_energy_kwh, rec.ram_energy_kwh) == (0.0425, 0.25, 0.01)
    assert rec.intensity_g_per_kwh == pytest.approx(42.5 / 0.3025)
    assert rec.power_w == pytest.approx(302.5)
    assert runs["resnet"].location == "gcp:europe-west1"


def test_reimporting_the_same_file_adds_nothing(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "emissions.csv", [_cc_row()])
    ledger = Ledger.open(tmp_path / "l.sqlite")
    import_files(ledger, [path])
    assert import_files(ledger, [path]) == {str(path): 0}
    assert len(ledger.runs()) == 1
    assert len(ledger.epochs(ledger.runs()[0].run_id)) == 1


def test_repeated_run_id_rows_count_once_by_the_latest_cumulative_row(tmp_path: Path) -> None:
    # CodeCarbon appends a cumulative row at each flush of a long run.
    rows = [
        _cc_row(duration=600.0, emissions=0.01, energy_consumed=0.05),
        _cc_row(duration=1200.0, emissions=0.02, energy_consumed=0.10),
    ]
    ledger = Ledger.open(tmp_path / "l.sqlite")
    import_files(ledger, [_write_csv(tmp_path / "e.csv", rows)])
    [run] = ledger.runs()
    assert run.energy_kwh == pytest.approx(0.10) and run.co2_g == pytest.approx(20.0)


def test_old_codecarbon_files_without_newer_columns_import(tmp_path: Path) -> None:
    old_header = [
        "timestamp", "project_name", "run_id", "duration", "emissions", "emissions_rate",
        "cpu_power", "gpu_power", "ram_power", "cpu_energy", "gpu_energy", "ram_energy",
        "energy_consumed", "country_name", "country_iso_code", "region", "cloud_provider",
        "cloud_region", "os", "python_version", "cpu_count", "cpu_model", "gpu_count",
        "gpu_model", "longitude", "latitude", "ram_total_size", "tracking_mode", "on_cloud",
    ]  # fmt: skip
    path = _write_csv(tmp_path / "old.csv", [_cc_row()], header=old_header)
    [(meta, [rec])] = read_codecarbon_csv(path)
    assert rec.energy_kwh == pytest.approx(0.3025) and rec.pue == 1.0
    assert meta["intensity_source"] == "codecarbon"


def test_not_a_codecarbon_file_is_refused_with_the_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(LedgerError, match="does not look like a CodeCarbon.*energy_consumed"):
        read_codecarbon_csv(path)


def test_bad_number_names_file_line_and_column(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "e.csv", [_cc_row(), _cc_row(run_id="x", emissions="lots")])
    with pytest.raises(LedgerError, match=r"e\.csv:3: column 'emissions' is not a number"):
        read_codecarbon_csv(path)


def test_jsonl_export_imports_into_another_ledger_unchanged(tmp_path: Path) -> None:
    src = Ledger.open(tmp_path / "a.sqlite")
    run_id = src.start_run({"project": "p", "team": "t", "hyperparameters": {"lr": 0.1}})
    records = [make_record(i) for i in range(3)]
    for r in records:
        src.add_epoch(run_id, r)
    src.end_run(run_id, stopped_early=True, stop_reason="why")
    open_id = src.start_run({"project": "still-running"})
    src.add_epoch(open_id, make_record(0))

    out = tmp_path / "export.jsonl"
    with open(out, "w") as fh:
        assert export_jsonl(src, fh) == 2
    dst = Ledger.open(tmp_path / "b.sqlite")
    assert import_files(dst, [out]) == {str(out): 2}
    assert dst.epochs(run_id) == records
    a, b = src.run(run_id), dst.run(run_id)
    assert (b.project, b.team, b.user, b.host, b.hyperparameters) == (
        a.project,
        a.team,
        a.user,
        a.host,
        a.hyperparameters,
    )
    assert b.stopped_early and b.stop_reason == "why" and b.end_wall == a.end_wall
    assert not dst.run(open_id).finished


def test_csv_export_has_one_row_per_epoch_with_metric_columns(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "a.sqlite")
    run_id = ledger.start_run({"project": "p"})
    for i in range(4):
        ledger.add_epoch(run_id, make_record(i))
    buf = io.StringIO()
    assert export_csv(ledger, buf) == 4
    rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    assert rows[2]["metric:val_acc"] == str(make_record(2).metrics["val_acc"])
    assert {r["project"] for r in rows} == {"p"}


def _export(ledger: Ledger, path: Path) -> Path:
    with open(path, "w") as fh:
        export_jsonl(ledger, fh)
    return path


def test_reimporting_a_run_that_grew_adds_its_new_epochs_and_its_end(tmp_path: Path) -> None:
    src = Ledger.open(tmp_path / "a.sqlite")
    dst = Ledger.open(tmp_path / "b.sqlite")
    run_id = src.start_run({"project": "p"})
    src.add_epoch(run_id, make_record(0))
    assert import_files(dst, [_export(src, tmp_path / "1.jsonl")]) == {str(tmp_path / "1.jsonl"): 1}
    src.add_epoch(run_id, make_record(1))
    src.end_run(run_id, stopped_early=True, stop_reason="budget")
    later = _export(src, tmp_path / "2.jsonl")
    assert import_files(dst, [later]) == {str(later): 0}  # no new run, but the run grew
    assert dst.epochs(run_id) == src.epochs(run_id) == [make_record(0), make_record(1)]
    assert dst.run(run_id).finished and dst.run(run_id).stop_reason == "budget"
    import_files(dst, [later])  # once more: nothing doubled
    assert dst.run(run_id).epochs == 2


def test_reimporting_an_older_export_without_uids_adds_only_new_epochs(tmp_path: Path) -> None:
    src = Ledger.open(tmp_path / "a.sqlite")
    dst = Ledger.open(tmp_path / "b.sqlite")
    run_id = src.start_run({"project": "p"})
    for i in range(3):
        src.add_epoch(run_id, make_record(i))

    def without_uids(path: Path) -> Path:
        lines = [json.loads(x) for x in path.read_text().splitlines()]
        for line in lines:
            line.pop("uid", None)  # exports written before epoch uids were exported
        path.write_text("".join(json.dumps(x) + "\n" for x in lines))
        return path

    first = without_uids(_export(src, tmp_path / "1.jsonl"))
    import_files(dst, [first])
    src.add_epoch(run_id, make_record(3))
    import_files(dst, [without_uids(_export(src, tmp_path / "2.jsonl"))])
    assert [e.epoch for e in dst.epochs(run_id)] == [0, 1, 2, 3]


def test_a_codecarbon_row_cut_short_is_refused_naming_its_line(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "emissions.csv", [_cc_row(), _cc_row(run_id="second")])
    text = path.read_text()
    # A kill or a full disk while CodeCarbon appended its row: the file ends mid-row.
    path.write_text(text[: text.rindex("\n", 0, len(text) - 1) + 60])
    ledger = Ledger.open(tmp_path / "l.sqlite")
    with pytest.raises(LedgerError, match=r"emissions\.csv:3: the row has 7 of the header's 34"):
        import_files(ledger, [path])
    assert ledger.runs() == []  # nothing from that file is written


def test_a_codecarbon_row_with_an_empty_energy_is_refused_naming_its_line(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "emissions.csv", [_cc_row(), _cc_row(energy_consumed="")])
    with pytest.raises(LedgerError, match=r"emissions\.csv:3: column 'energy_consumed' is empty"):
        read_codecarbon_csv(path)


def test_codecarbon_intensity_is_the_exact_quotient_of_the_file_figures(tmp_path: Path) -> None:
    # As floats, 0.000168 kg x 1000 / 0.003 kWh is 55.99999999999999 g/kWh.
    assert 0.000168 * 1000.0 / 0.003 != 56.0
    row = _cc_row(emissions="0.000168", energy_consumed="0.003")
    [(_, [rec])] = read_codecarbon_csv(_write_csv(tmp_path / "emissions.csv", [row]))
    assert rec.intensity_g_per_kwh == 56.0
    assert rec.co2_g == 0.168 and rec.energy_kwh == 0.003
