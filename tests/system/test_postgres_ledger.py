"""The team ledger on a real PostgreSQL server started from Debian's packages on 127.0.0.1.

The server is started for this module (``tests/helpers/postgres_server.py``) and stopped after.
Where it cannot be started, the tests skip and say why.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from carbon_callbacks.ledger import SCHEMA_VERSION, Ledger
from tests.helpers.ledger_records import make_record
from tests.helpers.postgres_server import PostgresServer, Unavailable

pytest.importorskip("sqlalchemy", reason="the PostgreSQL ledger needs SQLAlchemy")
pytest.importorskip("psycopg", reason="the PostgreSQL ledger needs psycopg 3")


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    try:
        server = PostgresServer().start()
    except Unavailable as exc:
        pytest.skip(str(exc))
    try:
        yield server.url
    finally:
        server.remove()


def test_postgres_ledger_round_trip(postgres_url: str) -> None:
    ledger = Ledger.open(postgres_url)
    run_id = ledger.start_run(
        {"project": "team-pg", "team": "nlp", "hyperparameters": {"lr": 3e-4}}
    )
    records = [make_record(i, energy_kwh=0.002 * (i + 1)) for i in range(3)]
    for r in records:
        ledger.add_epoch(run_id, r)
    ledger.end_run(run_id, stopped_early=True, stop_reason="budget of 1 g reached")
    ledger.close()

    again = Ledger.open(postgres_url)  # a fresh connection sees what was committed
    assert again.epochs(run_id) == records
    assert list(again.iter_epochs(run_id)) == records  # from a server-side cursor
    run = again.run(run_id)
    assert (run.project, run.team) == ("team-pg", "nlp")
    assert run.hyperparameters == {"lr": 3e-4}
    assert run.stopped_early and run.stop_reason == "budget of 1 g reached"
    assert run.energy_kwh == pytest.approx(0.012)
    import sqlalchemy

    engine = sqlalchemy.create_engine(postgres_url)
    with engine.connect() as conn:
        version = conn.execute(sqlalchemy.text("SELECT MAX(version) FROM schema_version"))
        assert version.scalar() == SCHEMA_VERSION
    engine.dispose()
    again.close()


def test_postgres_spool_is_flushed_when_the_server_is_reachable(
    postgres_url: str, tmp_path: Path
) -> None:
    # Records spooled while the team database was unreachable land there once it is back.
    dead = Ledger.open("postgresql://postgres@127.0.0.1:9/postgres", spool=tmp_path / "s.jsonl")
    run_id = dead.start_run({"project": "offline"})
    dead.add_epoch(run_id, make_record(0))
    assert dead.spooled() == 2
    live = Ledger.open(postgres_url, spool=tmp_path / "s.jsonl")
    assert live.flush_spool() == 2
    assert [e.epoch for e in live.epochs(run_id)] == [0]
    assert live.run(run_id).project == "offline"
    live.close()


def test_two_processes_writing_one_postgres_ledger_lose_nothing(
    postgres_url: str, tmp_path: Path
) -> None:
    import subprocess
    import sys

    worker = Path(__file__).resolve().parents[1] / "helpers" / "ledger_worker.py"
    go = tmp_path / "go"
    n = 100
    procs = [
        subprocess.Popen(
            [sys.executable, str(worker), postgres_url, name, str(n), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("pg-alpha", "pg-beta")
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().startswith("run ")
    go.touch()
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    ledger = Ledger.open(postgres_url)
    for name in ("pg-alpha", "pg-beta"):
        assert [e.epoch for e in ledger.epochs(f"{name}-run")] == list(range(n))
        assert ledger.run(f"{name}-run").finished
    ledger.close()
