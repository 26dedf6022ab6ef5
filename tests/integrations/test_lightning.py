"""Lightning: real fits on a tiny model, asserting on what Lightning's own loggers recorded."""

from __future__ import annotations

import csv
import importlib
import logging

import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch")

from carbon_callbacks.energy.meter import EnergyMeter  # noqa: E402
from carbon_callbacks.integrations.lightning import CarbonCallback  # noqa: E402
from carbon_callbacks.ledger import Ledger  # noqa: E402
from carbon_callbacks.policies import CONTINUE, Decision  # noqa: E402
from carbon_callbacks.tracking.tracker import LOG_KEYS  # noqa: E402

INTENSITY = 56.0


def tiny_module(base, *, epoch_loss=False):
    """A two-feature classifier on the given namespace's LightningModule.

    ``epoch_loss`` also logs the training loss at epoch end (``train_loss_epoch``).
    """

    class Tiny(base):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(8, 2)

        def training_step(self, batch, _):
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self.layer(x), y)
            self.log("train_loss", loss, on_epoch=epoch_loss)
            return loss

        def validation_step(self, batch, _):
            x, y = batch
            logits = self.layer(x)
            self.log("val_loss", torch.nn.functional.cross_entropy(logits, y))
            self.log("val_acc", (logits.argmax(1) == y).float().mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return Tiny()


def loaders():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    data = torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long())
    return (
        torch.utils.data.DataLoader(data, batch_size=16),
        torch.utils.data.DataLoader(data, batch_size=32),
    )


def fit(tmp_path, callbacks, *, namespace="lightning.pytorch", max_epochs=3, logger=None,
        ckpt_path=None, checkpointing=False):
    ns = importlib.import_module(namespace)
    if logger is None:
        logger = ns.loggers.CSVLogger(tmp_path / "logs", name="run")
    trainer = ns.Trainer(
        max_epochs=max_epochs,
        callbacks=callbacks,
        logger=logger,
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=checkpointing,
        default_root_dir=tmp_path,
    )
    train, val = loaders()
    trainer.fit(tiny_module(ns.LightningModule), train, val, ckpt_path=ckpt_path)
    return trainer


def epoch_rows(trainer):
    """CSVLogger rows that carry our keys (Lightning writes one row per logging call)."""
    with open(f"{trainer.logger.log_dir}/metrics.csv") as f:
        return [row for row in csv.DictReader(f) if row.get("co2_g")]


def test_csv_logger_has_every_key_for_every_epoch_and_epochs_add_up(tmp_path):
    carbon = CarbonCallback(intensity=INTENSITY, monitor="val_acc")
    trainer = fit(tmp_path, [carbon])

    rows = epoch_rows(trainer)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    for row in rows:
        for key in LOG_KEYS:
            assert row[key] != "", key
        assert float(row["energy_kwh"]) > 0
        assert float(row["co2_g"]) == pytest.approx(float(row["energy_kwh"]) * INTENSITY, rel=1e-5)
        assert 0 < float(row["evaluation_energy_kwh"]) < float(row["energy_kwh"])
    per_epoch = sum(float(r["energy_kwh"]) for r in rows)
    # The loggers get the float64 values (not float32 tensors): the sum holds to rounding.
    assert per_epoch == pytest.approx(float(rows[-1]["energy_kwh_total"]), rel=1e-9)
    # Independent of the logged totals: one meter window over the whole run.
    assert per_epoch == pytest.approx(carbon.tracker.run_window().kwh, rel=1e-3)
    assert carbon.records[-1].metric("val_acc") is not None


def test_tensorboard_event_files_have_the_keys(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = pl.loggers.TensorBoardLogger(tmp_path / "tb", name="run")
    carbon = CarbonCallback(intensity=INTENSITY)
    fit(tmp_path, [carbon], logger=logger)

    events = EventAccumulator(logger.log_dir)
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"co2_g", "co2_g_total", "energy_kwh", "energy_kwh_total", "power_w"} <= tags
    energies = [e.value for e in events.Scalars("energy_kwh")]
    assert len(energies) == 3
    total = events.Scalars("energy_kwh_total")[-1].value
    assert sum(energies) == pytest.approx(total, rel=1e-3)


