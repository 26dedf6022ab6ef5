"""Real experiment trackers, kept on this machine: an MLflow store in a temp folder, W&B offline.

mlflow and wandb are imported inside the fixtures (mlflow alone takes over a second), so only the
tests that use them pay for it; nothing here opens a socket.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def _mlflow_stores(tmp_path_factory):
    """One SQLite database and one file store for the session: a fresh MLflow database runs its
    migrations (about 3 s), and runs in one store are told apart by their ids."""
    root = tmp_path_factory.mktemp("mlflow")
    return root, {"sqlite": f"sqlite:///{root / 'mlflow.db'}", "file": (root / "mlruns").as_uri()}


@pytest.fixture(params=["sqlite", "file"])
def mlflow_uri(request, _mlflow_stores, monkeypatch):
    """MLflow pointed at a local store: a SQLite backend URI, or the file store.

    MLflow 3 refuses the file store unless MLFLOW_ALLOW_FILE_STORE is set (it is in maintenance
    mode); users who keep ``./mlruns`` set it too.
    """
    mlflow = pytest.importorskip("mlflow")
    root, uris = _mlflow_stores
    uri = uris[request.param]
    # A database store keeps artifacts (MlflowCallback's model summary) in ./mlruns by default.
    monkeypatch.chdir(root)
    if request.param == "file":
        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # mlflow.set_experiment() (transformers' MLflowCallback calls it) keeps the experiment in a
    # module global and in MLFLOW_EXPERIMENT_ID; both would point the next test at another store.
    # Setting each before deleting it makes monkeypatch restore it (absent) after the test.
    for name in ("MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run() is not None:
        mlflow.end_run()


@pytest.fixture
def wandb_dir(tmp_path, monkeypatch):
    """W&B in offline mode: the run is written to ``<dir>/wandb/offline-run-*/run-*.wandb``."""
    wandb = pytest.importorskip("wandb")
    for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    monkeypatch.setenv("WANDB_PROJECT", "carbon-callbacks-tests")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    yield tmp_path
    if wandb.run is not None:
        wandb.finish()
    # wandb reads WANDB_DIR once per process, at its first setup: start afresh for the next test.
    wandb.teardown()
