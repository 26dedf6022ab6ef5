"""Lightning DDP on 2 CPU processes (gloo): energies are summed over ranks, the stop is agreed."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lightning.pytorch")
torch = pytest.importorskip("torch")

from carbon_callbacks.ledger import Ledger  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[1] / "helpers" / "ddp_lightning_fit.py"


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    if not torch.distributed.is_available():
        pytest.skip("this torch build has no torch.distributed")
    out = tmp_path_factory.mktemp("ddp")
    env = dict(os.environ, CARBON_CALLBACKS_LEDGER=str(out / "ledger.sqlite"))
    for name in ("MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "RANK", "WORLD_SIZE"):
        env.pop(name, None)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    with open(Path(ranks[0]["log_dir"]) / "metrics.csv") as f:
        rows = [row for row in csv.DictReader(f) if row.get("energy_kwh")]
    return out, ranks, rows


def test_logged_total_is_the_sum_of_each_ranks_own_measurement(ddp_run):
    _, ranks, rows = ddp_run
    own = [r["local_energy_kwh_total"] for r in ranks]
    assert all(e > 0 for e in own)
    assert float(rows[-1]["energy_kwh_total"]) == pytest.approx(sum(own), rel=1e-3)
    # Summed, not averaged: the logged total is well above either rank's share.
    assert float(rows[-1]["energy_kwh_total"]) > max(own) * 1.01


def test_no_rank_counts_another_ranks_process(ddp_run):
    # Lightning starts rank 1 as a child of rank 0: rank 0's process tree must leave it out,
    # or rank 1's CPU energy would be in the sum twice.
    _, ranks, _ = ddp_run
    by_rank = {r["rank"]: r for r in ranks}
    assert by_rank[1]["ppid"] == by_rank[0]["pid"]  # the launch this test is about
    assert by_rank[0]["pid"] in by_rank[0]["tree_pids"]
    assert by_rank[1]["pid"] not in by_rank[0]["tree_pids"]
    assert set(by_rank[0]["tree_pids"]).isdisjoint(by_rank[1]["tree_pids"])


def test_every_rank_holds_the_same_summed_records_and_epochs_add_up(ddp_run):
    _, ranks, rows = ddp_run
    assert ranks[0]["energy_kwh"] == ranks[1]["energy_kwh"]
    per_epoch = sum(float(r["energy_kwh"]) for r in rows)
    assert per_epoch == pytest.approx(float(rows[-1]["energy_kwh_total"]), rel=1e-3)


def test_a_stop_on_one_rank_stops_every_rank_at_the_same_epoch(ddp_run):
    _, ranks, rows = ddp_run
    assert ranks[1]["stop_reason"] == "rank 1 says stop"
    assert ranks[0]["stop_reason"] == "another rank's stopping policy said stop"
    assert ranks[0]["epochs"] == ranks[1]["epochs"] == [0, 1]
    assert [int(r["epoch"]) for r in rows] == [0, 1]


def test_the_ledger_is_written_once_by_rank_zero(ddp_run):
    out, ranks, _ = ddp_run
    runs = Ledger.open(out / "ledger.sqlite").runs()
    assert [r.run_id for r in runs] == [ranks[0]["run_id"]]
    assert ranks[1]["run_id"] == ""
    assert runs[0].epochs == 2 and runs[0].stopped_early
    assert runs[0].energy_kwh == pytest.approx(ranks[0]["energy_kwh_total"], rel=1e-9)
