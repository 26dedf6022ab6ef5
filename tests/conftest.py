"""Test-wide isolation: no test writes to the user's real ledger or Keras home."""

from __future__ import annotations

import os
import tempfile

# Keras reads these at import time, so they are set before any test module imports it.
os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("KERAS_HOME", tempfile.mkdtemp(prefix="keras-home-"))
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_ledger(tmp_path_factory, monkeypatch):
    """Point the default ledger at a temp file so tests never touch ~/.local/share."""
    path = tmp_path_factory.mktemp("ledger") / "ledger.sqlite"
    monkeypatch.setenv("CARBON_CALLBACKS_LEDGER", str(path))
    yield path
