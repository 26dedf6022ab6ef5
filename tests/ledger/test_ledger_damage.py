"""A SQLite ledger destroyed under its writer: the first commit that cannot be proven on disk is
noticed, what the writer's connection still reads is salvaged to the spool, and moving the file
aside and flushing the spool brings back every run."""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from carbon_callbacks.ledger import Ledger, LedgerDamaged
from carbon_callbacks.ledger.spool import Spool
from carbon_callbacks.ledger.sqlite_store import SqliteStore
from tests.helpers.ledger_records import make_record


def _replace(path: Path) -> None:
    path.unlink()
    path.write_bytes(b"not the ledger" * 100)


def _other_sqlite(path: Path) -> None:
    other = path.with_name("other.sqlite")
    Ledger.open(other).start_run({"project": "someone else's"})
    shutil.copyfile(other, path)  # in place: same inode, a valid SQLite file


def _overwrite(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.write(os.urandom(path.stat().st_size))


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated": (lambda p: os.truncate(p, 0), "was truncated (now 0 bytes)"),
    "cut short": (lambda p: os.truncate(p, 5000), "was truncated"),
    "overwritten": (_overwrite, "was overwritten (its header is not SQLite's)"),
    "replaced": (_replace, "was replaced by another file"),
    "deleted": (lambda p: p.unlink(), "was deleted"),
    "another SQLite file": (_other_sqlite, "was overwritten by another SQLite file"),
    "WAL deleted": (lambda p: os.unlink(f"{p}-wal"), "lost its write-ahead log"),
}


def _earlier(path: Path) -> str:
    ledger = Ledger.open(path)
    run_id = ledger.start_run({"project": "earlier"})
    for i in range(3):
        ledger.add_epoch(run_id, make_record(i))
    ledger.end_run(run_id)
    ledger.close()
    return run_id


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damage_is_noticed_and_every_epoch_is_recovered(tmp_path: Path, caplog, damage) -> None:
    path = tmp_path / "ledger.sqlite"
    earlier = _earlier(path)
    ledger = Ledger.open(path)
    run_id = ledger.start_run({"project": "now"})
    for i in range(3):
        ledger.add_epoch(run_id, make_record(i))
    assert ledger.spooled() == 0
    destroy, says = DAMAGE[damage]
    destroy(path)
    with caplog.at_level(logging.WARNING, logger="carbon_callbacks.ledger"):
        for i in range(3, 8):
            ledger.add_epoch(run_id, make_record(i))
        ledger.end_run(run_id)
    ledger.close()
    [message] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert says in message and "move it aside" in message and str(ledger.spool_path) in message

    # The README: move it aside, then `carbon-callbacks spool flush` (flush_spool here).
    if path.exists():
        path.rename(tmp_path / "ledger.sqlite.corrupt")
    fresh = Ledger.open(path)
    assert fresh.flush_spool() > 0
    run = fresh.run(run_id)
    assert run.project == "now" and run.finished
    assert [r.epoch for r in fresh.epochs(run_id)] == list(range(8))
    # The earlier run was on pages this connection had read or written: salvaged too.
    assert [r.epoch for r in fresh.epochs(earlier)] == [0, 1, 2]


def test_the_damaged_file_is_not_written_again_until_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    ledger = Ledger.open(path, retry_interval=0)
    run_id = ledger.start_run({})
    ledger.add_epoch(run_id, make_record(0))
    os.truncate(path, 0)
    for i in range(1, 4):
        ledger.add_epoch(run_id, make_record(i))  # each due for a retry, never into the file
    with pytest.raises(LedgerDamaged, match="move it aside"):
        ledger.flush_spool()
    ledger.close()
    # SQLite would take the 0-byte file for an empty database and write on; the store wrote
    # nothing there after epoch 1 (the commit that found the damage): at most what its
    # connection's last checkpoint put back.
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        stored = [e for (e,) in conn.execute("SELECT epoch FROM epochs ORDER BY epoch")]
    except sqlite3.DatabaseError:
        stored = []
    finally:
        conn.close()
    assert set(stored) <= {0, 1}


