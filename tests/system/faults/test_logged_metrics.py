"""Faults and edges around what the adapters log each epoch: the user's metrics always win.

Real tiny fits: a metric of the user's own under one of our names, a reporter failing on our
keys, an epoch-end log the Trainer announces but skips, an unreadable Trainer, metrics logged in
some epochs only, a meter failing at a mid-epoch validation.
"""

from __future__ import annotations

import logging

import pytest

from carbon_callbacks.tracking.tracker import LOG_KEYS
from tests.helpers.seeded_fits import (
    INTENSITY,
    bert_trainer,
    keras_fit,
    lightning_csv_rows,
    lightning_fit,
)

WARNINGS_FROM = "carbon_callbacks"


def messages(caplog, text):
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


# ------------------------------------------------------------------ a metric under our name


def test_keras_a_model_metric_named_like_ours_keeps_its_values(tmp_path, caplog):
    keras = pytest.importorskip("keras")
    from carbon_callbacks.integrations.keras import CarbonCallback

    def co2_g(y_true, y_pred):  # the model's own "co2_g", unrelated to ours
        return keras.ops.mean(y_pred[:, 0]) * 0.0 + 7.0

    plain, _, _ = keras_fit(tmp_path / "a", [], metrics=(co2_g,), validation_split=0.25)
    carbon = CarbonCallback(intensity=INTENSITY)
    with caplog.at_level(logging.WARNING, logger=WARNINGS_FROM):
        history, _, _ = keras_fit(
            tmp_path / "b", [carbon], metrics=(co2_g,), validation_split=0.25
        )
    assert history["co2_g"] == pytest.approx([7.0, 7.0, 7.0]) == plain["co2_g"]
    assert history["val_co2_g"] == pytest.approx(plain["val_co2_g"])
    assert set(LOG_KEYS) - {"co2_g"} <= set(history)  # the others are logged as ever
    clash = messages(caplog, "logs its own")
    assert len(clash) == 1 and "co2_g" in clash[0] and "prefix=" in clash[0]
    assert carbon.records[0].co2_g > 0 and carbon.records[0].co2_g != 7.0  # ours, in the record


def test_lightning_a_module_metric_named_like_ours_keeps_its_values(tmp_path, caplog):
    pl = pytest.importorskip("lightning.pytorch")
    import torch

    from carbon_callbacks.integrations.lightning import CarbonCallback

    class LogsEnergy(pl.Callback):
        """Stands for a module that logs an "energy_kwh" of its own each epoch."""

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            pl_module.log("energy_kwh", torch.tensor(3.0), on_step=False, on_epoch=True)

    carbon = CarbonCallback(intensity=INTENSITY)
    with caplog.at_level(logging.WARNING, logger=WARNINGS_FROM):
        trainer = lightning_fit(tmp_path, [LogsEnergy(), carbon], val_check_interval=0.5)
    assert float(trainer.callback_metrics["energy_kwh"]) == 3.0
    assert float(trainer.logged_metrics["energy_kwh"]) == 3.0
    rows = lightning_csv_rows(trainer)
    assert {r["energy_kwh"] for r in rows if "energy_kwh" in r} == {3.0}
    ours = [r for r in rows if "co2_g" in r]
    assert len(ours) == 3 and all("energy_kwh_total" in r for r in ours)
    assert len(messages(caplog, "logs its own energy_kwh")) == 1
    assert carbon.records[-1].energy_kwh > 0 and carbon.records[-1].energy_kwh != 3.0


# ------------------------------------------------------------------ transformers edges


def transformers_callback():
    pytest.importorskip("transformers")
    from carbon_callbacks.integrations.transformers import CarbonCallback

    return CarbonCallback(intensity=INTENSITY)


def trainer_entries(history):
    return [e for e in history if not set(LOG_KEYS) & set(e)]


