"""The contract every training adapter keeps, checked with real tiny fits of each framework.

One suite, parametrised over Lightning, Keras and transformers, so the adapters cannot drift
apart again: the same keys every epoch, a policy's stop and a pruned trial recorded as such,
``check_pruned()`` on each, totals that survive a resume, an exception in ``fit`` that leaves no
meter thread and a ``failed`` run whose partial epoch makes the run add up to what the meter saw,
the framework's own early stopping recorded as ``stopped``, one ledger run per fit, and
evaluation passes after ``fit`` measured as runs of their own.
"""

from __future__ import annotations

import threading
import time

import pytest

from carbon_callbacks.energy.meter import EnergyMeter
from carbon_callbacks.ledger import Ledger
from carbon_callbacks.policies import CONTINUE, Decision
from carbon_callbacks.testing import FakePowercap
from carbon_callbacks.tracking.tracker import LOG_KEYS
from tests.helpers.adapter_fits import BATCHES, DRIVERS, Fault, Step

pytest.importorskip("torch")


def _driver(name):
    modules = {"lightning": "lightning.pytorch", "keras": "keras", "transformers": "transformers"}
    pytest.importorskip(modules[name])
    return DRIVERS[name]()


@pytest.fixture(params=sorted(DRIVERS))
def adapter(request):
    return _driver(request.param)


def meter_threads():
    return [t for t in threading.enumerate() if t.name.startswith("carbon-callbacks-meter")]


def ledger_runs():
    return Ledger.open().runs()  # the test's own ledger (conftest points the default at it)


class StopAtEpoch:
    def __init__(self, epoch):
        self.epoch = epoch

    def decide(self, records):
        if records[-1].epoch >= self.epoch:
            return Decision(True, f"budget of {self.epoch + 1} epochs spent")
        return CONTINUE


def test_every_epoch_logs_the_same_keys_through_the_frameworks_own_channel(adapter, tmp_path):
    fit = adapter.fit(tmp_path, adapter.callback(), epochs=3)
    assert len(fit.logged) == 3
    for entry in fit.logged:
        assert set(LOG_KEYS) <= set(entry)
        assert entry["energy_kwh"] > 0
    assert [r.epoch for r in fit.callback.records] == [0, 1, 2]
    assert sum(e["energy_kwh"] for e in fit.logged) == pytest.approx(
        fit.logged[-1]["energy_kwh_total"], rel=1e-5)


def test_a_policy_stops_training_and_the_run_is_recorded_stopped_by_it(adapter, tmp_path):
    carbon = adapter.callback(policy=StopAtEpoch(1))
    fit = adapter.fit(tmp_path, carbon, epochs=5)
    assert fit.epochs_trained == 2
    [run] = ledger_runs()
    assert (run.status, run.stopped_by) == ("stopped", "policy")
    assert run.stop_reason == "budget of 2 epochs spent"
    assert carbon.end.describe() == "stopped by policy: budget of 2 epochs spent"


