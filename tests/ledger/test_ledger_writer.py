"""What a write costs the thread that makes it: a bounded wait while the store is healthy, a
local append once it is not, retries off that thread, and no thread left after close()."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from pathlib import Path

import pytest

from carbon_callbacks.ledger import Ledger
from carbon_callbacks.ledger import writer as writer_module
from tests.helpers.ledger_records import make_record
from tests.helpers.wait import wait_until

SLACK = 1.0  # seconds, for a machine shared with other jobs


def _worker_alive(ledger: Ledger) -> bool:
    """Whether this ledger's worker thread is running (other tests' ledgers have their own)."""
    thread = ledger._writer._thread
    return thread is not None and thread.is_alive()


def _timed(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def test_a_locked_store_costs_one_bounded_wait_then_appends(tmp_path: Path, caplog) -> None:
    path = tmp_path / "l.sqlite"
    # SQLite would wait 3 s for the lock on each try; the caller waits at most 0.2 s, once.
    ledger = Ledger.open(path, timeout=3.0, max_wait=0.2, retry_interval=0)
    run_id = ledger.start_run({})
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    with caplog.at_level(logging.WARNING, logger="carbon_callbacks.ledger"):
        first = _timed(ledger.add_epoch, run_id, make_record(0))
        later = [_timed(ledger.add_epoch, run_id, make_record(i)) for i in range(1, 20)]
        assert first <= 0.2 + SLACK
        # The worker is still waiting for the lock: each later write is a local append.
        assert max(later) <= 0.1 + SLACK and sorted(later)[len(later) // 2] < 0.05
        assert ledger.spooled() == 21  # the run's row, then every epoch
        assert wait_until(lambda: "locked" in ledger.last_error)
        blocker.execute("COMMIT")
        blocker.close()
        ledger.add_epoch(run_id, make_record(20))  # due for a retry: drained off this thread
        assert wait_until(lambda: ledger.spooled() == 0)
    assert [r.epoch for r in ledger.epochs(run_id)] == list(range(21))
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    ledger.close()
    assert not _worker_alive(ledger)


def test_spooled_epochs_carry_their_run_so_another_ledger_can_take_them(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    ledger = Ledger.open(path, timeout=0.2, retry_interval=60)
    run_id = ledger.start_run({"project": "moved", "framework": "keras"})
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    for i in range(3):
        ledger.add_epoch(run_id, make_record(i))
    ledger.end_run(run_id, stopped_early=True, stop_reason="budget")
    ledger.close()
    blocker.execute("COMMIT")
    blocker.close()
    tables = [json.loads(x)["table"] for x in ledger.spool_path.read_text().splitlines()]
    assert tables == ["runs", "epochs", "epochs", "epochs", "run_ends"]
    other = Ledger.open(tmp_path / "other.sqlite", spool=ledger.spool_path)
    assert other.flush_spool() == 5
    run = other.run(run_id)
    assert (run.project, run.framework, run.epochs, run.stopped_early) == (
        "moved", "keras", 3, True,
    )  # fmt: skip


def test_a_healthy_sqlite_ledger_is_written_in_the_callers_thread(tmp_path: Path) -> None:
    # No hand-off to wait for: on a busy machine a thread switch can cost milliseconds.
    ledger = Ledger.open(tmp_path / "l.sqlite")
    run_id = ledger.start_run({})
    for i in range(5):
        ledger.add_epoch(run_id, make_record(i))
    assert not _worker_alive(ledger)
    assert [r.epoch for r in ledger.epochs(run_id)] == list(range(5))
    ledger.close()


def test_the_worker_thread_ends_when_idle_and_at_close(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(writer_module, "IDLE_EXIT", 0.2)
    path = tmp_path / "l.sqlite"
    ledger = Ledger.open(path, timeout=0.1, retry_interval=0)
    run_id = ledger.start_run({})
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    ledger.add_epoch(run_id, make_record(0))  # locked: spooled, and a retry starts the worker
    first = ledger._writer._thread
    assert first is not None and first.name == "carbon-callbacks-ledger"
    assert wait_until(lambda: not first.is_alive(), timeout=5)
    blocker.execute("COMMIT")
    blocker.close()
    ledger.add_epoch(run_id, make_record(1))  # due for a retry: a new worker on demand
    assert ledger._writer._thread is not first
    assert wait_until(lambda: ledger.spooled() == 0)
    ledger.close()
    assert not _worker_alive(ledger)
    assert [r.epoch for r in ledger.epochs(run_id)] == [0, 1]


@pytest.mark.parametrize("value", [0, -1.0])
def test_max_wait_must_be_positive(tmp_path: Path, value: float) -> None:
    with pytest.raises(ValueError, match="max_wait"):
        Ledger.open(tmp_path / "l.sqlite", max_wait=value)


def test_a_closed_ledger_is_written_again_by_a_new_worker(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "l.sqlite")
    run_id = ledger.start_run({})
    ledger.close()
    ledger.add_epoch(run_id, make_record(0))  # as before close(): into the store, not the spool
    assert ledger.spooled() == 0 and [r.epoch for r in ledger.epochs(run_id)] == [0]
    ledger.close()
