"""The ledger under stress: concurrent writers, a killed run, a corrupt or locked file, no DB."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from carbon_callbacks.ledger import Ledger, LedgerError
from tests.helpers.ledger_records import make_record
from tests.helpers.wait import wait_until

WORKER = Path(__file__).resolve().parents[1] / "helpers" / "ledger_worker.py"


def _worker(*args: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_processes_writing_one_sqlite_ledger_at_once_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    go = tmp_path / "go"
    n = 300
    workers = [_worker(path, name, n, go) for name in ("alpha", "beta")]
    for w in workers:  # both have opened the ledger and started their run
        assert w.stdout is not None
        assert w.stdout.readline().startswith("run ")
    go.touch()
    for w in workers:
        out, err = w.communicate(timeout=120)
        assert w.returncode == 0, err
        assert out.split()[-1] == "done"

    ledger = Ledger.open(path)
    runs = {r.run_id: r for r in ledger.runs()}
    assert set(runs) == {"alpha-run", "beta-run"}
    for run_id in runs:
        epochs = ledger.epochs(run_id)
        assert [e.epoch for e in epochs] == list(range(n))
        assert runs[run_id].finished
    # The two writers really overlapped in time (otherwise this test proves nothing).
    a, b = (ledger.epochs(r) for r in ("alpha-run", "beta-run"))
    conn = sqlite3.connect(path)
    recorded = {
        run: [
            t
            for (t,) in conn.execute(
                "SELECT recorded FROM epochs WHERE run_id = ? ORDER BY recorded", (run,)
            )
        ]
        for run in ("alpha-run", "beta-run")
    }
    assert recorded["alpha-run"][0] < recorded["beta-run"][-1]
    assert recorded["beta-run"][0] < recorded["alpha-run"][-1]
    assert len(a) == len(b) == n


def test_sigkilled_run_keeps_every_finished_epoch(tmp_path: Path) -> None:
    path = tmp_path / "killed.sqlite"
    worker = _worker(path, "victim", 0, "-", 0.02)  # writes epochs until killed
    assert worker.stdout is not None
    assert worker.stdout.readline().startswith("run ")
    reported = []
    while len(reported) < 5:
        reported.append(int(worker.stdout.readline()))
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=30)
    assert worker.returncode == -signal.SIGKILL

    ledger = Ledger.open(path)
    [run] = ledger.runs()
    assert not run.finished
    stored = [e.epoch for e in ledger.epochs(run.run_id)]
    # Every epoch the worker reported as written is there, in order, with nothing torn.
    assert stored[: len(reported)] == reported
    assert stored == list(range(len(stored)))


def test_corrupt_file_spools_warns_once_and_recovers(tmp_path: Path, caplog) -> None:
    path = tmp_path / "bad.sqlite"
    path.write_bytes(b"this is not a sqlite database at all " * 200)
    ledger = Ledger.open(path, retry_interval=0)
    with caplog.at_level(logging.WARNING, logger="carbon_callbacks.ledger"):
        run_id = ledger.start_run({"project": "survivor"})
        for i in range(3):
            ledger.add_epoch(run_id, make_record(i))
        ledger.end_run(run_id, stopped_early=True, stop_reason="budget")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "corrupt" in warnings[0].getMessage()
    assert str(ledger.spool_path) in warnings[0].getMessage()
    assert ledger.spooled() == 5
    lines = [json.loads(x) for x in ledger.spool_path.read_text().splitlines()]
    assert [op["table"] for op in lines] == ["runs", "epochs", "epochs", "epochs", "run_ends"]
    with pytest.raises(LedgerError, match="corrupt"):
        ledger.runs()

    path.rename(tmp_path / "bad.sqlite.corrupt")  # what the warning tells the user to do
    assert ledger.flush_spool() == 5
    assert ledger.spooled() == 0
    [run] = ledger.runs()
    assert run.run_id == run_id and run.stopped_early and run.epochs == 3
    assert [e.epoch for e in ledger.epochs(run_id)] == [0, 1, 2]


def test_spool_is_written_by_the_next_epoch_once_the_file_is_back(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    path.write_bytes(b"garbage" * 1000)
    ledger = Ledger.open(path, retry_interval=0)
    run_id = ledger.start_run({})
    ledger.add_epoch(run_id, make_record(0))
    assert ledger.spooled() == 2
    path.unlink()
    # No CLI needed: this write finds the store due for a retry and drains the spool off the
    # caller's thread.
    ledger.add_epoch(run_id, make_record(1))
    assert wait_until(lambda: ledger.spooled() == 0)
    assert [e.epoch for e in ledger.epochs(run_id)] == [0, 1]


def test_locked_file_spools_then_flushes_when_released(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    ledger = Ledger.open(path, timeout=0.2, retry_interval=0)
    run_id = ledger.start_run({})
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    ledger.add_epoch(run_id, make_record(0))
    assert ledger.spooled() == 2  # the epoch, after its run's row (for a flush elsewhere)
    assert "locked" in ledger.last_error
    blocker.execute("COMMIT")
    blocker.close()
    ledger.add_epoch(run_id, make_record(1))
    assert wait_until(lambda: ledger.spooled() == 0)
    assert [e.epoch for e in ledger.epochs(run_id)] == [0, 1]


def test_unreachable_database_spools_and_training_goes_on(tmp_path: Path, caplog) -> None:
    pytest.importorskip("sqlalchemy")
    pytest.importorskip("psycopg")
    # Port 9 on 127.0.0.1 has no server: the connection is refused at once.
    url = "postgresql://nobody:s3cret@127.0.0.1:9/none"
    ledger = Ledger.open(url, spool=tmp_path / "spool.jsonl", timeout=1)
    with caplog.at_level(logging.WARNING, logger="carbon_callbacks.ledger"):
        run_id = ledger.start_run({})
        ledger.add_epoch(run_id, make_record(0))
        ledger.add_epoch(run_id, make_record(1))
    assert ledger.spooled() == 3
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(messages) == 1 and "unavailable" in messages[0]
    assert "s3cret" not in messages[0]  # the password never reaches a log
    with pytest.raises(LedgerError):
        ledger.flush_spool()
    assert ledger.spooled() == 3  # a failed flush keeps everything


def test_spool_survives_a_line_cut_short_by_a_kill(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    ledger = Ledger.open(path)
    run_id = ledger.start_run({})
    spool = ledger.spool_path
    good = make_record(0)
    line = json.dumps(ledger._epoch_op(run_id, good))  # the exact line a spooled epoch becomes
    spool.write_text(line + "\n" + line[: len(line) // 2])
    assert ledger.flush_spool() == 1
    assert ledger.epochs(run_id) == [good]


def test_sigkilled_lightning_training_keeps_its_finished_epochs(tmp_path: Path) -> None:
    pytest.importorskip("lightning", reason="this run trains with Lightning")
    path = tmp_path / "train.sqlite"
    worker = subprocess.Popen(
        [sys.executable, str(WORKER.with_name("ledger_train_worker.py")), str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert worker.stdout is not None
    announced = [int(worker.stdout.readline()) for _ in range(4)]
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=60)
    assert announced == [0, 1, 2, 3]

    ledger = Ledger.open(path)
    [run] = ledger.runs(project="killed")
    assert run.framework == "lightning" and not run.finished
    records = ledger.epochs(run.run_id)
    epochs = [r.epoch for r in records]
    assert epochs[:4] == announced and epochs == list(range(len(epochs)))
    assert all(r.co2_g == pytest.approx(r.energy_kwh * 300.0) for r in records)
    assert "train_loss" in records[0].metrics


def test_spool_falls_back_to_the_user_data_dir_when_its_folder_is_unusable(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr("sys.platform", "linux")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    # The ledger's folder is a file: neither the ledger nor its spool can be created there.
    ledger = Ledger.open(blocker / "l.sqlite", retry_interval=0)
    with caplog.at_level(logging.WARNING, logger="carbon_callbacks.ledger"):
        run_id = ledger.start_run({})
        ledger.add_epoch(run_id, make_record(0))
    assert ledger.spooled() == 2
    assert list((tmp_path / "xdg" / "carbon-callbacks").glob("spool-*.jsonl"))
    assert any("kept in" in r.getMessage() for r in caplog.records)
    assert not any("lost" in r.getMessage() for r in caplog.records)