def test_early_stopping_can_monitor_co2_g_total(tmp_path):
    # co2_g_total only grows, so in "min" mode it never improves: patience 1 stops at epoch 1.
    early = pl.callbacks.EarlyStopping(monitor="co2_g_total", mode="min", patience=1)
    carbon = CarbonCallback(intensity=INTENSITY)
    trainer = fit(tmp_path, [carbon, early], max_epochs=10)
    assert early.stopped_epoch == 1
    assert len(carbon.records) == 2
    assert trainer.callback_metrics["co2_g_total"].item() == pytest.approx(
        carbon.records[-1].co2_g_total, rel=1e-5
    )


def test_model_checkpoint_can_monitor_co2_g_total(tmp_path):
    best = pl.callbacks.ModelCheckpoint(tmp_path / "ckpt", monitor="co2_g_total", mode="min")
    carbon = CarbonCallback(intensity=INTENSITY)
    fit(tmp_path, [carbon, best], max_epochs=2, checkpointing=True)
    assert best.best_model_score.item() == pytest.approx(carbon.records[0].co2_g_total, rel=1e-5)


class StopAtEpoch:
    def __init__(self, epoch):
        self.epoch = epoch

    def decide(self, records):
        if records[-1].epoch >= self.epoch:
            return Decision(True, f"budget of {self.epoch + 1} epochs spent")
        return CONTINUE


def test_policy_stops_training_and_the_ledger_says_why(tmp_path):
    carbon = CarbonCallback(intensity=INTENSITY, policy=StopAtEpoch(1))
    trainer = fit(tmp_path, [carbon], max_epochs=10)
    assert trainer.current_epoch == 2  # epochs 0 and 1 ran
    assert [r.epoch for r in carbon.records] == [0, 1]
    run = Ledger.open().run(carbon.tracker.run_id)  # the default ledger (env var in conftest)
    assert run.framework == "lightning"
    assert run.methods["cpu"] in ("counter", "polled", "model")
    assert any(line.startswith("cpu:") for line in run.hardware["sensors"])
    assert run.stopped_early and run.stop_reason == "budget of 2 epochs spent"
    assert run.epochs == 2


