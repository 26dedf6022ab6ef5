"""The ledger= argument: a location Ledger() refuses is refused where the callback is built."""

from __future__ import annotations

import pytest

from carbon_callbacks.ledger import Ledger
from carbon_callbacks.tracking.tracker import EpochTracker

BAD = [
    ("sqlite://", "has no file path"),
    ("nosuchdb://host/db", "unknown database kind 'nosuchdb'"),
    # A real dialect whose driver is not installed here.
    ("postgresql+pg8000://user@127.0.0.1/db", "needs the Python package 'pg8000'"),
]


def _ledger_error(location: str) -> str:
    with pytest.raises(ValueError) as info:
        Ledger(location)
    return str(info.value)


@pytest.mark.parametrize(("location", "why"), BAD)
def test_a_location_ledger_refuses_is_refused_by_the_tracker_with_the_same_error(
    location: str, why: str
) -> None:
    expected = _ledger_error(location)
    assert why in expected
    with pytest.raises(ValueError) as info:
        EpochTracker(intensity=400.0, ledger=location)
    assert str(info.value) == expected


def test_a_bad_ledger_in_the_environment_is_refused_at_construction(monkeypatch) -> None:
    monkeypatch.setenv("CARBON_CALLBACKS_LEDGER", "sqlite://")
    with pytest.raises(ValueError, match="has no file path"):
        EpochTracker(intensity=400.0)  # ledger=None: the default ledger
    EpochTracker(intensity=400.0, ledger=False)  # no ledger: nothing to refuse


def test_the_lightning_callback_refuses_a_ledger_url_whose_driver_is_missing() -> None:
    lightning = pytest.importorskip("carbon_callbacks.integrations.lightning")
    with pytest.raises(ValueError, match="pg8000"):
        lightning.CarbonCallback(intensity=400.0, ledger="postgresql+pg8000://u@127.0.0.1/db")


def test_a_server_that_is_down_is_not_refused_at_construction(tmp_path) -> None:
    pytest.importorskip("psycopg")
    # Only what can never work is refused; an unreachable server is a run-time matter (spool).
    EpochTracker(intensity=400.0, ledger="postgresql://u:p@127.0.0.1:9/db")
    EpochTracker(intensity=400.0, ledger=str(tmp_path / "not-yet-created.sqlite"))