def test_a_reader_never_opens_an_empty_file_whose_wal_holds_the_rows(tmp_path: Path) -> None:
    # A fresh SQLite connection to a 0-byte database deletes the WAL beside it: the only copy
    # of the pages a writer wrote since the last checkpoint.
    path = tmp_path / "ledger.sqlite"
    ledger = Ledger.open(path)
    run_id = ledger.start_run({})
    ledger.add_epoch(run_id, make_record(0))
    wal = Path(f"{path}-wal")
    assert wal.stat().st_size > 0
    os.truncate(path, 0)
    assert Ledger.open(path).runs() == []  # reads nothing ...
    assert wal.exists()  # ... and destroys nothing
    ledger.add_epoch(run_id, make_record(1))  # the writer notices and salvages
    ledger.close()
    path.rename(tmp_path / "aside.sqlite")
    fresh = Ledger.open(path)
    fresh.flush_spool()
    assert [r.epoch for r in fresh.epochs(run_id)] == [0, 1]


def test_spooled_records_are_only_flushed_into_a_file_that_passes_quick_check(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.sqlite"
    _earlier(path)
    size = path.stat().st_size
    with open(path, "r+b") as fh:  # a page in the middle of the file, not the header
        fh.seek(size // 2)
        fh.write(b"\xff" * 4096)
    spool = tmp_path / "s.jsonl"
    keeper = Ledger.open(tmp_path / "elsewhere.sqlite", spool=spool)
    op = keeper._run_op({"project": "precious"})
    Spool(spool).append(op)
    target = Ledger.open(path, spool=spool)
    with pytest.raises(LedgerDamaged, match="quick_check"):
        target.flush_spool()
    assert target.spooled() == 1  # kept for a ledger that can hold it


def test_a_healthy_ledger_shared_by_two_writers_is_never_taken_for_damaged(
    tmp_path: Path, caplog
) -> None:
    path = tmp_path / "ledger.sqlite"
    a, b = Ledger.open(path), Ledger.open(path)
    ra, rb = a.start_run({}), b.start_run({})
    with caplog.at_level(logging.WARNING, logger="carbon_callbacks.ledger"):
        for i in range(40):
            a.add_epoch(ra, make_record(i))
            b.add_epoch(rb, make_record(i))
            if i == 20:
                conn = sqlite3.connect(path)  # a third process checkpoints the WAL meanwhile
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                conn.close()
    assert a.spooled() == b.spooled() == 0
    assert not caplog.records
    assert len(a.epochs(ra)) == len(b.epochs(rb)) == 40


def test_the_store_refuses_to_reopen_the_damaged_inode_only(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    store = SqliteStore(path, timeout=1.0)
    ledger = Ledger.open(path)
    op = ledger._run_op({})
    store.apply([op])
    os.truncate(path, 0)
    with pytest.raises(LedgerDamaged):
        store.apply([ledger._epoch_op(op["row"]["run_id"], make_record(0))])
    salvaged = [o for batch in store.salvage(1.0) for o in batch]
    assert [o["table"] for o in salvaged][:2] == ["runs", "epochs"]
    with pytest.raises(LedgerDamaged):
        store.apply([op])  # the same file: refused without opening it
    path.rename(tmp_path / "aside")
    store.apply([op])  # a fresh file where it was
    store.close()


def test_writers_of_one_file_share_one_descriptor_closed_by_the_last(tmp_path: Path) -> None:
    # Closing a descriptor drops every POSIX lock the process holds on the file, SQLite's too:
    # one writer closing must not close a descriptor while another still writes the file.
    from carbon_callbacks.ledger import sqlite_file

    path = tmp_path / "ledger.sqlite"
    a, b = Ledger.open(path), Ledger.open(path)
    a.start_run({})
    b.start_run({})
    identity = (path.stat().st_dev, path.stat().st_ino)
    fd, users = sqlite_file._descriptors[identity]
    assert users == 2
    a.close()
    assert sqlite_file._descriptors[identity] == [fd, 1]
    os.fstat(fd)  # still open
    b.close()
    assert identity not in sqlite_file._descriptors
