"""How a run ended, as ``runs``, ``show``, ``plot`` and the team view's pages say it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from carbon_callbacks.cli import main
from carbon_callbacks.ledger import Ledger
from carbon_callbacks.records import RunEnd
from tests.helpers.ledger_records import make_record

ENDS = {
    "done": RunEnd("completed"),
    "early": RunEnd("stopped", "early_stopping", "EarlyStopping: val_loss did not improve"),
    "crash": RunEnd("failed", reason="loss is nan at step 40", error_type="FloatingPointError"),
    "ctrlc": RunEnd("interrupted", reason="SIGINT (KeyboardInterrupt)"),
}


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    path = tmp_path / "l.sqlite"
    ledger = Ledger.open(path)
    for run_id, end in ENDS.items():
        ledger.start_run({"run_id": run_id, "project": "p", "kind": "fit"})
        ledger.add_epoch(run_id, make_record(0))
        if end.status in ("failed", "interrupted"):
            ledger.add_epoch(run_id, dataclasses.replace(make_record(1), partial=True, metrics={}))
        ledger.end_run(run_id, end=end)
    ledger.start_run({"run_id": "alive", "project": "p"})
    ledger.close()
    return path


def test_runs_says_how_each_run_ended_and_who_or_what_ended_it(ledger_path, capsys):
    assert main(["runs", "--ledger", str(ledger_path)]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.split()}
    assert lines["done"].rstrip().endswith("completed")
    assert "stopped early (early_stopping)" in lines["early"]
    assert "failed (FloatingPointError)" in lines["crash"]
    assert "interrupted (SIGINT (KeyboardInterrupt))" in lines["ctrlc"]
    assert "running/killed" in lines["alive"]


@pytest.mark.parametrize(
    ("run_id", "line"),
    [
        ("done", "completed: ran to its end"),
        ("early", "stopped early: EarlyStopping: val_loss did not improve "
                  "(stopped by early_stopping)"),
        ("crash", "failed: FloatingPointError: loss is nan at step 40"),
        ("ctrlc", "interrupted: SIGINT (KeyboardInterrupt)"),
    ],
)
def test_show_says_the_ending_and_marks_the_partial_epoch(ledger_path, capsys, run_id, line):
    assert main(["show", run_id, "--ledger", str(ledger_path)]) == 0
    out = capsys.readouterr().out
    assert line in out.splitlines()
    assert ("train (partial)" in out) == (ENDS[run_id].status in ("failed", "interrupted"))


def test_the_plot_title_carries_the_ending(ledger_path, monkeypatch, tmp_path):
    pytest.importorskip("matplotlib")
    import carbon_callbacks.reports.plot as plot

    titles = []
    real = plot.plot_run

    def spy(records, path, **kwargs):
        titles.append(kwargs["title"])
        return real(records, path, **kwargs)

    monkeypatch.setattr(plot, "plot_run", spy)
    out = tmp_path / "crash.png"
    assert main(["plot", "crash", "--ledger", str(ledger_path), "-o", str(out)]) == 0
    assert out.stat().st_size > 0
    assert titles == ["run crash (p): failed: FloatingPointError: loss is nan at step 40"]


def test_a_page_of_runs_filters_and_sorts_on_every_ending(ledger_path):
    ledger = Ledger.open(ledger_path)
    for status, want in [("completed", ["done"]), ("stopped", ["early"]), ("failed", ["crash"]),
                         ("interrupted", ["ctrlc"]), ("running", ["alive"])]:
        page = ledger.runs_page(status=status, limit=10)
        assert [r.run_id for r in page.runs] == want, status
    ordered = ledger.runs_page(order_by="status", descending=False, limit=10)
    assert [r.run_id for r in ordered.runs] == ["alive", "done", "early", "crash", "ctrlc"]


def test_the_team_view_names_failed_and_interrupted_runs(ledger_path):
    from carbon_callbacks.serve.runs import run_status

    runs = {r.run_id: r for r in Ledger.open(ledger_path).runs()}
    assert [run_status(runs[k]) for k in ("done", "early", "crash", "ctrlc", "alive")] == [
        "completed", "stopped early", "failed", "interrupted", "running/killed"]
