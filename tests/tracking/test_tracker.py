"""EpochTracker: the per-epoch bookkeeping every adapter shares, checked against known joules."""

from __future__ import annotations

import json
import logging
import time

import pytest

from carbon_callbacks.ledger import Ledger
from carbon_callbacks.policies import CONTINUE, Decision, MarginalGain
from carbon_callbacks.records import JOULES_PER_KWH, ComponentEnergy, Reading, Window
from carbon_callbacks.tracking.tracker import LOG_KEYS, EpochTracker

INTENSITY = 400.0  # g/kWh, fixed so CO2e is energy x 400 exactly


class ScriptedMeter:
    """A meter whose cumulative joules advance by a scripted amount at each ``mark()``.

    Each mark moves the clock 10 s; ``fail_on`` lists mark numbers (1-based) that raise, as a
    sensor dying mid-run would.
    """

    def __init__(self, increments, fail_on=()):
        self.increments = list(increments)
        self.fail_on = set(fail_on)
        self.running = False
        self.marks = 0
        self.cumulative = {"cpu": 0.0, "ram": 0.0}
        self.clock = 1_000_000.0

    def start(self):
        self.running = True
        return self

    def stop(self):
        self.running = False

    def mark(self):
        self.marks += 1
        step = self.increments.pop(0) if self.increments else {}
        for name, joules in step.items():
            self.cumulative[name] += joules
        self.clock += 10.0
        if self.marks in self.fail_on:  # the hardware went on using energy meanwhile
            raise OSError("sensor vanished")
        return Reading(self.clock, self.clock, dict(self.cumulative), seq=self.marks)

    def window(self, a, b):
        components = {}
        for name in b.joules:
            d = b.joules[name] - a.joules.get(name, 0.0)
            components[name] = ComponentEnergy(name, d, 0.9 * d, 1.1 * d, "counter")
        return Window(a.wall, b.wall, b.monotonic - a.monotonic, components)


def J(cpu=0.0, ram=0.0):
    return {"cpu": float(cpu), "ram": float(ram)}


def make(meter, **kwargs):
    kwargs.setdefault("ledger", False)
    return EpochTracker(intensity=INTENSITY, meter=meter, **kwargs)


def test_epoch_windows_hold_the_exact_joules_and_add_up_to_the_run():
    # marks: fit start, end of epoch 0, end of epoch 1
    meter = ScriptedMeter([J(), J(3600, 360), J(7200, 0)])
    tracker = make(meter)
    tracker.fit_start()
    tracker.epoch_start(0)
    r0 = tracker.epoch_end(0, {"val_acc": 0.5})
    tracker.epoch_start(1)
    r1 = tracker.epoch_end(1, {"val_acc": 0.7})

    assert r0.energy_kwh == pytest.approx(3960 / JOULES_PER_KWH, rel=1e-12)
    assert r0.cpu_energy_kwh == pytest.approx(3600 / JOULES_PER_KWH, rel=1e-12)
    assert r0.ram_energy_kwh == pytest.approx(360 / JOULES_PER_KWH, rel=1e-12)
    assert r0.energy_kwh_low == pytest.approx(0.9 * r0.energy_kwh)
    assert r0.power_w == pytest.approx(396.0)  # 3960 J over 10 s
    assert r0.co2_g == pytest.approx(r0.energy_kwh * INTENSITY, rel=1e-9)
    assert r1.energy_kwh == pytest.approx(7200 / JOULES_PER_KWH, rel=1e-12)
    assert r1.energy_kwh_total == pytest.approx(r0.energy_kwh + r1.energy_kwh, rel=1e-12)
    assert r1.co2_g_total == pytest.approx(r0.co2_g + r1.co2_g, rel=1e-12)
    assert r1.start_wall == r0.end_wall  # contiguous windows
    assert r1.metric("val_acc") == 0.7
    assert tracker.run_window().joules == pytest.approx(3960 + 7200)
    summary = tracker.fit_end()
    assert summary.energy_kwh == pytest.approx(11160 / JOULES_PER_KWH, rel=1e-12)
    assert [r.epoch for r in summary.epochs] == [0, 1]
    assert not meter.running  # the tracker started it, so it stops it


