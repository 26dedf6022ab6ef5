"""Each epoch's record holds the metrics that epoch produced, and no leftovers of an earlier one.

The frameworks keep showing the last validation's metrics through epochs that do not validate
(Lightning's ``callback_metrics``) and the last logged loss through epochs that log none; the
records feed the stopping rules, ``show``, ``plot`` and Optuna, so a leftover would count twice.
"""

from __future__ import annotations

import logging

import pytest

from tests.helpers.seeded_fits import (
    INTENSITY,
    bert_trainer,
    keras_fit,
    lightning_csv_rows,
    lightning_fit,
)

TRACKER_LOG = "carbon_callbacks.tracking.tracker"


def monitor_warnings(caplog, name):
    return [r.getMessage() for r in caplog.records if f"monitor {name!r}" in r.getMessage()]


# ------------------------------------------------------------------ Lightning


def lightning_callback(**kwargs):
    pytest.importorskip("lightning")
    from carbon_callbacks.integrations.lightning import CarbonCallback

    return CarbonCallback(intensity=INTENSITY, **kwargs)


def test_lightning_epochs_without_validation_hold_no_validation_metrics(tmp_path):
    carbon = lightning_callback(monitor="val_acc")
    lightning_fit(tmp_path, [carbon], max_epochs=4, check_val_every_n_epoch=2)

    validated = [r.epoch for r in carbon.records if "val_loss" in r.metrics]
    assert validated == [1, 3]
    assert [r.epoch for r in carbon.records if "val_acc" in r.metrics] == [1, 3]
    assert all("train_loss" in r.metrics for r in carbon.records)
    # Two validations of a model still learning: two different losses, each its own epoch's.
    assert carbon.records[1].metric("val_loss") != carbon.records[3].metric("val_loss")


def test_lightning_records_match_the_validation_rows_the_logger_wrote(tmp_path):
    carbon = lightning_callback()
    trainer = lightning_fit(tmp_path, [carbon], max_epochs=4, check_val_every_n_epoch=2)
    rows = lightning_csv_rows(trainer)
    logged = {int(r["epoch"]): r["val_loss"] for r in rows if "val_loss" in r}
    recorded = {r.epoch: r.metric("val_loss") for r in carbon.records if "val_loss" in r.metrics}
    assert recorded == pytest.approx(logged)


def test_lightning_an_epoch_cut_short_by_max_steps_carries_no_validation(tmp_path):
    carbon = lightning_callback()
    # 4 batches an epoch: epoch 1 stops after 2 and does not validate.
    lightning_fit(tmp_path, [carbon], max_epochs=5, max_steps=6)
    assert [r.epoch for r in carbon.records] == [0, 1]
    assert "val_loss" in carbon.records[0].metrics
    assert "val_loss" not in carbon.records[1].metrics
    assert "train_loss" in carbon.records[1].metrics


def test_lightning_step_metrics_are_kept_when_the_epoch_logged_them(tmp_path):
    carbon = lightning_callback()
    lightning_fit(tmp_path, [carbon], on_step=True, log_every_n_steps=1)
    for record in carbon.records:
        assert {"train_loss_step", "train_loss_epoch"} <= set(record.metrics)
    steps = [r.metric("train_loss_step") for r in carbon.records]
    assert len(set(steps)) == len(steps)  # each epoch's own last step


def test_lightning_monitor_warning_waits_for_the_first_validation(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger=TRACKER_LOG):
        lightning_fit(tmp_path / "a", [lightning_callback(monitor="val_acc")], max_epochs=2,
                      check_val_every_n_epoch=2)
        lightning_fit(tmp_path / "b", [lightning_callback(monitor="val_accuracy")],
                      max_epochs=2, check_val_every_n_epoch=2)
    assert monitor_warnings(caplog, "val_acc") == []
    wrong = monitor_warnings(caplog, "val_accuracy")
    assert len(wrong) == 1
    assert "end of epoch 1" in wrong[0] and "val_acc" in wrong[0] and "val_loss" in wrong[0]


def test_lightning_a_run_that_never_validates_warns_at_its_end(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger=TRACKER_LOG):
        lightning_fit(tmp_path, [lightning_callback(monitor="val_acc")], max_epochs=2,
                      limit_val_batches=0)
    warnings = monitor_warnings(caplog, "val_acc")
    assert len(warnings) == 1 and "any of the run's 2 epochs" in warnings[0]


# ------------------------------------------------------------------ Keras


def test_keras_validation_every_second_epoch_is_recorded_in_those_epochs_only(tmp_path, caplog):
    pytest.importorskip("keras")
    from carbon_callbacks.integrations.keras import CarbonCallback

    carbon = CarbonCallback(intensity=INTENSITY, monitor="val_accuracy")
    with caplog.at_level(logging.WARNING, logger=TRACKER_LOG):
        history, _, _ = keras_fit(tmp_path, [carbon], epochs=4, validation_split=0.25,
                                  validation_freq=2)
    assert [r.epoch for r in carbon.records if "val_loss" in r.metrics] == [1, 3]
    assert [r.metric("val_loss") for r in carbon.records if "val_loss" in r.metrics] == (
        pytest.approx(history["val_loss"])
    )
    assert monitor_warnings(caplog, "val_accuracy") == []


# ------------------------------------------------------------------ transformers


def transformers_callback(**kwargs):
    pytest.importorskip("transformers")
    from carbon_callbacks.integrations.transformers import CarbonCallback

    return CarbonCallback(intensity=INTENSITY, **kwargs)


def test_transformers_an_epoch_that_logs_no_loss_records_none(tmp_path):
    carbon = transformers_callback()
    # 4 steps an epoch, a loss every 4 steps, max_steps 6: epoch 1 stops at step 6, unlogged.
    trainer = bert_trainer(tmp_path, [carbon], logging_strategy="steps", logging_steps=4,
                           max_steps=6)
    trainer.train()
    assert [r.epoch for r in carbon.records] == [0, 1]
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 1
    assert carbon.records[0].metric("loss") == pytest.approx(losses[0])
    assert "loss" not in carbon.records[1].metrics
    assert "grad_norm" not in carbon.records[1].metrics


def test_transformers_records_hold_their_epochs_own_loss_and_evaluation(tmp_path):
    carbon = transformers_callback(monitor="eval_loss")
    trainer = bert_trainer(tmp_path, [carbon], logging_strategy="epoch", eval_strategy="epoch")
    trainer.train()
    history = trainer.state.log_history
    losses = [e["loss"] for e in history if "loss" in e]
    eval_losses = [e["eval_loss"] for e in history if "eval_loss" in e]
    assert [r.metric("loss") for r in carbon.records] == pytest.approx(losses)
    assert [r.metric("eval_loss") for r in carbon.records] == pytest.approx(eval_losses)


def test_transformers_monitor_warning_waits_for_the_first_evaluation(tmp_path, caplog):
    # An evaluation every 8 steps: at the end of epochs 1 and 3 (4 steps an epoch), not 0.
    options = {"eval_strategy": "steps", "eval_steps": 8, "num_train_epochs": 2}
    with caplog.at_level(logging.WARNING, logger=TRACKER_LOG):
        bert_trainer(tmp_path / "a", [transformers_callback(monitor="eval_loss")],
                     **options).train()
        bert_trainer(tmp_path / "b", [transformers_callback(monitor="eval_accuracy")],
                     **options).train()
    assert monitor_warnings(caplog, "eval_loss") == []
    wrong = monitor_warnings(caplog, "eval_accuracy")
    assert len(wrong) == 1 and "end of epoch 1" in wrong[0] and "eval_loss" in wrong[0]
