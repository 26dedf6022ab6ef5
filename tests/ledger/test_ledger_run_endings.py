"""How runs end in the ledger: status, who stopped them, the partial epoch, and run links."""

from __future__ import annotations

import dataclasses
import io
import sqlite3
from pathlib import Path

import pytest

from carbon_callbacks.ledger import MIGRATIONS, Ledger
from carbon_callbacks.ledger.interchange import export_jsonl, import_files
from carbon_callbacks.records import RunEnd
from tests.helpers.ledger_records import make_record


def test_each_ending_round_trips_with_its_stopper_and_error(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "l.sqlite")
    ends = {
        "a": RunEnd("completed"),
        "b": RunEnd("stopped", "early_stopping", "val_loss did not improve in 3 epochs"),
        "c": RunEnd("failed", reason="loss is nan", error_type="FloatingPointError"),
        "d": RunEnd("interrupted", reason="SIGTERM"),
    }
    for run_id, end in ends.items():
        ledger.start_run({"run_id": run_id, "kind": "fit"})
        ledger.end_run(run_id, end=end)
    ledger.start_run({"run_id": "e"})  # never ended: killed, or still running

    runs = {r.run_id: r for r in ledger.runs()}
    for run_id, end in ends.items():
        assert runs[run_id].end == end
        assert runs[run_id].status == end.status
        assert runs[run_id].stopped_early == (end.status == "stopped")
        assert runs[run_id].kind == "fit"
    assert runs["c"].error_type == "FloatingPointError" and runs["c"].stop_reason == "loss is nan"
    assert runs["e"].status == "running" and runs["e"].end is None and runs["e"].kind == ""


def test_the_old_keywords_still_end_a_run_as_stopped_or_completed(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "l.sqlite")
    ledger.start_run({"run_id": "a"})
    ledger.end_run("a", stopped_early=True, stop_reason="budget spent")
    ledger.start_run({"run_id": "b"})
    ledger.end_run("b")
    runs = {r.run_id: r for r in ledger.runs()}
    assert runs["a"].end == RunEnd("stopped", "", "budget spent")
    assert runs["b"].end == RunEnd("completed")


def test_a_partial_epoch_and_the_parent_run_are_kept(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "l.sqlite")
    first = ledger.start_run({"kind": "fit"})
    second = ledger.start_run({"kind": "fit", "parent_run": first})
    evaluation = ledger.start_run({"kind": "test", "parent_run": second})
    records = [make_record(0), dataclasses.replace(make_record(1), metrics={}, partial=True)]
    for record in records:
        ledger.add_epoch(second, record)
    assert ledger.epochs(second) == records
    assert [r.partial for r in ledger.epochs(second)] == [False, True]
    runs = {r.run_id: r for r in ledger.runs()}
    assert runs[second].parent_run == first and runs[first].parent_run == ""
    assert (runs[evaluation].kind, runs[evaluation].parent_run) == ("test", second)


def test_a_version_2_ledger_reads_without_migrating_and_gains_the_columns_on_write(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v2.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied REAL)")
    for version in (1, 2):
        for statement in MIGRATIONS[version]:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version VALUES (?, 0)", (version,))
    conn.execute("INSERT INTO runs (run_id, start_wall) VALUES ('old', 5)")
    conn.execute("INSERT INTO run_ends (run_id, end_wall, stopped_early, stop_reason)"
                 " VALUES ('old', 9, 1, 'budget spent')")
    conn.commit()
    conn.close()
    before = path.read_bytes()

    ledger = Ledger.open(path)
    [old] = ledger.runs()
    assert old.end == RunEnd("stopped", "", "budget spent")
    assert path.read_bytes() == before  # reading did not migrate

    ledger.start_run({"run_id": "new"})
    ledger.end_run("new", end=RunEnd("failed", reason="boom", error_type="ValueError"))
    runs = {r.run_id: r for r in ledger.runs()}
    assert runs["old"].end == RunEnd("stopped", "", "budget spent")
    assert runs["new"].end == RunEnd("failed", reason="boom", error_type="ValueError")
    ledger.close()


def test_jsonl_export_and_import_keep_the_ending_and_the_links(tmp_path: Path) -> None:
    source = Ledger.open(tmp_path / "a.sqlite")
    parent = source.start_run({"kind": "fit"})
    child = source.start_run({"kind": "fit", "parent_run": parent})
    source.add_epoch(child, dataclasses.replace(make_record(0), partial=True, metrics={}))
    source.end_run(parent, end=RunEnd("stopped", "pruning", "trial 3 pruned at epoch 1"))
    source.end_run(child, end=RunEnd("interrupted", reason="SIGINT (KeyboardInterrupt)"))
    buffer = io.StringIO()
    export_jsonl(source, buffer)
    (tmp_path / "runs.jsonl").write_text(buffer.getvalue())

    target = Ledger.open(tmp_path / "b.sqlite")
    import_files(target, [tmp_path / "runs.jsonl"])
    runs = {r.run_id: r for r in target.runs()}
    assert runs[parent].end == RunEnd("stopped", "pruning", "trial 3 pruned at epoch 1")
    assert runs[child].end == RunEnd("interrupted", reason="SIGINT (KeyboardInterrupt)")
    assert runs[child].parent_run == parent and runs[child].kind == "fit"
    assert [r.partial for r in target.epochs(child)] == [True]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"status": "finished"}, "status must be one of"),
        ({"status": "stopped", "stopped_by": "cosmic rays"}, "stopped_by must be one of"),
        ({"status": "failed", "stopped_by": "policy"}, "stopped_by is for stopped runs"),
    ],
)
def test_an_unknown_ending_is_refused_naming_the_known_ones(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        RunEnd(**kwargs)


def test_describe_says_how_and_why_in_one_line() -> None:
    assert RunEnd("completed").describe() == "completed"
    assert RunEnd("stopped", "policy", "budget").describe() == "stopped by policy: budget"
    assert (
        RunEnd("failed", reason="nan loss", error_type="FloatingPointError").describe()
        == "failed: FloatingPointError: nan loss"
    )