def test_a_pruned_trial_raises_from_fit_and_again_from_check_pruned(adapter, tmp_path):
    optuna = pytest.importorskip("optuna")

    class PruneAtSecondReport(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return len(trial.intermediate_values) >= 2

    study = optuna.create_study(pruner=PruneAtSecondReport())
    carbon = adapter.callback(trial=study.ask(), monitor=adapter.monitor)
    with pytest.raises(optuna.TrialPruned):
        adapter.fit(tmp_path, carbon, epochs=5)
    with pytest.raises(optuna.TrialPruned):
        carbon.check_pruned()
    assert [r.epoch for r in carbon.records] == [0, 1]
    [run] = ledger_runs()
    assert (run.status, run.stopped_by) == ("stopped", "pruning")
    assert not meter_threads()


def test_check_pruned_is_silent_when_nothing_was_pruned(adapter, tmp_path):
    carbon = adapter.callback()
    adapter.fit(tmp_path, carbon, epochs=1)
    carbon.check_pruned()  # nothing to raise


def test_totals_survive_a_resume(adapter, tmp_path):
    first = adapter.callback()
    if adapter.name == "keras":  # BackupAndRestore resumes a fit that died in epoch 2
        with pytest.raises(RuntimeError, match="injected"):
            adapter.fit(tmp_path, first, epochs=4, checkpoint=True,
                        step=Step(Fault(epoch=2, batch=0)))
        handle = adapter.last
    else:
        adapter.fit(tmp_path, first, epochs=2, checkpoint=True)
        handle = None
    done = [r for r in first.records if not r.partial]
    first_total = done[-1].energy_kwh_total

    resumed = adapter.callback()
    fit = adapter.fit(tmp_path, resumed, epochs=4, resume=True, handle=handle)
    assert [r.epoch for r in resumed.records] == [0, 1, 2, 3]
    third = resumed.records[2]
    assert third.energy_kwh_total == pytest.approx(first_total + third.energy_kwh, rel=1e-9)
    assert fit.logged[-1]["energy_kwh_total"] == pytest.approx(
        resumed.records[-1].energy_kwh_total, rel=1e-6)
    runs = ledger_runs()
    assert len(runs) == 2 and runs[1].parent_run == runs[0].run_id


def test_an_exception_in_fit_leaves_no_meter_thread_and_a_failed_run_with_its_partial_epoch(
    adapter, tmp_path
):
    before = meter_threads()
    carbon = adapter.callback()
    with pytest.raises(RuntimeError, match="injected failure at epoch 1 batch 2"):
        adapter.fit(tmp_path, carbon, epochs=3, step=Step(Fault(epoch=1, batch=2)))
    assert meter_threads() == before
    [run] = ledger_runs()
    assert run.status == "failed" and run.error_type == "RuntimeError"
    assert run.stop_reason == "injected failure at epoch 1 batch 2"
    records = Ledger.open().epochs(run.run_id)
    assert [(r.epoch, r.partial) for r in records] == [(0, False), (1, True)]
    assert records[1].metrics == {} and records[1].energy_kwh > 0
    assert run.energy_kwh == pytest.approx(carbon.records[-1].energy_kwh_total, rel=1e-9)


def test_a_failed_run_adds_up_to_what_the_meter_and_an_outside_meter_saw(adapter, tmp_path):
    tree = FakePowercap(tmp_path / "powercap")
    package = tree.add_zone("intel-rapl:0", "package-0")
    inner = EnergyMeter(rapl_root=tree.root, scope="machine")
    outside = EnergyMeter(rapl_root=tree.root, scope="machine")
    carbon = adapter.callback(meter=inner)
    fault = Fault(epoch=1, batch=BATCHES - 1)
    with tree.drive({package: 50.0}):  # constant power: energy is proportional to time
        outside.start()
        began = time.time()
        with pytest.raises(RuntimeError, match="injected"):
            adapter.fit(tmp_path, carbon, epochs=3, step=Step(fault, sleep=0.03))
        ended = time.time()
        seen_outside = outside.stop()
    records = carbon.records
    recorded_j = records[-1].energy_kwh_total * 3.6e6
    # The meter the callback started and stopped saw what the records add up to (its stop
    # reading is within one fake counter update, 10 ms or 0.5 J, of the last boundary)...
    assert recorded_j == pytest.approx(inner.last_window.joules, abs=1.0)
    # ...the records run without a gap up to the failure, the partial epoch included...
    assert records[-1].partial and records[-1].end_wall >= fault.fired_at
    assert sum(r.seconds for r in records) == pytest.approx(
        records[-1].end_wall - records[0].start_wall, abs=1e-3)  # monotonic vs wall clock
    # ...and a meter around fit() agrees over that span; the rest of what it saw is the
    # framework's own setup and teardown around our hooks, at the same power.
    covered = records[-1].end_wall - records[0].start_wall
    assert recorded_j == pytest.approx(seen_outside.joules * covered / (ended - began), rel=0.05)


def test_the_frameworks_early_stopping_is_recorded_as_stopped_by_it(adapter, tmp_path):
    fit = adapter.fit(tmp_path, adapter.callback(), epochs=5, early_stopping=True)
    assert fit.epochs_trained == 2
    [run] = ledger_runs()
    assert (run.status, run.stopped_by) == ("stopped", "early_stopping")
    assert "EarlyStopping" in run.stop_reason
    assert fit.callback.end.stopped_by == "early_stopping"


def test_each_fit_is_one_ledger_run_that_ends_completed(adapter, tmp_path):
    first = adapter.fit(tmp_path / "a", adapter.callback(), epochs=2)
    second = adapter.fit(tmp_path / "b", adapter.callback(), epochs=1)
    runs = ledger_runs()
    assert [r.run_id for r in runs] == [first.callback.tracker.run_id,
                                        second.callback.tracker.run_id]
    assert [(r.status, r.epochs, r.kind) for r in runs] == [("completed", 2, "fit"),
                                                            ("completed", 1, "fit")]
    assert not meter_threads()


def test_an_evaluation_pass_after_fit_is_measured_as_a_run_of_its_own(adapter, tmp_path):
    carbon = adapter.callback(measure_eval=True)
    fit = adapter.fit(tmp_path, carbon, epochs=1)
    adapter.evaluate(fit)
    fit_run, evaluation = ledger_runs()
    assert evaluation.kind == ("test" if adapter.name == "lightning" else "evaluate")
    assert evaluation.parent_run == fit_run.run_id and evaluation.status == "completed"
    [record] = Ledger.open().epochs(evaluation.run_id)
    assert record.stage == evaluation.kind and record.energy_kwh > 0
    assert any("loss" in name for name in record.metrics)
    assert carbon.passes == (record,)
    assert len(carbon.records) == 1  # the pass is not a training epoch
    assert not meter_threads()


@pytest.mark.parametrize("name", ["lightning", "keras"])
def test_a_continued_fit_continues_the_totals_and_links_its_run(name, tmp_path):
    adapter = _driver(name)
    carbon = adapter.callback()
    first = adapter.fit(tmp_path, carbon, epochs=2)
    total = carbon.records[-1].energy_kwh_total
    if name == "keras":
        adapter.fit(tmp_path, carbon, epochs=4, handle=first.handle, initial_epoch=2)
    else:  # fit the same trainer again, further
        adapter.fit(tmp_path, carbon, epochs=4, handle=first.handle)
    assert [r.epoch for r in carbon.records] == [0, 1, 2, 3]
    assert carbon.records[2].energy_kwh_total == pytest.approx(
        total + carbon.records[2].energy_kwh, rel=1e-9)
    runs = ledger_runs()
    assert len(runs) == 2 and runs[1].parent_run == runs[0].run_id
    assert [r.epochs for r in runs] == [2, 2]