def test_evaluation_is_measured_separately_and_counted_in_its_epoch():
    # marks: fit start, eval start, eval end, epoch end
    meter = ScriptedMeter([J(), J(1000), J(500), J(100)])
    tracker = make(meter, prefix="carbon/")
    tracker.fit_start()
    tracker.epoch_start(0)
    tracker.eval_start()
    tracker.eval_end()
    record = tracker.epoch_end(0)
    logged = tracker.log_dict()

    assert record.energy_kwh == pytest.approx(1600 / JOULES_PER_KWH)
    assert logged["carbon/eval_energy_kwh"] == pytest.approx(500 / JOULES_PER_KWH)
    assert set(logged) == {"carbon/" + k for k in LOG_KEYS}
    assert logged["carbon/co2_g_total"] == record.co2_g_total


def test_reduce_sums_every_additive_quantity_across_processes():
    meter = ScriptedMeter([J(), J(3600, 36)])
    tracker = make(meter)
    tracker.fit_start()
    seen = []

    def two_identical_ranks(values):
        seen.append(list(values))
        return [2 * v for v in values]

    record = tracker.epoch_end(0, reduce=two_identical_ranks)
    assert record.energy_kwh == pytest.approx(2 * 3636 / JOULES_PER_KWH)
    assert record.co2_g == pytest.approx(2 * 3636 / JOULES_PER_KWH * INTENSITY)
    assert record.power_w == pytest.approx(2 * 363.6)
    assert record.intensity_g_per_kwh == pytest.approx(INTENSITY)  # not summed
    assert tracker.totals.local_energy_kwh == pytest.approx(3636 / JOULES_PER_KWH)
    assert len(seen) == 1


def test_state_dict_survives_json_and_resumed_totals_continue():
    first = make(ScriptedMeter([J(), J(3600), J(3600)]))
    first.fit_start()
    first.epoch_end(0)
    first.epoch_end(1)
    state = json.loads(json.dumps(first.state_dict()))

    resumed = make(ScriptedMeter([J(), J(1800)]))
    resumed.load_state_dict(state)
    resumed.fit_start()
    record = resumed.epoch_end(2)
    assert record.energy_kwh_total == pytest.approx(9000 / JOULES_PER_KWH)
    assert [r.epoch for r in resumed.records] == [0, 1, 2]
    assert resumed.fit_end().energy_kwh == pytest.approx(9000 / JOULES_PER_KWH)


def test_state_loaded_after_fit_start_is_kept_too():
    # Lightning may restore callbacks after on_fit_start (restore_checkpoint_after_setup).
    first = make(ScriptedMeter([J(), J(3600)]))
    first.fit_start()
    first.epoch_end(0)
    resumed = make(ScriptedMeter([J(), J(3600)]))
    resumed.fit_start()
    resumed.load_state_dict(first.state_dict())
    assert resumed.epoch_end(1).energy_kwh_total == pytest.approx(7200 / JOULES_PER_KWH)


def test_newer_state_version_is_refused_with_the_fix():
    tracker = make(ScriptedMeter([]))
    with pytest.raises(ValueError, match="upgrade carbon-callbacks"):
        tracker.load_state_dict({"version": 99})


class StopAtEpoch:
    """A user-written policy (the Policy protocol): stop once ``epoch`` has ended."""

    monitor = "val_acc"

    def __init__(self, epoch):
        self.epoch = epoch
        self.calls = []

    def decide(self, records):
        self.calls.append(len(records))
        if records[-1].epoch >= self.epoch:
            return Decision(True, f"epoch {records[-1].epoch} reached")
        return CONTINUE


def fit(tracker, epochs, metrics=lambda e: {}):
    """Run one fit() through the tracker as an adapter does; return the epochs trained."""
    tracker.fit_start()
    trained = []
    for epoch in range(epochs):
        tracker.epoch_start(epoch)
        tracker.epoch_end(epoch, metrics(epoch))
        trained.append(epoch)
        if tracker.decide().stop:
            break
    tracker.fit_end()
    return trained


def test_a_second_fit_gives_the_policy_only_its_own_records_and_a_resume_all_of_them():
    policy = StopAtEpoch(99)
    tracker = make(ScriptedMeter([J(100)] * 20), policy=policy)
    assert fit(tracker, 2) == [0, 1]
    assert fit(tracker, 3) == [0, 1, 2]
    assert policy.calls == [1, 2, 1, 2, 3]  # the new run starts from no records

    first = make(ScriptedMeter([J(100)] * 20), policy=StopAtEpoch(99))
    fit(first, 2)
    state = json.loads(json.dumps(first.state_dict()))
    assert "policy" not in state  # the policies keep nothing of their own
    policy = StopAtEpoch(99)
    resumed = make(ScriptedMeter([J(100)] * 20), policy=policy)
    resumed.load_state_dict(state)
    resumed.fit_start()
    resumed.epoch_end(2)
    resumed.decide()
    assert policy.calls == [3]  # the checkpoint's two records and the new one


