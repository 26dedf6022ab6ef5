"""Weights & Biases, end to end and offline: real fits log to an offline run, read back from the
run's ``.wandb`` file (what ``wandb sync`` would upload), not from our records."""

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
from tests.helpers.wandb_records import finish_offline_run, read_offline_run

PREFIX = "carbon/"

# Any real epoch emits more than a picogram, so this budget stops the run after epoch 0.
STOP_AFTER_FIRST_EPOCH = 1e-12


def carbon_rows(run, key_prefix):
    """The history rows holding our keys; each must hold all of them, one row per epoch."""
    rows = run.rows_with(key_prefix + "co2_g")
    for row in rows:
        assert {key_prefix + k for k in LOG_KEYS} <= set(row)
    return rows


def assert_values_are_the_records(rows, carbon, key_prefix, prefix=PREFIX):
    expected = [carbon.tracker.log_dict(r) for r in carbon.records]
    assert len(rows) == len(expected) > 0
    for key in LOG_KEYS:
        logged = [row[key_prefix + key] for row in rows]
        assert logged == pytest.approx([e[prefix + key] for e in expected], rel=1e-12), key


def assert_run_summary(run, carbon):
    """Totals, intensity, methods and the stop reason are in the run summary (the run table)."""
    summary = carbon.tracker.fit_end()
    got = run.summary
    assert got["carbon/energy_kwh_total"] == summary.energy_kwh > 0
    assert got["carbon/co2_g_total"] == summary.co2_g > 0
    assert got["carbon/intensity_g_per_kwh"] == pytest.approx(INTENSITY, rel=1e-9)
    assert got["carbon/intensity_source"] == carbon.records[-1].intensity_source != ""
    assert got["carbon/epochs"] == len(carbon.records)
    for component, method in carbon.records[-1].methods.items():
        assert got[f"carbon/method_{component}"] == method
    assert got["carbon/stopped_early"] is summary.stopped_early
    assert got["carbon/stop_reason"] == summary.stop_reason
    assert got["carbon/ledger_run_id"] == summary.run_id != ""


def sections(rows, key_prefix):
    """The W&B panel sections our keys land in (by default: the name before the first ``/``)."""
    return {(key_prefix + k).split("/")[0] for k in LOG_KEYS if key_prefix + k in rows[0]}


# ---------------------------------------------------------------- Lightning


def test_lightning_wandb_logger_gets_every_key_at_the_step_of_the_epochs_own_metrics(
    wandb_dir, tmp_path
):
    from lightning.pytorch.loggers import WandbLogger

    from carbon_callbacks.integrations.lightning import CarbonCallback

    carbon = CarbonCallback(
        intensity=INTENSITY, prefix=PREFIX, policy=CarbonBudget(max_co2_g=STOP_AFTER_FIRST_EPOCH)
    )
    lightning_fit([carbon], WandbLogger(save_dir=str(wandb_dir), offline=True), root=tmp_path)
    finish_offline_run()

    run = read_offline_run(wandb_dir)
    rows = carbon_rows(run, PREFIX)
    assert_values_are_the_records(rows, carbon, PREFIX)
    assert sections(rows, PREFIX) == {"carbon"}
    steps = [row["trainer/global_step"] for row in rows]
    assert steps == [row["trainer/global_step"] for row in run.rows_with("val_loss")]
    assert steps == [row["trainer/global_step"] for row in run.rows_with("train_loss")]
    assert_run_summary(run, carbon)
    assert run.summary["carbon/stopped_early"] is True
    assert "budget" in run.summary["carbon/stop_reason"].lower()


def test_lightning_wandb_logger_gets_every_epoch_of_a_full_run(wandb_dir, tmp_path):
    from lightning.pytorch.loggers import WandbLogger

    from carbon_callbacks.integrations.lightning import CarbonCallback

    carbon = CarbonCallback(intensity=INTENSITY, prefix=PREFIX)
    lightning_fit([carbon], WandbLogger(save_dir=str(wandb_dir), offline=True), root=tmp_path)
    finish_offline_run()

    run = read_offline_run(wandb_dir)
    rows = carbon_rows(run, PREFIX)
    assert [row["epoch"] for row in rows] == list(range(EPOCHS))
    assert_values_are_the_records(rows, carbon, PREFIX)
    assert_run_summary(run, carbon)
    assert run.summary["carbon/stopped_early"] is False


# ---------------------------------------------------------------- transformers


def test_transformers_report_to_wandb_gets_every_key_each_epoch_under_train(
    wandb_dir, tmp_path
):

    from carbon_callbacks.integrations.transformers import CarbonCallback

    carbon = CarbonCallback(intensity=INTENSITY, prefix=PREFIX)
    transformers_trainer([carbon], out=tmp_path / "out", report_to=["wandb"]).train()
    finish_offline_run()

    run = read_offline_run(wandb_dir)
    # transformers' reporters name every training-log key train/<key> (eval_<key>: eval/<key>),
    # so with prefix "carbon/" all our keys sit together under train/carbon/.
    rows = carbon_rows(run, "train/" + PREFIX)
    assert_values_are_the_records(rows, carbon, "train/" + PREFIX)
    assert not [k for row in run.history for k in row if k.startswith("eval/" + PREFIX)]
    steps = [row["train/global_step"] for row in rows]
    assert steps == [row["train/global_step"] for row in run.rows_with("eval/loss")] == [4, 8, 12]
    assert_run_summary(run, carbon)


# ---------------------------------------------------------------- Keras


def test_keras_epoch_logs_sent_with_wandb_log_have_every_key_from_epoch_0(wandb_dir):
    import keras
    import wandb

    from carbon_callbacks.integrations.keras import CarbonCallback

    # W&B's own Keras callbacks import TensorFlow (wandb issue 7186); on the torch and JAX
    # backends the epoch logs go to W&B with wandb.log, as W&B's docs do for any loop.
    run_ = wandb.init()
    to_wandb = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: run_.log({**logs, "epoch": epoch})
    )
    carbon = CarbonCallback(intensity=INTENSITY, prefix=PREFIX)
    keras_fit([to_wandb, carbon])
    finish_offline_run()

    run = read_offline_run(wandb_dir)
    rows = carbon_rows(run, PREFIX)
    assert [row["epoch"] for row in rows] == list(range(EPOCHS))
    assert all("val_accuracy" in row for row in rows)
    assert_values_are_the_records(rows, carbon, PREFIX)
    assert sections(rows, PREFIX) == {"carbon"}
    assert_run_summary(run, carbon)


def test_keras_wandb_metrics_logger_gets_every_key_from_epoch_0(wandb_dir):
    # WandbMetricsLogger imports TensorFlow even on the torch backend (wandb issue 7186), so
    # the dev extra installs tensorflow-cpu for this test.
    import wandb
    from wandb.integration.keras import WandbMetricsLogger

    from carbon_callbacks.integrations.keras import CarbonCallback

    wandb.init()
    carbon = CarbonCallback(intensity=INTENSITY, prefix=PREFIX)
    keras_fit([WandbMetricsLogger(), carbon])
    finish_offline_run()

    run = read_offline_run(wandb_dir)
    rows = carbon_rows(run, "epoch/" + PREFIX)  # WandbMetricsLogger names every key epoch/<key>
    assert [row["epoch/epoch"] for row in rows] == list(range(EPOCHS))
    assert_values_are_the_records(rows, carbon, "epoch/" + PREFIX)
    assert_run_summary(run, carbon)
