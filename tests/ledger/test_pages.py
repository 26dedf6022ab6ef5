"""Reading the ledger a page at a time, sorted and filtered in SQL, and reading it read-only."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from carbon_callbacks.ledger import RUN_ORDERS, Ledger, LedgerError, RunInfo
from tests.helpers.ledger_records import make_record


def _fill(path: Path, n: int = 23) -> Ledger:
    """``n`` runs with different sizes, owners and endings (some still running)."""
    ledger = Ledger.open(path)
    for i in range(n):
        run_id = ledger.start_run(
            {
                "run_id": f"run{i:03d}",
                "project": ("alpha", "beta", "gamma")[i % 3],
                "team": ("ml", "vision")[i % 2],
                "user": f"user{i % 4}",
                "framework": ("lightning", "keras")[i % 2],
                "start_wall": 1_700_000_000.0 + 3600.0 * ((i * 7) % n),
                "variant": "baseline" if i % 5 == 0 else "aware",
                "seed": i % 3,
            }
        )
        for e in range(1 + i % 6):
            ledger.add_epoch(run_id, make_record(e, energy_kwh=0.001 * (1 + (i * 13) % 17)))
        if i % 4 == 0:
            ledger.end_run(run_id, stopped_early=True, stop_reason="budget")
        elif i % 4 != 3:
            ledger.end_run(run_id)
    return ledger


def _key(run: RunInfo, order_by: str) -> object:
    status = 0 if not run.finished else 2 if run.stopped_early else 1
    return {
        "started": run.start_wall,
        "project": run.project,
        "team": run.team,
        "user": run.user,
        "framework": run.framework,
        "status": status,
        "intensity": run.intensity_source,
        "epochs": run.epochs,
        "energy": run.energy_kwh,
        "co2": run.co2_g,
    }[order_by]


@pytest.mark.parametrize("order_by", sorted(RUN_ORDERS))
@pytest.mark.parametrize("descending", [True, False])
def test_pages_follow_the_sort_and_cover_every_run_once(
    tmp_path: Path, order_by: str, descending: bool
) -> None:
    ledger = _fill(tmp_path / "l.sqlite")
    everything = ledger.runs()
    expected = sorted(everything, key=lambda r: (_key(r, order_by), r.run_id), reverse=descending)
    seen: list[RunInfo] = []
    for offset in range(0, len(everything), 5):
        page = ledger.runs_page(
            order_by=order_by, descending=descending, limit=5, offset=offset
        )
        assert page.total == len(everything)
        seen.extend(page.runs)
    assert [r.run_id for r in seen] == [r.run_id for r in expected]
    # Each page's totals are the same sums runs() gives.
    by_id = {r.run_id: r for r in everything}
    for run in seen:
        assert run == by_id[run.run_id]


def test_filters_narrow_the_page_and_the_count(tmp_path: Path) -> None:
    ledger = _fill(tmp_path / "l.sqlite")
    everything = ledger.runs()
    cases = {
        "stopped": [r for r in everything if r.stopped_early],
        "running": [r for r in everything if not r.finished],
        "completed": [r for r in everything if r.finished and not r.stopped_early],
    }
    for status, want in cases.items():
        page = ledger.runs_page(status=status, order_by="started", descending=False, limit=100)
        assert page.total == len(want) > 0
        assert [r.run_id for r in page.runs] == [r.run_id for r in want]
    page = ledger.runs_page(
        framework="keras", project="beta", tags={"variant": "aware"}, limit=100
    )
    want = {
        r.run_id
        for r in everything
        if r.framework == "keras" and r.project == "beta" and r.metadata["variant"] == "aware"
    }
    assert {r.run_id for r in page.runs} == want and page.total == len(want) > 0


def test_a_tag_matches_a_metadata_value_as_text(tmp_path: Path) -> None:
    ledger = _fill(tmp_path / "l.sqlite")
    seeded = ledger.runs(tags={"seed": "1"})
    assert seeded and all(r.metadata["seed"] == 1 for r in seeded)
    assert len(seeded) == sum(1 for r in ledger.runs() if r.metadata["seed"] == 1)
    assert ledger.runs(tags={"variant": "nothing-like-it"}) == []
    with pytest.raises(ValueError, match="tag key"):
        ledger.runs(tags={"variant') OR 1=1 --": "x"})


def test_run_totals_carry_the_sums_of_the_epoch_ranges(tmp_path: Path) -> None:
    ledger = _fill(tmp_path / "l.sqlite", n=4)
    for run in ledger.runs():
        records = ledger.epochs(run.run_id)
        assert math.isclose(run.energy_kwh_low, sum(r.energy_kwh_low for r in records))
        assert math.isclose(run.energy_kwh_high, sum(r.energy_kwh_high for r in records))
        assert math.isclose(run.co2_g_low, sum(r.co2_g_low for r in records))
        assert math.isclose(run.co2_g_high, sum(r.co2_g_high for r in records))
        assert run.energy_kwh_low < run.energy_kwh < run.energy_kwh_high


def test_bad_page_arguments_name_the_argument(tmp_path: Path) -> None:
    ledger = _fill(tmp_path / "l.sqlite", n=2)
    with pytest.raises(ValueError, match="order_by"):
        ledger.runs_page(order_by="start_wall; DROP TABLE runs")
    with pytest.raises(ValueError, match="status"):
        ledger.runs_page(status="done")
    with pytest.raises(ValueError, match="limit"):
        ledger.runs_page(limit=0)
    with pytest.raises(ValueError, match="offset"):
        ledger.runs_page(offset=-1)


def test_a_read_only_ledger_refuses_writes_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "new" / "l.sqlite"
    ledger = Ledger.open(path, read_only=True)
    assert ledger.runs() == []
    assert ledger.runs_page().total == 0
    with pytest.raises(LedgerError, match="read-only"):
        ledger.start_run({"project": "p"})
    assert not path.parent.exists()
    assert not ledger.spool_path.exists()
    _fill(tmp_path / "l.sqlite", n=3).close()
    assert len(Ledger.open(tmp_path / "l.sqlite", read_only=True).runs()) == 3


def test_one_run_is_found_by_id_or_prefix_without_reading_every_run(tmp_path: Path) -> None:
    ledger = _fill(tmp_path / "l.sqlite", n=12)
    assert ledger.run("run007").run_id == "run007"
    assert ledger.run("run011") == next(r for r in ledger.runs() if r.run_id == "run011")
    with pytest.raises(LedgerError, match="ambiguous"):
        ledger.run("run0")
    # LIKE's wildcards in an id are plain characters.
    for wild in ("run_0", "%", "run%"):
        with pytest.raises(LedgerError, match="no run"):
            ledger.run(wild)
    with pytest.raises(LedgerError, match="holds no runs yet"):
        Ledger.open(tmp_path / "empty.sqlite").run("x")


def test_epoch_metrics_of_several_runs_match_their_records(tmp_path: Path) -> None:
    ledger = _fill(tmp_path / "l.sqlite", n=6)
    ids = [r.run_id for r in ledger.runs()]
    found = ledger.epoch_metrics(ids[:4] + ["not-a-run"])
    assert sorted(found) == sorted(ids[:4])
    for run_id, rows in found.items():
        records = ledger.epochs(run_id)
        assert [(m.epoch, m.stage, dict(m.metrics)) for m in rows] == [
            (r.epoch, r.stage, dict(r.metrics)) for r in records
        ]
        assert rows[-1].metric("val_acc") == records[-1].metric("val_acc")
    assert ledger.epoch_metrics([]) == {}
    with pytest.raises(ValueError, match="run_ids"):
        ledger.epoch_metrics(["x"] * 1001)