def test_a_marginal_gain_reused_across_fits_counts_low_epochs_only_when_resumed():
    # Run 1 climbs to epoch 5 and is flat after: its first low fit (one strike) is epoch 7.
    # Run 2 is flat over epochs 1-4 (one strike at epoch 4), then climbs: alone it never stops.
    def run1(epoch):
        return {"val_accuracy": 0.05 * min(epoch, 5)}

    def run2(epoch):
        return {"val_accuracy": 0.1 if 1 <= epoch <= 4 else 0.2 + 0.05 * epoch}

    def gain():
        # Each epoch costs 0.1 g, so the climb of 0.05 per epoch is 500 per kg.
        return MarginalGain("val_accuracy", min_gain_per_kg=100.0, window=3, patience=2)

    tracker = make(ScriptedMeter([J(900)] * 40), policy=gain())
    assert fit(tracker, 8, run1) == list(range(8))  # ends on one strike
    saved = json.loads(json.dumps(tracker.state_dict()))
    assert fit(tracker, 10, run2) == list(range(10))

    # Resumed from run 1's checkpoint, its strike counts: the next flat epoch stops it.
    resumed = make(ScriptedMeter([J(900)] * 40), policy=gain())
    resumed.load_state_dict(saved)
    resumed.fit_start()
    resumed.epoch_end(8, run1(8))
    decision = resumed.decide()
    assert decision.stop and "stopping at epoch 8" in decision.reason


def test_policy_decision_stops_and_the_ledger_records_it(tmp_path):
    path = tmp_path / "ledger.sqlite"
    policy = StopAtEpoch(1)
    tracker = make(ScriptedMeter([J(), J(100), J(200), J(300)]), policy=policy, ledger=str(path))
    tracker.fit_start({"project": "p"})
    decisions = []
    for epoch in range(3):
        tracker.epoch_end(epoch, {"val_acc": 0.1 * epoch})
        decisions.append(tracker.decide())
        if decisions[-1].stop:
            break
    tracker.fit_end()

    assert [d.stop for d in decisions] == [False, True]
    assert policy.calls == [1, 2]  # all records so far, every epoch
    ledger = Ledger.open(path)
    run = ledger.run(tracker.run_id)
    assert run.stopped_early and run.stop_reason == "epoch 1 reached"
    stored = ledger.epochs(tracker.run_id)
    assert [r.energy_kwh for r in stored] == pytest.approx([r.energy_kwh for r in tracker.records])
    assert stored[1].metric("val_acc") == pytest.approx(0.1)


def test_each_epoch_is_in_the_ledger_as_soon_as_it_ends(tmp_path):
    path = tmp_path / "ledger.sqlite"
    tracker = make(ScriptedMeter([J(), J(100), J(200)]), ledger=str(path))
    tracker.fit_start()
    tracker.epoch_end(0)
    assert len(Ledger.open(path).epochs(tracker.run_id)) == 1  # before fit_end
    tracker.epoch_end(1)
    assert len(Ledger.open(path).epochs(tracker.run_id)) == 2


def test_monitor_never_logged_warns_once_naming_the_metrics_that_exist(caplog):
    tracker = make(ScriptedMeter([J(), J(1), J(1)]), monitor="val_accuracy")
    tracker.fit_start()
    with caplog.at_level(logging.WARNING, logger="carbon_callbacks.tracking.tracker"):
        tracker.epoch_end(0, {"val_acc": 0.5, "loss": 1.0})
        tracker.epoch_end(1, {"val_acc": 0.6, "loss": 0.9})
    warnings = [r.getMessage() for r in caplog.records if "monitor" in r.getMessage()]
    assert len(warnings) == 1
    assert "'val_accuracy'" in warnings[0] and "loss, val_acc" in warnings[0]


def test_monitoring_our_own_key_is_not_a_missing_metric(caplog):
    tracker = make(ScriptedMeter([J(), J(1)]), monitor="co2_g_total")
    tracker.fit_start()
    with caplog.at_level(logging.WARNING):
        tracker.epoch_end(0, {})
    assert not [r for r in caplog.records if "monitor" in r.getMessage()]


