"""The ledger under faults, on real tiny Lightning fits (issue 12's fault matrix, ledger part).

Each fault is injected at its own boundary while a fit writes to the ledger: a SQLite file
truncated, overwritten, locked, read-only or full; a PostgreSQL server stopped, its ``epochs``
table locked, a server that accepts and never answers, a wrong password. For each, the test
checks what the user would see:

- training finishes every epoch, as it would without us;
- the carbon callback holds a hook at most ``STALL`` seconds (``Ledger``'s ``max_wait`` plus
  slack for this shared machine), and at fit end at most ``END_STALL`` (``timeout + 1``, what
  ``close()`` may wait for a write in progress, plus the same slack);
- a warning names the cause;
- no thread and no connection of ours is left after ``fit``;
- after the README's recovery, followed literally with the CLI, no finished epoch is missing
  (nor any epoch of an earlier run in a damaged SQLite file), and the run has its row and end.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("lightning", reason="the fault matrix trains with Lightning")

from carbon_callbacks.ledger import Ledger  # noqa: E402
from carbon_callbacks.ledger.ledger import MAX_WAIT  # noqa: E402
from tests.helpers.ledger_fault_fit import FitReport, fit  # noqa: E402
from tests.helpers.ledger_records import make_record  # noqa: E402

EPOCHS = 6
FAULT_AT = 2  # the fault comes after epoch 2 is written
SLACK = 1.5  # seconds: Lightning's own hook work and a machine shared with other jobs
STALL = MAX_WAIT + SLACK
TIMEOUT = 5.0  # Ledger's default timeout, which a ledger= string gets
END_STALL = TIMEOUT + 1.0 + SLACK


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch) -> Path:
    """The per-user data folder (fallback spools, database spools) for the fit and the CLI."""
    folder = tmp_path / "data"
    monkeypatch.setenv("XDG_DATA_HOME", str(folder))
    return folder


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``carbon-callbacks ARGS`` as the user types it (the environment as the fit had it)."""
    proc = subprocess.run(
        [sys.executable, "-m", "carbon_callbacks", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def _at(epoch: int, action: Callable[[], None]) -> Callable[[int], None]:
    def fault(current: int) -> None:
        if current == epoch:
            action()

    return fault


def _earlier_run(ledger: str | Path) -> str:
    """A finished 3-epoch run already in the ledger before the faulty fit."""
    led = Ledger.open(ledger)
    run_id = led.start_run({"project": "earlier"})
    for i in range(3):
        led.add_epoch(run_id, make_record(i))
    led.end_run(run_id)
    led.close()
    return run_id


def _warning(caplog, *words: str) -> str:
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    hits = [m for m in messages if all(w in m for w in words)]
    assert hits, f"no warning with {words} in {messages}"
    return hits[0]


def _trained_cleanly(report: FitReport, *, ports: tuple[int, ...] = ()) -> None:
    assert report.epochs_trained == EPOCHS
    assert report.run_id
    assert report.stalls["on_fit_start"] <= STALL, report.stalls
    assert report.stalls["on_train_epoch_end"] <= STALL, report.stalls
    assert report.stalls["on_fit_end"] <= END_STALL, report.stalls
    assert report.new_threads == [], report.new_threads
    assert [s for s in report.open_sockets if s[1] in ports] == [], report.open_sockets


def _recovered(ledger: str | Path, report: FitReport, earlier: str | None = None) -> None:
    led = Ledger.open(ledger)
    run = led.run(report.run_id)
    assert run.project == "faults" and run.framework == "lightning"
    assert run.finished
    assert [r.epoch for r in led.epochs(run.run_id)] == list(range(EPOCHS))
    if earlier is not None:
        assert [r.epoch for r in led.epochs(earlier)] == [0, 1, 2]
    led.close()


# --------------------------------------------------------------------------- SQLite


@pytest.mark.parametrize("damage", ["truncated", "overwritten"])
def test_sqlite_file_damaged_mid_run(tmp_path: Path, data_dir: Path, caplog, damage: str) -> None:
    path = tmp_path / "ledger.sqlite"
    earlier = _earlier_run(path)

    def destroy() -> None:
        if damage == "truncated":
            os.truncate(path, 0)
        else:
            with open(path, "r+b") as fh:
                fh.write(os.urandom(path.stat().st_size))

    with caplog.at_level(logging.WARNING):
        report = fit(str(path), EPOCHS, _at(FAULT_AT, destroy))
    _trained_cleanly(report)
    message = _warning(caplog, damage, "corrupt", "move it aside")
    assert str(path) in message
    # README: move the corrupt file aside and run `carbon-callbacks spool flush`.
    path.rename(tmp_path / "ledger.sqlite.corrupt")
    _cli("spool", "flush", "--ledger", str(path))
    _recovered(path, report, earlier)


def test_sqlite_file_locked_mid_run(tmp_path: Path, data_dir: Path, caplog) -> None:
    path = tmp_path / "ledger.sqlite"
    blocker = sqlite3.connect(path, isolation_level=None, timeout=30)

    def lock() -> None:
        blocker.execute("BEGIN EXCLUSIVE")

    try:
        with caplog.at_level(logging.WARNING):
            report = fit(str(path), EPOCHS, _at(FAULT_AT, lock))
    finally:
        if blocker.in_transaction:
            blocker.execute("COMMIT")
        blocker.close()
    _trained_cleanly(report)
    _warning(caplog, "locked by another process")
    # README: once the lock is gone (here: released), run `carbon-callbacks spool flush`.
    _cli("spool", "flush", "--ledger", str(path))
    _recovered(path, report)


@contextlib.contextmanager
def _read_only(folder: Path) -> Iterator[None]:
    """The folder (and the ledger in it) read-only for this process, root included."""
    if os.geteuid() != 0:
        mode = folder.stat().st_mode
        files = {p: p.stat().st_mode for p in folder.iterdir()}
        for p in files:
            p.chmod(0o444)
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(mode)
            for p, m in files.items():
                p.chmod(m)
        return
    # Root ignores permission bits: a read-only bind mount of the folder over itself.
    done = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot make a read-only folder as root here: {done.stderr.strip()}")
    try:
        subprocess.run(
            ["mount", "-o", "remount,bind,ro", str(folder)], check=True, capture_output=True
        )
        yield
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)


def test_sqlite_ledger_read_only(tmp_path: Path, data_dir: Path, caplog) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    path = folder / "ledger.sqlite"
    earlier = _earlier_run(path)
    with _read_only(folder), caplog.at_level(logging.WARNING):
        report = fit(str(path), EPOCHS)
    _trained_cleanly(report)
    message = _warning(caplog, "read-only")
    assert str(data_dir) in message  # its folder is read-only too: the spool is kept there
    # README: make the ledger writable again (here: the mount is gone), then flush.
    _cli("spool", "flush", "--ledger", str(path))
    _recovered(path, report, earlier)


def test_sqlite_ledger_full(tmp_path: Path, data_dir: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    earlier = _earlier_run(path)
    # The fit runs in a process of its own under a file-size limit the ledger's write-ahead
    # log outgrows after a few epochs (each commit appends a few 4 KiB pages).
    worker = Path(__file__).resolve().parents[2] / "helpers" / "ledger_fault_fit.py"
    proc = subprocess.run(
        [sys.executable, str(worker), str(path), str(EPOCHS), str(48 * 1024)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = FitReport(**json.loads(proc.stdout.strip().splitlines()[-1]))
    assert report.run_id
    _trained_cleanly(report)
    assert "file-size limit" in proc.stderr and str(path) in proc.stderr
    # README: free some room (here: no limit in this process), then flush.
    _cli("spool", "flush", "--ledger", str(path))
    led = Ledger.open(path)
    run = led.run(report.run_id)
    assert run.project == "full" and run.finished
    assert [r.epoch for r in led.epochs(run.run_id)] == list(range(EPOCHS))
    assert [r.epoch for r in led.epochs(earlier)] == [0, 1, 2]


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="module")
def server() -> Iterator[object]:
    pytest.importorskip("sqlalchemy", reason="the PostgreSQL ledger needs SQLAlchemy")
    pytest.importorskip("psycopg", reason="the PostgreSQL ledger needs psycopg 3")
    from tests.helpers.postgres_server import PostgresServer, Unavailable

    try:
        srv = PostgresServer().start()
    except Unavailable as exc:
        pytest.skip(str(exc))
    try:
        yield srv
    finally:
        srv.remove()


def test_postgres_stopped_mid_run(server, data_dir: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        try:
            report = fit(server.url, EPOCHS, _at(FAULT_AT, server.stop))
        finally:
            server.start()
    _trained_cleanly(report, ports=(server.port,))
    _warning(caplog, "unavailable", "127.0.0.1")
    # README: once the server is back, run `carbon-callbacks spool flush`.
    _cli("spool", "flush", "--ledger", server.url)
    _recovered(server.url, report)


def test_postgres_epochs_table_locked_mid_run(server, data_dir: Path, caplog) -> None:
    import sqlalchemy

    _earlier_run(server.url)  # the tables exist before the lock is taken
    engine = sqlalchemy.create_engine(server.url)
    holder = engine.connect()

    def lock(epoch: int) -> None:
        if epoch == FAULT_AT:
            holder.execute(sqlalchemy.text("LOCK TABLE epochs IN ACCESS EXCLUSIVE MODE"))
        elif epoch == FAULT_AT + 1:
            time.sleep(TIMEOUT + 0.5)  # a long epoch: the blocked write reaches lock_timeout

    try:
        with caplog.at_level(logging.WARNING):
            report = fit(server.url, EPOCHS, lock)
    finally:
        holder.rollback()  # the lock is released
        holder.close()
        engine.dispose()
    _trained_cleanly(report, ports=(server.port,))
    _warning(caplog, "lock timeout")
    _cli("spool", "flush", "--ledger", server.url)
    _recovered(server.url, report)


@contextlib.contextmanager
def _black_hole() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that accepts every connection and never sends a byte."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()


def test_postgres_server_that_never_answers(server, data_dir: Path, caplog) -> None:
    with _black_hole() as port:
        url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        with caplog.at_level(logging.WARNING):
            report = fit(url, EPOCHS)
        _trained_cleanly(report, ports=(port,))
    _warning(caplog, "unavailable", "timeout")
    # README: the records wait in the spool `spool status` names; flush that file into the
    # ledger that is reachable.
    status = _cli("spool", "status", "--ledger", url).stdout
    spool = status.split(" in ", 1)[1].strip()
    assert Path(spool).is_file()
    _cli("spool", "flush", spool, "--ledger", server.url)
    _recovered(server.url, report)


def test_postgres_wrong_password(server, data_dir: Path, caplog) -> None:
    right = server.password_role("ccwriter", "right-pw")
    wrong = right.replace(":right-pw@", ":wrong-pw@")
    with caplog.at_level(logging.WARNING):
        report = fit(wrong, EPOCHS)
    _trained_cleanly(report, ports=(server.port,))
    message = _warning(caplog, "password authentication failed")
    assert "wrong-pw" not in message and "right-pw" not in message
    # README: fix the URL and flush: the spool is named without the password, so it is found.
    _cli("spool", "flush", "--ledger", right)
    _recovered(right, report)
