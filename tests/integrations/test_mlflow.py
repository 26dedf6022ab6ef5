"""MLflow, end to end: real fits log to a local MLflow store (SQLite and file), read back through
``MlflowClient``, not from our records."""

from __future__ import annotations

import pytest

from carbon_callbacks.policies import CarbonBudget
from carbon_callbacks.tracking import LOG_KEYS
from tests.helpers.tracker_fits import (
    EPOCHS,
    INTENSITY,
    keras_fit,
    lightning_fit,
    transformers_trainer,
)

PREFIX = "carbon/"

# Any real epoch emits more than a picogram, so this budget stops the run after epoch 0.
STOP_AFTER_FIRST_EPOCH = 1e-12


def history(client, run_id, key):
    """``[(step, value)]`` of one metric, in step order."""
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def assert_every_key_every_epoch(client, run_id, carbon, prefix=PREFIX):
    """Each key has one value per epoch, equal to what the callback recorded for that epoch."""
    logged = [carbon.tracker.log_dict(r) for r in carbon.records]
    assert len(logged) == len(carbon.records) > 0
    for key in LOG_KEYS:
        values = [v for _, v in history(client, run_id, prefix + key)]
        assert values == pytest.approx([row[prefix + key] for row in logged], rel=1e-12), key
    return [step for step, _ in history(client, run_id, prefix + "co2_g")]


def assert_run_tags(run, carbon):
    """The run summary is in the run's tags, where MLflow's run table filters and groups."""
    tags = run.data.tags
    summary = carbon.tracker.fit_end()
    assert float(tags["carbon.energy_kwh_total"]) == summary.energy_kwh > 0
    assert float(tags["carbon.co2_g_total"]) == summary.co2_g > 0
    assert float(tags["carbon.intensity_g_per_kwh"]) == pytest.approx(INTENSITY, rel=1e-9)
    assert tags["carbon.intensity_source"] == carbon.records[-1].intensity_source != ""
    assert int(tags["carbon.epochs"]) == len(carbon.records)
    for component, method in carbon.records[-1].methods.items():
        assert tags[f"carbon.method_{component}"] == method
    assert tags["carbon.stopped_early"] == ("true" if summary.stopped_early else "false")
    assert tags["carbon.stop_reason"] == summary.stop_reason
    assert tags["carbon.ledger_run_id"] == summary.run_id != ""


# ---------------------------------------------------------------- Lightning


def test_lightning_mlflow_logger_gets_every_key_at_the_step_of_the_epochs_own_metrics(
    mlflow_uri, tmp_path
):
    from lightning.pytorch.loggers import MLFlowLogger
    from mlflow import MlflowClient

    from carbon_callbacks.integrations.lightning import CarbonCallback

    logger = MLFlowLogger(experiment_name="lightning", tracking_uri=mlflow_uri)
    carbon = CarbonCallback(intensity=INTENSITY, prefix=PREFIX)
    lightning_fit([carbon], logger, root=tmp_path)

    client = MlflowClient(mlflow_uri)
    steps = assert_every_key_every_epoch(client, logger.run_id, carbon)
    assert len(steps) == EPOCHS
    assert steps == [s for s, _ in history(client, logger.run_id, "train_loss")]
    assert steps == [s for s, _ in history(client, logger.run_id, "val_loss")]


def test_lightning_run_tags_hold_the_summary_and_the_run_table_filters_and_sorts_on_them(
    mlflow_uri, tmp_path
):
    from lightning.pytorch.loggers import MLFlowLogger
    from mlflow import MlflowClient

    from carbon_callbacks.integrations.lightning import CarbonCallback

    logger = MLFlowLogger(experiment_name="lightning-tags", tracking_uri=mlflow_uri)
    stopped = CarbonCallback(
        intensity=INTENSITY, prefix=PREFIX, policy=CarbonBudget(max_co2_g=STOP_AFTER_FIRST_EPOCH)
    )
    lightning_fit([stopped], logger, root=tmp_path / "a")
    full_logger = MLFlowLogger(experiment_name="lightning-tags", tracking_uri=mlflow_uri)
    full = CarbonCallback(intensity=INTENSITY, prefix=PREFIX)
    lightning_fit([full], full_logger, root=tmp_path / "b")

    client = MlflowClient(mlflow_uri)
    run = client.get_run(logger.run_id)
    assert_run_tags(run, stopped)
    assert run.data.tags["carbon.stopped_early"] == "true"
    assert "budget" in run.data.tags["carbon.stop_reason"].lower()
    assert_run_tags(client.get_run(full_logger.run_id), full)

    # The columns the run table filters and sorts on (the same search the UI sends).
    experiment = logger.experiment_id
    found = client.search_runs([experiment], "tags.`carbon.stopped_early` = 'true'")
    assert [r.info.run_id for r in found] == [logger.run_id]
    by_co2 = client.search_runs([experiment], order_by=["metrics.`carbon/co2_g_total` DESC"])
    totals = [r.data.metrics["carbon/co2_g_total"] for r in by_co2]
    assert totals == sorted(totals, reverse=True) and len(totals) == 2