def test_meter_failure_warns_once_and_the_energy_is_not_lost(caplog):
    # marks: start(ok), epoch0 end(ok), epoch1 end (fails), epoch2 end (fails), epoch3 end (ok)
    meter = ScriptedMeter([J(), J(100), J(200), J(400)], fail_on={3, 4})
    tracker = make(meter)
    tracker.fit_start()
    with caplog.at_level(logging.WARNING, logger="carbon_callbacks.tracking.tracker"):
        records = [tracker.epoch_end(e) for e in range(4)]
    assert [round(r.energy_kwh * JOULES_PER_KWH) for r in records] == [100, 0, 0, 200 + 400]
    assert records[1].methods == {"cpu": "unavailable"}
    assert records[-1].energy_kwh_total == pytest.approx(700 / JOULES_PER_KWH)
    meter_warnings = [r for r in caplog.records if "energy meter failed" in r.getMessage()]
    assert len(meter_warnings) == 1


class BrokenPolicy:
    def decide(self, records):
        raise ZeroDivisionError("oops")


def test_a_broken_policy_warns_once_and_training_goes_on(caplog):
    tracker = make(ScriptedMeter([J(), J(1), J(1)]), policy=BrokenPolicy())
    tracker.fit_start()
    with caplog.at_level(logging.WARNING, logger="carbon_callbacks.tracking.tracker"):
        for epoch in range(2):
            tracker.epoch_end(epoch)
            assert tracker.decide().stop is False
    assert len([r for r in caplog.records if "policy failed" in r.getMessage()]) == 1


class BrokenLedger:
    def start_run(self, metadata):
        return "run-1"

    def add_epoch(self, run_id, record):
        raise OSError("disk full")


def test_a_failing_ledger_never_raises_into_training(caplog):
    tracker = make(ScriptedMeter([J(), J(1), J(1)]), ledger=BrokenLedger())
    tracker.fit_start()
    with caplog.at_level(logging.WARNING, logger="carbon_callbacks.tracking.tracker"):
        tracker.epoch_end(0)
        tracker.epoch_end(1)
    assert len(tracker.records) == 2
    assert len([r for r in caplog.records if "ledger write failed" in r.getMessage()]) == 1


@pytest.mark.parametrize(
    ("kwargs", "error", "named"),
    [
        ({"prefix": 3}, TypeError, "prefix"),
        ({"monitor": ""}, ValueError, "monitor"),
        ({"pue": 0.5}, ValueError, "pue"),
        ({"policy": object()}, TypeError, "policy"),
        ({"meter": object()}, TypeError, "meter"),
        ({"ledger": 3}, TypeError, "ledger"),
        ({"trial": "trial-1"}, TypeError, "trial"),
        ({"metadata": [1]}, TypeError, "metadata"),
        ({"intensity": "ZZ"}, ValueError, "ZZ"),
    ],
)
def test_bad_arguments_fail_at_construction_naming_the_argument(kwargs, error, named):
    with pytest.raises(error, match=named):
        EpochTracker(**kwargs)


def test_optuna_trial_gets_cumulative_co2_and_is_pruned():
    optuna = pytest.importorskip("optuna")
    from carbon_callbacks.integrations._trial import OptunaTrialSink
    from carbon_callbacks.integrations.optuna import trial_co2_g

    class PruneAfterFirstReport(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return len(trial.intermediate_values) >= 2

    study = optuna.create_study(pruner=PruneAfterFirstReport())
    trial = study.ask()
    sink = OptunaTrialSink(trial)
    tracker = make(ScriptedMeter([J(), J(3600), J(3600), J(3600)]), trial=sink, monitor="acc")
    tracker.fit_start()
    stops = []
    for epoch in range(3):
        tracker.epoch_end(epoch, {"acc": 0.5 + epoch / 10})
        stops.append(tracker.decide().stop)
        if stops[-1]:
            break
    assert stops == [False, True]
    assert tracker.pruned and "pruned trial 0 at epoch 1" in tracker.stop_decision.reason
    assert trial_co2_g(trial) == pytest.approx(2 * 3600 / JOULES_PER_KWH * INTENSITY)
    with pytest.raises(optuna.TrialPruned):
        tracker.check_pruned()


def test_real_meter_epochs_add_up_to_the_run_window():
    tracker = EpochTracker(intensity=INTENSITY, ledger=False)
    tracker.fit_start()
    for epoch in range(3):
        tracker.epoch_start(epoch)
        deadline = time.perf_counter() + 0.05
        while time.perf_counter() < deadline:  # busy, so the CPU model sees load
            pass
        tracker.epoch_end(epoch)
    run = tracker.run_window()
    tracker.fit_end()
    per_epoch = sum(r.energy_kwh for r in tracker.records)
    assert run.kwh > 0
    assert per_epoch == pytest.approx(run.kwh, rel=1e-3)
    assert tracker.records[-1].energy_kwh_total == pytest.approx(per_epoch, rel=1e-12)
