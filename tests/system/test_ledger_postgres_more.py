"""A team PostgreSQL ledger: read by a role that may only SELECT, and spooled rows it refuses.

Uses the throwaway server of test_postgres_ledger.py; skips where PostgreSQL cannot start.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import pytest

from tests.helpers.ledger_records import make_record

pytest.importorskip("sqlalchemy", reason="the PostgreSQL ledger needs SQLAlchemy")
pytest.importorskip("psycopg", reason="the PostgreSQL ledger needs psycopg 3")

from carbon_callbacks.ledger import Ledger  # noqa: E402
from tests.system.test_postgres_ledger import postgres_url  # noqa: E402,F401  (the server fixture)


def test_a_role_that_may_only_select_can_read_the_ledger(postgres_url: str) -> None:  # noqa: F811
    import sqlalchemy

    writer = Ledger.open(postgres_url)
    run_id = writer.start_run({"project": "read-only-audit"})
    writer.add_epoch(run_id, make_record(0))
    writer.close()

    role = f"reader_{uuid.uuid4().hex[:8]}"
    engine = sqlalchemy.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(f"CREATE ROLE {role} LOGIN"))
        conn.execute(sqlalchemy.text(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"))
    engine.dispose()

    reader = Ledger.open(postgres_url.replace("postgres@", f"{role}@", 1))
    [run] = [r for r in reader.runs() if r.run_id == run_id]
    assert run.project == "read-only-audit" and run.epochs == 1
    assert reader.epochs(run_id) == [make_record(0)]
    reader.close()


def test_spooled_rows_postgresql_refuses_are_set_aside(
    postgres_url: str,  # noqa: F811
    tmp_path: Path,
    caplog,
) -> None:
    ledger = Ledger.open(postgres_url, spool=tmp_path / "s.jsonl")
    run_id = ledger.start_run({"project": "pg-reject"})
    no_run = ledger._epoch_op(run_id, make_record(0))
    no_run["row"]["run_id"] = None  # NOT NULL: refused by the server
    not_a_value = ledger._epoch_op(run_id, make_record(1))
    not_a_value["row"]["metrics"] = {"val_acc": 0.5}  # a mapping: refused by the driver
    good = ledger._epoch_op(run_id, make_record(2))
    ledger.spool_path.write_text(
        "".join(json.dumps(op) + "\n" for op in (no_run, not_a_value, good))
    )
    with caplog.at_level(logging.WARNING, logger="carbon_callbacks.ledger"):
        ledger.add_epoch(run_id, make_record(3))
    assert [e.epoch for e in ledger.epochs(run_id)] == [2, 3]
    assert ledger.spooled() == 0
    rejected = [json.loads(x) for x in (tmp_path / "s.rejected.jsonl").read_text().splitlines()]
    assert rejected == [no_run, not_a_value]
    ledger.close()
