"""Where a ledger is, said without its credentials: messages, and the spools named from it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from carbon_callbacks.ledger import Ledger
from carbon_callbacks.ledger.location import check_location, identity, redact

pytest.importorskip("sqlalchemy", reason="database URLs need SQLAlchemy")
pytest.importorskip("psycopg", reason="the PostgreSQL URLs here need psycopg 3")


@pytest.mark.parametrize(
    ("url", "hidden"),
    [
        ("postgresql+psycopg://bob:s3cret@db.example:5432/ledger", "s3cret"),
        ("postgresql://bob:p%40ss@db.example/ledger", "p%40ss"),
        ("postgresql://bob@db.example/ledger?password=s3cret&sslmode=require", "s3cret"),
    ],
)
def test_messages_never_show_a_password(url: str, hidden: str) -> None:
    shown = redact(url)
    assert hidden not in shown and "db.example" in shown and "bob" in shown


def test_a_spool_is_named_by_the_database_not_by_who_connects(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    same = [
        "postgresql://alice:wrong@db.example:5432/ledger",
        "postgresql://alice:right@db.example:5432/ledger",
        "postgresql+psycopg://bob:other@db.example:5432/ledger",
        "postgres://alice:right@db.example:5432/ledger?sslmode=require",
    ]
    assert len({Ledger.open(url).spool_path for url in same}) == 1
    assert "right" not in identity(same[1]) and "alice" not in identity(same[1])
    others = [
        "postgresql://alice:right@db.example:5433/ledger",  # another port
        "postgresql://alice:right@db.example:5432/other",  # another database
        "postgresql://alice:right@replica.example:5432/ledger",  # another host
    ]
    paths = {Ledger.open(url).spool_path for url in others}
    assert len(paths) == 3 and Ledger.open(same[0]).spool_path not in paths


def test_a_sqlite_ledger_is_the_same_from_any_working_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert identity("l.sqlite") == identity(str(tmp_path / "l.sqlite"))
    assert identity("sqlite:///" + str(tmp_path / "l.sqlite")) == os.path.abspath("l.sqlite")


@pytest.mark.parametrize(
    ("location", "error"),
    [
        ("", "empty"),
        ("sqlite://", "has no file path"),
        ("nosuchdb://h/db", "unknown database kind"),
        ("postgresql+pg8000://u@h/db", "'pg8000'"),
    ],
)
def test_check_location_refuses_what_ledger_refuses(location: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        check_location(location)
    with pytest.raises(ValueError, match=error):
        Ledger(location)
