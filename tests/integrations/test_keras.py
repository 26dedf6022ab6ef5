"""Keras 3 (torch backend): real fits on a tiny model, asserting on History and CSVLogger."""

from __future__ import annotations

import csv
import logging

import pytest

keras = pytest.importorskip("keras")
np = pytest.importorskip("numpy")

from carbon_callbacks.integrations.keras import CarbonCallback  # noqa: E402
from carbon_callbacks.policies import CONTINUE, Decision  # noqa: E402
from carbon_callbacks.tracking.tracker import LOG_KEYS  # noqa: E402

INTENSITY = 56.0


def tiny_fit(callbacks, epochs=3, validation=True):
    rng = np.random.RandomState(0)
    x = rng.randn(96, 8).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model.fit(
        x,
        y,
        validation_split=0.25 if validation else 0.0,
        epochs=epochs,
        batch_size=16,
        verbose=0,
        callbacks=callbacks,
    )


def test_history_and_csv_logger_have_the_keys_from_epoch_0(tmp_path):
    path = tmp_path / "log.csv"
    carbon = CarbonCallback(intensity=INTENSITY, monitor="val_accuracy")
    # CSVLogger listed first on purpose: the callback moves itself ahead of it.
    history = tiny_fit([keras.callbacks.CSVLogger(str(path)), carbon])

    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    for key in LOG_KEYS:
        assert len(history.history[key]) == 3, key
        assert all(row[key] != "" for row in rows), key
    energies = [float(r["energy_kwh"]) for r in rows]
    assert all(e > 0 for e in energies)
    assert sum(energies) == pytest.approx(float(rows[-1]["energy_kwh_total"]), rel=1e-3)
    assert sum(history.history["energy_kwh"]) == pytest.approx(
        carbon.tracker.run_window().kwh, rel=1e-3
    )
    assert history.history["co2_g"][0] == pytest.approx(energies[0] * INTENSITY, rel=1e-9)
    assert carbon.records[0].metric("val_accuracy") == pytest.approx(
        history.history["val_accuracy"][0]
    )


def test_validation_energy_is_measured_separately(tmp_path):
    history = tiny_fit([CarbonCallback(intensity=INTENSITY)], epochs=2)
    for total, evaluation in zip(
        history.history["energy_kwh"], history.history["evaluation_energy_kwh"], strict=True
    ):
        assert 0 < evaluation < total
    without = tiny_fit([CarbonCallback(intensity=INTENSITY)], epochs=1, validation=False)
    assert without.history["evaluation_energy_kwh"] == [0.0]


def test_early_stopping_can_monitor_co2_g_total():
    # co2_g_total only grows, so in "min" mode it never improves: patience 1 stops at epoch 1.
    early = keras.callbacks.EarlyStopping(monitor="co2_g_total", mode="min", patience=1)
    history = tiny_fit([early, CarbonCallback(intensity=INTENSITY)], epochs=10)
    assert early.stopped_epoch == 1
    assert len(history.history["co2_g_total"]) == 2


class StopAtEpoch:
    def __init__(self, epoch):
        self.epoch = epoch

    def decide(self, records):
        if records[-1].epoch >= self.epoch:
            return Decision(True, "enough")
        return CONTINUE


def test_policy_stops_training_with_stop_training():
    carbon = CarbonCallback(intensity=INTENSITY, policy=StopAtEpoch(1))
    history = tiny_fit([carbon], epochs=10)
    assert len(history.history["loss"]) == 2
    assert carbon.tracker.stop_decision.reason == "enough"


def test_monitor_never_logged_warns_naming_the_logged_metrics(caplog):
    with caplog.at_level(logging.WARNING, logger="carbon_callbacks.tracking.tracker"):
        tiny_fit([CarbonCallback(intensity=INTENSITY, monitor="val_acc")], epochs=2)
    warnings = [r.getMessage() for r in caplog.records if "'val_acc'" in r.getMessage()]
    assert len(warnings) == 1 and "val_accuracy" in warnings[0]


def test_an_optuna_trial_is_pruned_from_inside_fit():
    optuna = pytest.importorskip("optuna")
    from carbon_callbacks.integrations.optuna import trial_carbon

    class PruneAtSecondReport(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return len(trial.intermediate_values) >= 2

    study = optuna.create_study(direction="maximize", pruner=PruneAtSecondReport())
    trial = study.ask()
    carbon = CarbonCallback(intensity=INTENSITY, trial=trial, monitor="val_accuracy")
    with pytest.raises(optuna.TrialPruned, match="pruned trial 0 at epoch 1"):
        tiny_fit([carbon], epochs=10)
    assert len(trial_carbon(trial)) == 2
    assert len(carbon.records) == 2