def test_a_reporter_failing_on_our_keys_costs_neither_training_nor_the_trainers_log(
    tmp_path, caplog
):
    transformers = pytest.importorskip("transformers")

    class RefusesOurKeys(transformers.TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if "co2_g" in (logs or {}):
                raise ConnectionError("tracking server gone")

    carbon = transformers_callback()
    trainer = bert_trainer(tmp_path, [RefusesOurKeys(), carbon], logging_strategy="epoch")
    with caplog.at_level(logging.WARNING, logger=WARNINGS_FROM):
        trainer.train()
    assert trainer.state.global_step == 12
    assert [e["epoch"] for e in trainer.state.log_history if "loss" in e] == [1.0, 2.0, 3.0]
    assert len(carbon.records) == 3
    failed = messages(caplog, "logging the energy keys failed")
    assert len(failed) == 1 and "tracking server gone" in failed[0]


def test_an_epoch_end_log_the_trainer_skips_does_not_hold_the_epoch_open(tmp_path):
    # One step an epoch and logging_first_step: the loss of step 1 is logged at the step, so
    # the Trainer skips epoch 0's epoch-end log (nothing new to log); later epochs log.
    options = {
        "logging_strategy": "epoch",
        "logging_first_step": True,
        "per_device_train_batch_size": 32,
    }
    plain = bert_trainer(tmp_path / "a", [], **options)
    plain.train()
    carbon = transformers_callback()
    trainer = bert_trainer(tmp_path / "b", [carbon], **options)
    trainer.train()

    history = trainer.state.log_history
    theirs, without = trainer_entries(history), plain.state.log_history
    assert len(theirs) == len(without)
    for kept, alone in zip(theirs, without, strict=True):
        assert set(kept) == set(alone)
        for key in ("loss", "grad_norm", "learning_rate", "epoch", "step"):
            assert kept.get(key) == pytest.approx(alone.get(key)), key
    ours = [e for e in history if "co2_g" in e]
    assert [e["step"] for e in ours] == [1, 2, 3]
    assert [r.epoch for r in carbon.records] == [0, 1, 2]
    assert [r.metric("loss") is not None for r in carbon.records] == [True, True, True]


def test_when_the_trainers_log_count_cannot_be_read_every_epoch_still_closes(
    tmp_path, monkeypatch
):
    carbon = transformers_callback()
    # As if a future Trainer renamed what tells whether its epoch-end log will happen: the
    # callback waits for a log that the one-step epochs (see above) never send at epoch 0.
    monkeypatch.setattr(type(carbon), "_trainer_logs_now", lambda self, state: True)
    trainer = bert_trainer(tmp_path, [carbon], logging_strategy="epoch",
                           logging_first_step=True, per_device_train_batch_size=32)
    trainer.train()
    assert [r.epoch for r in carbon.records] == [0, 1, 2]
    ours = [e for e in trainer.state.log_history if "co2_g" in e]
    assert len(ours) == 3
    assert sum(e["energy_kwh"] for e in ours) == pytest.approx(
        carbon.tracker.run_window().kwh, rel=1e-6
    )


# ------------------------------------------------------------------ Lightning edges


def test_lightning_a_metric_logged_in_some_epochs_only_is_in_those_records_only(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")

    from carbon_callbacks.integrations.lightning import CarbonCallback

    class LogsInEpochOne(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.current_epoch == 1:
                pl_module.log("warmup_done", 1.0, on_step=False, on_epoch=True)

    carbon = CarbonCallback(intensity=INTENSITY)
    lightning_fit(tmp_path, [LogsInEpochOne(), carbon], max_epochs=4)
    assert [r.epoch for r in carbon.records if "warmup_done" in r.metrics] == [1]


def test_lightning_a_meter_failing_at_a_mid_epoch_validation_warns_once_and_training_finishes(
    tmp_path, caplog
):
    pl = pytest.importorskip("lightning.pytorch")
    from carbon_callbacks.energy.meter import EnergyMeter
    from carbon_callbacks.integrations.lightning import CarbonCallback

    class FailsAfter(EnergyMeter):
        def __init__(self, ok):
            super().__init__()
            self.ok = ok

        def mark(self):
            self.ok -= 1
            if self.ok < 0:
                raise OSError("sensor vanished")
            return super().mark()

    early = pl.callbacks.EarlyStopping(monitor="co2_g_total", mode="max", patience=10)
    # Good marks: fit start, the sanity check (2), epoch 0's first validation start; its
    # epoch-so-far keys are the first read to fail.
    carbon = CarbonCallback(intensity=INTENSITY, meter=FailsAfter(ok=4))
    with caplog.at_level(logging.WARNING, logger=WARNINGS_FROM):
        trainer = lightning_fit(tmp_path, [early, carbon], max_epochs=2, val_check_interval=0.5)
    assert trainer.current_epoch == 2 and len(carbon.records) == 2
    assert len(messages(caplog, "energy meter failed")) == 1
    assert "co2_g_total" in trainer.callback_metrics
