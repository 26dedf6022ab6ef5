"""The spool under bad input: cut lines, lines that are not ours, an unreadable spool, rows the
store refuses. None of these may raise into training or hold back later writes."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from carbon_callbacks.ledger import Ledger
from carbon_callbacks.ledger.spool import Spool
from tests.helpers.ledger_records import make_record
from tests.helpers.wait import wait_until


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_append_after_a_cut_line_keeps_the_new_record(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    ledger = Ledger.open(path, timeout=0.1, retry_interval=0)
    run_id = ledger.start_run({})
    # A write cut short by a kill or a full disk: no final newline.
    cut = b'{"table": "epochs", "row": {"uid"'
    ledger.spool_path.write_bytes(cut)
    op = ledger._epoch_op(run_id, make_record(1))
    Spool(ledger.spool_path).append(op)  # what a process whose store is down does
    lines = ledger.spool_path.read_bytes().splitlines()
    assert lines == [cut, json.dumps(op).encode()]
    ledger.add_epoch(run_id, make_record(2))  # the store is up: the spool is drained off-thread
    assert wait_until(lambda: ledger.spooled() == 0)
    assert [e.epoch for e in ledger.epochs(run_id)] == [1, 2]
    assert ledger.spool_path.with_suffix(".unreadable").read_bytes() == cut + b"\n"
    ledger.close()


def test_spool_lines_that_are_not_writes_are_set_aside_with_one_warning(
    tmp_path: Path, caplog
) -> None:
    ledger = Ledger.open(tmp_path / "l.sqlite")
    run_id = ledger.start_run({})
    good = json.dumps(ledger._epoch_op(run_id, make_record(0)))
    not_ours = (
        b'{"table": "bogus", "row": {}}\n'  # valid JSON, unknown table
        b"[1, 2, 3]\n"  # valid JSON, not an op
        b'{"table": "epochs", "row": 7}\n'  # a row that is not a mapping
        b"\xff\xfe not utf-8 \x80\n"
    )
    ledger.spool_path.write_bytes(not_ours + good.encode() + b"\n")
    with caplog.at_level(logging.WARNING, logger="carbon_callbacks.ledger"):
        ledger.add_epoch(run_id, make_record(1))  # must not raise; the spool drains off-thread
        assert wait_until(lambda: ledger.spooled() == 0)
    assert [e.epoch for e in ledger.epochs(run_id)] == [0, 1]
    messages = _warnings(caplog)
    assert len(messages) == 1 and "4 unreadable line" in messages[0]
    # Nothing is deleted: the lines are kept, byte for byte, where the warning says.
    aside = ledger.spool_path.with_suffix(".unreadable")
    assert str(aside) in messages[0]
    assert aside.read_bytes() == not_ours


def test_spool_path_that_is_a_folder_never_escapes_a_write(tmp_path: Path) -> None:
    spool = tmp_path / "spooldir"
    spool.mkdir()
    ledger = Ledger.open(tmp_path / "l.sqlite", spool=spool)
    run_id = ledger.start_run({})
    ledger.add_epoch(run_id, make_record(0))
    assert [e.epoch for e in ledger.epochs(run_id)] == [0]


def test_disk_error_while_draining_still_stores_the_record(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    ledger = Ledger.open(tmp_path / "l.sqlite")
    run_id = ledger.start_run({})
    ledger.spool_path.write_text(json.dumps(ledger._epoch_op(run_id, make_record(0))) + "\n")

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    # The disk fails at its own boundary: the spool cannot be synced after it is emptied.
    monkeypatch.setattr(os, "fsync", failing_fsync)
    with caplog.at_level(logging.WARNING, logger="carbon_callbacks.ledger"):
        ledger.add_epoch(run_id, make_record(1))
        assert wait_until(lambda: bool(_warnings(caplog)))  # the drain, off-thread, failed
        ledger.add_epoch(run_id, make_record(2))
    monkeypatch.undo()
    assert [e.epoch for e in ledger.epochs(run_id)] == [0, 1, 2]
    messages = _warnings(caplog)
    assert len(messages) == 1 and "cannot read the ledger spool" in messages[0]


def test_a_run_spooled_by_schema_v1_code_is_written(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "l.sqlite")
    ledger.start_run({"project": "p"})
    op = ledger._run_op({"project": "old"})
    del op["row"]["source"]  # schema v1 had no source column
    ledger.spool_path.write_text(json.dumps(op) + "\n")
    for i in range(3):
        ledger.start_run({"project": f"new{i}"})
    assert wait_until(lambda: ledger.spooled() == 0)
    assert sorted(r.project for r in ledger.runs()) == ["new0", "new1", "new2", "old", "p"]


def test_a_row_the_store_refuses_is_set_aside_and_the_rest_written(tmp_path: Path, caplog) -> None:
    ledger = Ledger.open(tmp_path / "l.sqlite")
    run_id = ledger.start_run({})
    bad = ledger._epoch_op(run_id, make_record(0))
    bad["row"]["run_id"] = None  # epochs.run_id is NOT NULL: no retry can store this
    good = ledger._epoch_op(run_id, make_record(1))
    ledger.spool_path.write_text(json.dumps(bad) + "\n" + json.dumps(good) + "\n")
    with caplog.at_level(logging.WARNING, logger="carbon_callbacks.ledger"):
        ledger.add_epoch(run_id, make_record(2))
        assert wait_until(lambda: ledger.spooled() == 0)
        ledger.add_epoch(run_id, make_record(3))
    assert [e.epoch for e in ledger.epochs(run_id)] == [1, 2, 3]
    rejected = ledger.spool_path.with_suffix(".rejected.jsonl")
    assert [json.loads(x) for x in rejected.read_text().splitlines()] == [bad]
    messages = _warnings(caplog)
    assert len(messages) == 1 and str(rejected) in messages[0]
    assert ledger.flush_spool() == 0  # nothing left behind to fail a flush
