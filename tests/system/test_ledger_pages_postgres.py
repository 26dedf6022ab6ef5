"""Pages, tag filters and read-only reading on a real PostgreSQL ledger.

Uses the throwaway server of tests/system/test_postgres_ledger.py; skips where PostgreSQL cannot
start.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.helpers.ledger_records import make_record

pytest.importorskip("sqlalchemy", reason="the PostgreSQL ledger needs SQLAlchemy")
pytest.importorskip("psycopg", reason="the PostgreSQL ledger needs psycopg 3")

from carbon_callbacks.ledger import Ledger, LedgerError, LedgerUnavailable  # noqa: E402
from tests.system.test_postgres_ledger import postgres_url  # noqa: E402,F401  (the server fixture)


@pytest.fixture
def fresh_db(postgres_url: str) -> Iterator[str]:  # noqa: F811
    """A new, empty database on the test server (dropped after)."""
    import sqlalchemy

    name = f"pages_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    try:
        yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f"DROP DATABASE {name} WITH (FORCE)"))
        admin.dispose()


def test_postgres_pages_sort_and_filter_as_sqlite_does(fresh_db: str) -> None:
    ledger = Ledger.open(fresh_db)
    for i in range(7):
        run_id = ledger.start_run(
            {"run_id": f"pg{i}", "project": "p", "start_wall": 1e9 + i, "variant": f"v{i % 2}"}
        )
        for e in range(i + 1):
            ledger.add_epoch(run_id, make_record(e, energy_kwh=0.001 * ((i * 5) % 7 + 1)))
        if i % 3 == 0:
            ledger.end_run(run_id, stopped_early=True, stop_reason="budget")
    everything = ledger.runs()
    page = ledger.runs_page(order_by="energy", limit=3, offset=2)
    expected = sorted(everything, key=lambda r: (r.energy_kwh, r.run_id), reverse=True)[2:5]
    assert [r.run_id for r in page.runs] == [r.run_id for r in expected]
    assert list(page.runs) == expected and page.total == 7
    page = ledger.runs_page(order_by="started", descending=False, limit=2, offset=1)
    assert [r.run_id for r in page.runs] == ["pg1", "pg2"]
    page = ledger.runs_page(status="stopped", tags={"variant": "v0"}, limit=10)
    assert sorted(r.run_id for r in page.runs) == ["pg0", "pg6"] and page.total == 2
    ledger.close()


def test_a_read_only_postgres_ledger_is_refused_writes_by_the_server(fresh_db: str) -> None:
    import sqlalchemy

    reader = Ledger.open(fresh_db, read_only=True)
    assert reader.runs() == []  # no schema, and none created
    engine = sqlalchemy.create_engine(fresh_db)
    with engine.connect() as conn:
        assert not sqlalchemy.inspect(conn).has_table("runs")
    engine.dispose()

    writer = Ledger.open(fresh_db)
    writer.start_run({"run_id": "w1", "project": "p"})
    writer.close()
    reader = Ledger.open(fresh_db, read_only=True)
    assert [r.run_id for r in reader.runs()] == ["w1"]
    with pytest.raises(LedgerError, match="read-only"):
        reader.end_run("w1")
    # Even a statement that reaches the server is refused there: the transaction is READ ONLY.
    with pytest.raises(LedgerUnavailable, match="read-only transaction"):
        reader._store.query("DELETE FROM runs RETURNING run_id", {})
    assert [r.run_id for r in Ledger.open(fresh_db).runs()] == ["w1"]
    reader.close()


def test_serve_pages_over_a_read_only_postgres_ledger(fresh_db: str) -> None:
    pytest.importorskip("starlette", reason="serve needs the [serve] extra")
    import urllib.request

    from carbon_callbacks.serve import create_app
    from tests.helpers.serve_ledger import fill_team_ledger, served

    roles = fill_team_ledger(fresh_db, runs=6)
    ledger = Ledger.open(fresh_db, read_only=True)
    stopped = roles["stopped"]
    with served(create_app(ledger)) as url:
        for page in ("/?tag=variant%3Daware", "/runs?sort=co2", f"/runs/{stopped}",
                     f"/compare?run={stopped}"):  # fmt: skip
            with urllib.request.urlopen(url + page, timeout=30) as resp:
                body = resp.read().decode()
                assert resp.status == 200, page
        assert stopped in body
    assert len(Ledger.open(fresh_db).runs()) == 6
    ledger.close()