def test_pytorch_lightning_namespace_mlflow_logger_gets_the_keys_and_the_tags(
    mlflow_uri, tmp_path
):
    from mlflow import MlflowClient
    from pytorch_lightning.loggers import MLFlowLogger

    from carbon_callbacks.integrations.pytorch_lightning import CarbonCallback

    logger = MLFlowLogger(experiment_name="pytorch-lightning", tracking_uri=mlflow_uri)
    carbon = CarbonCallback(intensity=INTENSITY, prefix=PREFIX)
    lightning_fit([carbon], logger, root=tmp_path, namespace="pytorch_lightning")

    client = MlflowClient(mlflow_uri)
    assert len(assert_every_key_every_epoch(client, logger.run_id, carbon)) == EPOCHS
    assert_run_tags(client.get_run(logger.run_id), carbon)


# ---------------------------------------------------------------- transformers


def test_transformers_report_to_mlflow_gets_every_key_at_the_evaluations_step(
    mlflow_uri, tmp_path, monkeypatch
):
    from mlflow import MlflowClient

    from carbon_callbacks.integrations.transformers import CarbonCallback

    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "transformers")  # read by MLflowCallback
    carbon = CarbonCallback(intensity=INTENSITY, prefix=PREFIX)
    trainer = transformers_trainer([carbon], out=tmp_path / "out", report_to=["mlflow"])
    trainer.train()

    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name("transformers").experiment_id
    (run,) = client.search_runs([experiment])
    run_id = run.info.run_id
    steps = assert_every_key_every_epoch(client, run_id, carbon)
    assert steps == [s for s, _ in history(client, run_id, "eval_loss")] == [4, 8, 12]
    # transformers' MLflowCallback ended its run in its on_train_end, before ours ran;
    # the summary still reached that run, by id.
    assert run.info.status == "FINISHED"
    assert_run_tags(run, carbon)


# ---------------------------------------------------------------- Keras


def test_keras_mlflow_callback_gets_every_key_from_epoch_0(mlflow_uri):
    import mlflow
    from mlflow import MlflowClient

    from carbon_callbacks.integrations.keras import CarbonCallback

    carbon = CarbonCallback(intensity=INTENSITY, prefix=PREFIX)
    with mlflow.start_run() as run:  # MLflow's documented use of its Keras 3 callback
        history_ = keras_fit([mlflow.keras.MlflowCallback(), carbon])

    client = MlflowClient(mlflow_uri)
    steps = assert_every_key_every_epoch(client, run.info.run_id, carbon)
    assert steps == list(range(EPOCHS))
    assert steps == [s for s, _ in history(client, run.info.run_id, "val_accuracy")]
    assert [v for _, v in history(client, run.info.run_id, PREFIX + "co2_g")] == pytest.approx(
        history_.history[PREFIX + "co2_g"], rel=1e-12
    )
    assert_run_tags(client.get_run(run.info.run_id), carbon)


def test_keras_mlflow_autolog_gets_every_key_and_the_run_tags(mlflow_uri):
    import mlflow
    from mlflow import MlflowClient

    from carbon_callbacks.integrations.keras import CarbonCallback

    carbon = CarbonCallback(intensity=INTENSITY, prefix=PREFIX,
                            policy=CarbonBudget(max_co2_g=STOP_AFTER_FIRST_EPOCH))
    mlflow.keras.autolog(log_models=False, log_datasets=False, silent=True)
    try:
        keras_fit([carbon])  # autolog starts a run around fit() and ends it after
    finally:
        mlflow.keras.autolog(disable=True)

    client = MlflowClient(mlflow_uri)
    run = client.get_run(mlflow.last_active_run().info.run_id)
    steps = assert_every_key_every_epoch(client, run.info.run_id, carbon)
    assert steps == [0]
    assert_run_tags(run, carbon)
    assert run.data.tags["carbon.stopped_early"] == "true"