def test_resume_from_checkpoint_keeps_the_totals(tmp_path):
    saver = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    first = CarbonCallback(intensity=INTENSITY)
    fit(tmp_path, [first, saver], max_epochs=2, checkpointing=True)
    first_total = first.records[-1].energy_kwh_total

    resumed = CarbonCallback(intensity=INTENSITY)
    trainer = fit(tmp_path, [resumed], max_epochs=4, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert [r.epoch for r in resumed.records] == [0, 1, 2, 3]
    third = resumed.records[2]
    assert third.energy_kwh_total == pytest.approx(first_total + third.energy_kwh, rel=1e-9)
    rows = epoch_rows(trainer)
    assert [int(r["epoch"]) for r in rows] == [2, 3]
    assert float(rows[0]["energy_kwh_total"]) > first_total


def test_monitor_never_logged_warns_at_the_first_epoch_naming_what_exists(tmp_path, caplog):
    carbon = CarbonCallback(intensity=INTENSITY, monitor="val_accuracy")
    with caplog.at_level(logging.WARNING, logger="carbon_callbacks.tracking.tracker"):
        fit(tmp_path, [carbon], max_epochs=2)
    warnings = [r.getMessage() for r in caplog.records if "'val_accuracy'" in r.getMessage()]
    assert len(warnings) == 1
    assert "val_acc" in warnings[0] and "val_loss" in warnings[0]


class DyingMeter(EnergyMeter):
    """A real meter whose readings start failing after ``ok`` marks, as a vanished sensor."""

    def __init__(self, ok):
        super().__init__()
        self.ok = ok

    def mark(self):
        self.ok -= 1
        if self.ok < 0:
            raise OSError("powercap zone vanished")
        return super().mark()


def test_a_meter_failing_mid_run_warns_once_and_training_finishes(tmp_path, caplog):
    # 7 good marks: fit start, sanity-check validation (2), epoch 0's validation (start, the
    # keys so far at its end for EarlyStopping, end) and the epoch's end.
    carbon = CarbonCallback(intensity=INTENSITY, meter=DyingMeter(ok=7))
    with caplog.at_level(logging.WARNING, logger="carbon_callbacks.tracking.tracker"):
        trainer = fit(tmp_path, [carbon], max_epochs=3)
    assert trainer.current_epoch == 3
    assert len(epoch_rows(trainer)) == 3
    assert len([r for r in caplog.records if "energy meter failed" in r.getMessage()]) == 1
    assert carbon.records[0].energy_kwh > 0
    assert carbon.records[1].energy_kwh == 0 and carbon.records[1].methods == {"cpu": "unavailable"}


def test_pytorch_lightning_namespace_logs_the_keys(tmp_path):
    pytest.importorskip("pytorch_lightning")
    from carbon_callbacks.integrations.pytorch_lightning import CarbonCallback as PLCallback

    carbon = PLCallback(intensity=INTENSITY)
    trainer = fit(tmp_path, [carbon], namespace="pytorch_lightning", max_epochs=2)
    rows = epoch_rows(trainer)
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert sum(float(r["energy_kwh"]) for r in rows) == pytest.approx(
        float(rows[-1]["energy_kwh_total"]), rel=1e-3
    )
    run = Ledger.open().run(carbon.tracker.run_id)
    assert run.framework == "pytorch_lightning"


def test_the_two_namespaces_have_their_own_callback_classes():
    pytorch_lightning = pytest.importorskip("pytorch_lightning")
    from carbon_callbacks.integrations.pytorch_lightning import CarbonCallback as PLCallback

    assert isinstance(CarbonCallback(intensity=1.0), pl.Callback)
    assert isinstance(PLCallback(intensity=1.0), pytorch_lightning.Callback)
    assert not isinstance(PLCallback(intensity=1.0), pl.Callback)


def test_invalid_arguments_fail_at_construction():
    with pytest.raises(ValueError, match="pue"):
        CarbonCallback(pue=0.2)
    with pytest.raises(TypeError, match="policy"):
        CarbonCallback(policy="stop at 10 g")


def test_an_optuna_trial_gets_per_epoch_co2_and_is_pruned_from_inside_fit(tmp_path):
    optuna = pytest.importorskip("optuna")
    from carbon_callbacks.integrations.optuna import trial_carbon

    class PruneAtSecondReport(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return len(trial.intermediate_values) >= 2

    study = optuna.create_study(direction="maximize", pruner=PruneAtSecondReport())
    trial = study.ask()
    carbon = CarbonCallback(intensity=INTENSITY, trial=trial, monitor="val_acc")
    with pytest.raises(optuna.TrialPruned):
        fit(tmp_path, [carbon], max_epochs=10)
    points = trial_carbon(study.trials[0])
    assert [p.step for p in points] == [0, 1]
    assert [p.co2_g_total for p in points] == pytest.approx(
        [r.co2_g_total for r in carbon.records])
    assert [p.value for p in points] == pytest.approx([r.metric("val_acc") for r in carbon.records])
    assert points[-1].co2_g_total > points[0].co2_g_total > 0


def test_a_study_co2_budget_stops_optimize_after_real_lightning_trials(tmp_path):
    optuna = pytest.importorskip("optuna")
    from carbon_callbacks.integrations.optuna import (
        CarbonPruner,
        StudyCarbonBudget,
        study_co2_g,
        trial_co2_g,
    )

    totals = []

    def objective(trial):
        carbon = CarbonCallback(intensity=INTENSITY, trial=trial, monitor="val_acc")
        trainer = fit(tmp_path / f"t{trial.number}", [carbon], max_epochs=2)
        totals.append(carbon.records[-1].co2_g_total)
        return float(trainer.callback_metrics["val_acc"])

    study = optuna.create_study(
        direction="maximize",
        storage=f"sqlite:///{tmp_path / 'study.db'}",
        pruner=CarbonPruner(optuna.pruners.MedianPruner(n_startup_trials=1)),
    )
    # A budget below one trial's CO2e: the study stops after its first trial.
    study.optimize(objective, n_trials=5, callbacks=[StudyCarbonBudget(max_co2_g=1e-12)])
    assert len(study.trials) == 1
    assert trial_co2_g(study.trials[0]) == pytest.approx(totals[0]) and totals[0] > 1e-12
    assert study_co2_g(study) == pytest.approx(sum(totals))


def test_the_keys_share_lightnings_epoch_row_step_and_stay_out_of_its_per_batch_results(tmp_path):
    carbon = CarbonCallback(intensity=INTENSITY)
    trainer = pl.Trainer(
        max_epochs=3, callbacks=[carbon], logger=pl.loggers.CSVLogger(tmp_path, name="run"),
        accelerator="cpu", devices=1, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False,
    )
    train, _ = loaders()  # no validation: Lightning's epoch row is the training one
    trainer.fit(tiny_module(pl.LightningModule, epoch_loss=True), train)
    with open(f"{trainer.logger.log_dir}/metrics.csv") as f:
        rows = list(csv.DictReader(f))
    ours = [(r["epoch"], r["step"]) for r in rows if r["co2_g"]]
    lightnings = [(r["epoch"], r["step"]) for r in rows if r["train_loss_epoch"]]
    assert ours == lightnings == [("0", "3"), ("1", "7"), ("2", "11")]
    # Lightning scans every key of its training results after each batch; ours are not there.
    logged = {k.split(".")[-1] for k in trainer.fit_loop.epoch_loop._results}
    assert "train_loss" in logged and not logged & set(LOG_KEYS)  # keyed by name, not _epoch
    # ...yet they are where pl_module.log would have put them.
    assert set(LOG_KEYS) <= set(trainer.callback_metrics) and set(LOG_KEYS) <= set(
        trainer.logged_metrics)


class BrokenLogger(pl.loggers.CSVLogger):
    def log_metrics(self, metrics, step=None):
        if "co2_g" in metrics:
            raise OSError("disk full")
        return super().log_metrics(metrics, step)


def test_a_logger_that_fails_on_our_keys_warns_once_and_training_finishes(tmp_path, caplog):
    early = pl.callbacks.EarlyStopping(monitor="co2_g_total", mode="min", patience=10)
    carbon = CarbonCallback(intensity=INTENSITY)
    with caplog.at_level(logging.WARNING, logger="carbon_callbacks.tracking.tracker"):
        trainer = fit(tmp_path, [carbon, early], max_epochs=3,
                      logger=BrokenLogger(tmp_path / "logs", name="run"))
    assert trainer.current_epoch == 3 and len(carbon.records) == 3
    failures = [r.getMessage() for r in caplog.records if "BrokenLogger" in r.getMessage()]
    assert len(failures) == 1 and "disk full" in failures[0]
    # EarlyStopping still read the value from callback_metrics.
    assert early.best_score.item() == pytest.approx(carbon.records[0].co2_g_total, rel=1e-9)


def test_lightning_does_not_call_the_per_batch_hooks_the_callback_has_no_use_for(tmp_path):
    # Lightning times each callback hook call under "[Callback]<state_key>.<hook>".
    profiler = pl.profilers.SimpleProfiler()
    carbon = CarbonCallback(intensity=INTENSITY)
    trainer = pl.Trainer(
        max_epochs=2, callbacks=[carbon], logger=False, profiler=profiler, accelerator="cpu",
        devices=1, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, default_root_dir=tmp_path,
    )
    train, val = loaders()
    trainer.fit(tiny_module(pl.LightningModule), train, val)
    ours = {name.split(".", 1)[1] for name in profiler.recorded_durations
            if name.startswith(f"[Callback]{carbon.state_key}.")}
    assert {"on_fit_start", "on_train_epoch_end", "on_validation_start"} <= ours
    assert not {h for h in ours if "batch" in h or h.startswith(("on_before", "on_after"))}
    assert len(carbon.records) == 2 and carbon.records[-1].energy_kwh > 0
