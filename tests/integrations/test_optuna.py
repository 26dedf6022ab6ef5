"""Optuna integration: per-step CO2e in trials, CarbonPruner, study budget, Pareto knee.

The two-worker tests run real worker processes (tests/helpers/optuna_worker.py) on one SQLite RDB
storage and on one JournalStorage file; everything else runs in-process.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.pruners import MedianPruner, NopPruner, ThresholdPruner
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState, create_trial

from carbon_callbacks.integrations.optuna import (
    STEP_ATTR_PREFIX,
    CarbonPruner,
    StudyCarbonBudget,
    pareto_knee,
    report_carbon,
    should_prune,
    study_co2_g,
    trial_carbon,
    trial_co2_g,
)

WORKER = Path(__file__).resolve().parents[1] / "helpers" / "optuna_worker.py"
from tests.helpers import optuna_worker  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)


def finished_trial(values_by_step, g_per_step, state=TrialState.COMPLETE):
    """A finished trial whose metric at step s is values_by_step[s], spending g_per_step."""
    attrs = {
        f"{STEP_ATTR_PREFIX}{s}": [g_per_step * (s + 1), g_per_step * (s + 1) / 400.0, v]
        for s, v in enumerate(values_by_step)
    }
    return create_trial(
        state=state,
        value=values_by_step[-1] if state == TrialState.COMPLETE else None,
        intermediate_values=dict(enumerate(values_by_step)),
        user_attrs=attrs,
    )


def small(step, offset=0.0):
    return optuna_worker.small_model_value(step, offset)


def big(step):
    return optuna_worker.big_model_value(step)


def study_with_small_models(pruner, n=3):
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for i in range(n):
        study.add_trial(finished_trial([small(s, 0.01 * i) for s in range(10)], 10.0))
    return study


def run_steps(study, values, g_per_step):
    """Ask a trial and report steps until the study's pruner says prune; return last step."""
    trial = study.ask()
    for step, value in enumerate(values):
        co2 = g_per_step * (step + 1)
        report_carbon(trial, step, co2, co2 / 400.0, value=value)
        if trial.should_prune():
            return trial, step
    return trial, None


# ------------------------------------------------------------------------- report_carbon


def test_report_carbon_is_readable_by_another_worker_from_rdb_storage(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(storage=url, study_name="s", direction="maximize")
    trial = study.ask()
    report_carbon(trial, 0, 12.5, 0.03, value=0.4)
    report_carbon(trial, 1, 25.0, 0.06, value=0.6)
    report_carbon(trial, 2, 37.5, 0.09)
    # A second worker opens its own storage object on the same database.
    other = optuna.load_study(study_name="s", storage=url)
    (frozen,) = other.get_trials()
    assert frozen.state == TrialState.RUNNING
    assert frozen.intermediate_values == {0: 0.4, 1: 0.6}
    points = trial_carbon(frozen)
    assert [(p.step, p.co2_g_total, p.value) for p in points] == [
        (0, 12.5, 0.4),
        (1, 25.0, 0.6),
        (2, 37.5, None),
    ]
    assert trial_co2_g(frozen) == 37.5 and study_co2_g(other) == 37.5


def test_report_carbon_in_multi_objective_study_keeps_value_without_trial_report():
    study = optuna.create_study(directions=["maximize", "minimize"])
    trial = study.ask()
    with pytest.raises(NotImplementedError):
        trial.report(0.5, 0)  # what Optuna does; report_carbon must not hit it
    report_carbon(trial, 0, 10.0, 0.025, value=0.5)
    (frozen,) = study.get_trials()
    assert frozen.intermediate_values == {}
    assert trial_carbon(frozen)[0].value == 0.5


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((object(), 0, 1.0, 0.1), TypeError, "trial must be an optuna.trial.Trial"),
        (("T", -1, 1.0, 0.1), ValueError, "step must be an int >= 0"),
        (("T", 0, -1.0, 0.1), ValueError, "co2_g_total must be a finite number >= 0"),
        (("T", 0, 1.0, float("inf")), ValueError, "energy_kwh_total"),
        (("T", 0, "a lot", 0.1), TypeError, "co2_g_total must be a number"),
    ],
)
def test_report_carbon_rejects_bad_input(args, error, match):
    trial = optuna.create_study().ask()
    args = tuple(trial if a == "T" else a for a in args)
    with pytest.raises(error, match=match):
        report_carbon(*args)


# --------------------------------------------------------------------------- CarbonPruner


def test_pruner_compares_at_equal_co2_not_equal_step():
    # The big model is ahead of the small ones at step 1 (0.57 vs 0.44-0.46) but, having spent
    # 80 g, far behind what they had reached at 80 g (0.84-0.86).
    study = study_with_small_models(CarbonPruner(n_startup_trials=3, n_warmup_steps=1))
    trial, pruned_at = run_steps(study, [big(s) for s in range(10)], 40.0)
    assert pruned_at == 1
    reason = study.pruner.explain(study, study.get_trials()[trial.number])
    assert "at 80 g CO2e" in reason and "trials 0, 1, 2" in reason
    # MedianPruner, comparing at equal steps, keeps it.
    by_step = study_with_small_models(MedianPruner(n_startup_trials=3, n_warmup_steps=1))
    _, median_pruned_at = run_steps(by_step, [big(s) for s in range(10)], 40.0)
    assert median_pruned_at is None


def test_pruner_keeps_frugal_trial_that_is_behind_at_equal_step():
    # Completed trials are big models; a small model is behind them per step but ahead per gram.
    study = optuna.create_study(
        direction="maximize", pruner=CarbonPruner(n_startup_trials=3, n_warmup_steps=1)
    )
    for _ in range(3):
        study.add_trial(finished_trial([big(s) for s in range(10)], 40.0))
    _, pruned_at = run_steps(study, [small(s) for s in range(10)], 10.0)
    assert pruned_at is None
    by_step = optuna.create_study(
        direction="maximize", pruner=MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    )
    for _ in range(3):
        by_step.add_trial(finished_trial([big(s) for s in range(10)], 40.0))
    _, median_pruned_at = run_steps(by_step, [small(s) for s in range(10)], 10.0)
    assert median_pruned_at == 1


def test_pruner_minimize_direction_and_percentile():
    losses = [[1.0 / (s + 1) + 0.05 * i for s in range(6)] for i in range(4)]
    study = optuna.create_study(
        direction="minimize", pruner=CarbonPruner(percentile=25.0, n_startup_trials=4)
    )
    for curve in losses:
        study.add_trial(finished_trial(curve, 10.0))
    # Same CO2e rate, loss between the 2nd and 3rd best: kept at the median, pruned at 25 %.
    _, pruned_at = run_steps(study, [1.0 / (s + 1) + 0.07 for s in range(6)], 10.0)
    assert pruned_at == 0
    study.pruner = CarbonPruner(percentile=50.0, n_startup_trials=4)
    _, pruned_at = run_steps(study, [1.0 / (s + 1) + 0.07 for s in range(6)], 10.0)
    assert pruned_at is None


def test_pruner_waits_for_startup_trials_and_comparable_trials():
    study = study_with_small_models(CarbonPruner(n_startup_trials=4), n=3)
    _, pruned_at = run_steps(study, [0.0] * 5, 10.0)
    assert pruned_at is None
    # A trial that has spent less than any other trial's first step has nothing to compare to.
    study = study_with_small_models(CarbonPruner(n_startup_trials=3))
    _, pruned_at = run_steps(study, [0.0] * 3, 1.0)
    assert pruned_at is None


def test_pruner_prunes_when_study_budget_is_spent():
    # Three finished trials spent 100 g each; the fourth passes 400 g at its 10th gram-step.
    study = study_with_small_models(CarbonPruner(study_budget_g=400.0, n_startup_trials=99))
    trial, pruned_at = run_steps(study, [0.99] * 20, 20.0)
    assert pruned_at == 4
    assert "study CO2e budget spent: 400 g of 400 g across 4 trials" in study.pruner.explain(
        study, study.get_trials()[trial.number]
    )


def test_pruner_defers_to_base_either_way():
    # Base prunes a trial the carbon rule keeps...
    study = study_with_small_models(CarbonPruner(ThresholdPruner(lower=0.5), n_startup_trials=3))
    _, pruned_at = run_steps(study, [small(s, 0.05) for s in range(10)], 10.0)
    assert pruned_at == 0  # 0.30 < 0.5
    assert study.pruner.explain(study, study.get_trials()[-1]) is None
    # ...and the carbon rule prunes a trial the base keeps.
    study = study_with_small_models(CarbonPruner(NopPruner(), n_startup_trials=3))
    _, pruned_at = run_steps(study, [big(s) for s in range(10)], 40.0)
    assert pruned_at == 0


def test_should_prune_helper_applies_budget_in_multi_objective_study():
    study = optuna.create_study(
        directions=["maximize", "minimize"], pruner=CarbonPruner(study_budget_g=50.0)
    )
    trial = study.ask()
    report_carbon(trial, 0, 30.0, 0.1, value=0.5)
    assert not should_prune(trial)
    report_carbon(trial, 1, 60.0, 0.2, value=0.6)
    assert should_prune(trial)
    # With Optuna's own pruner there is nothing that works without a direction.
    plain = optuna.create_study(directions=["maximize", "minimize"])
    t = plain.ask()
    report_carbon(t, 0, 1e9, 1e6, value=0.1)
    assert not should_prune(t)


def test_explain_parses_each_trials_carbon_once_per_call(monkeypatch):
    # Pruning runs at every step of every trial: the budget and the comparison at equal CO2e
    # both need every trial's per-step attributes, which must be parsed once, not per rule.
    import carbon_callbacks.integrations.optuna._pruners as module

    study = study_with_small_models(
        CarbonPruner(study_budget_g=1e6, n_startup_trials=3, n_warmup_steps=1), n=4
    )
    trial = study.ask()
    for step in range(3):
        report_carbon(trial, step, 40.0 * (step + 1), 0.1 * (step + 1), value=big(step))
    frozen = study.get_trials()[trial.number]
    parsed: list[int] = []
    real = module.trial_carbon

    def counting(t):
        parsed.append(t.number)
        return real(t)

    monkeypatch.setattr(module, "trial_carbon", counting)
    reason = study.pruner.explain(study, frozen)
    assert reason is not None and "trials 0, 1, 2, 3" in reason  # both rules did run
    assert sorted(parsed) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"percentile": 120.0}, ValueError, r"percentile must be in \[0, 100\]"),
        ({"percentile": "median"}, TypeError, r"percentile must be a number in \[0, 100\].*str"),
        ({"percentile": None}, TypeError, "percentile must be a number"),
        ({"study_budget_g": "100 g"}, TypeError, "study_budget_g must be a number"),
        ({"study_budget_g": 0}, ValueError, "study_budget_g must be a finite number > 0"),
        ({"study_budget_g": -3.0}, ValueError, "study_budget_g"),
        ({"n_startup_trials": -1}, ValueError, "n_startup_trials must be an int >= 0"),
        ({"n_min_trials": 0}, ValueError, "n_min_trials must be an int >= 1"),
        ({"base": "median"}, TypeError, "base must be an optuna.pruners.BasePruner"),
        ({"base": CarbonPruner()}, TypeError, "another CarbonPruner"),
        ({"storage": {"url": "sqlite://"}}, TypeError, "storage must be an Optuna storage"),
        ({"storage": "redis://localhost"}, ValueError, "JournalRedisBackend"),
        ({"storage": "study.db"}, ValueError, "is not a database URL"),
    ],
)
def test_pruner_rejects_bad_configuration(kwargs, error, match):
    with pytest.raises(error, match=match):
        CarbonPruner(**kwargs)


def test_pruner_accepts_every_optuna_storage(tmp_path):
    for storage in (
        optuna.storages.InMemoryStorage(),
        f"sqlite:///{tmp_path / 'a.db'}",
        JournalStorage(JournalFileBackend(str(tmp_path / "j.log"))),
    ):
        assert CarbonPruner(storage=storage).study_budget_g is None


# --------------------------------------------------------------------- StudyCarbonBudget


def test_study_budget_callback_stops_optimize():
    def objective(trial):
        for step in range(3):
            report_carbon(trial, step, 10.0 * (step + 1), 0.0, value=0.5)
        return 0.5

    study = optuna.create_study(direction="maximize")
    study.optimize(objective, n_trials=50, callbacks=[StudyCarbonBudget(max_co2_g=100.0)])
    # 30 g per trial: the 4th trial takes the study to 120 g >= 100 g.
    assert len(study.trials) == 4
    assert study_co2_g(study) == pytest.approx(120.0)


@pytest.mark.parametrize("budget", [0, -1.0, float("inf")])
def test_study_budget_rejects_bad_budget(budget):
    with pytest.raises(ValueError, match="max_co2_g must be a finite number > 0"):
        StudyCarbonBudget(max_co2_g=budget)


# ----------------------------------------------------------------------------- Pareto knee


def test_pareto_knee_finds_the_bend_of_a_metric_co2_front():
    # accuracy(c) = 1 - exp(-c / 20) sampled at c = 5..100 g: the bend where more grams stop
    # paying is around c = 20-40 g; both ends of the front are far from it.
    study = optuna.create_study(directions=["maximize", "minimize"])
    for c in range(5, 105, 5):
        study.add_trial(
            create_trial(state=TrialState.COMPLETE, values=[1 - math.exp(-c / 20.0), float(c)])
        )
    knee = pareto_knee(study)
    assert 20.0 <= knee.values[1] <= 40.0
    # Objectives in the other order give the same trial.
    swapped = optuna.create_study(directions=["minimize", "maximize"])
    for t in study.trials:
        swapped.add_trial(create_trial(state=TrialState.COMPLETE, values=t.values[::-1]))
    assert pareto_knee(swapped, metric_index=1, co2_index=0).values == knee.values[::-1]


def test_pareto_knee_errors():
    with pytest.raises(ValueError, match="multi-objective study"):
        pareto_knee(optuna.create_study())
    study = optuna.create_study(directions=["maximize", "minimize"])
    with pytest.raises(ValueError, match="no completed trial"):
        pareto_knee(study)
    with pytest.raises(ValueError, match="co2_index must be in"):
        pareto_knee(study, co2_index=2)


# --------------------------------------------------------------- two worker processes


def _start_worker(kind, path, role):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.Popen(
        [
            sys.executable,
            str(WORKER),
            "--kind",
            kind,
            "--path",
            str(path),
            "--study",
            "two",
            "--role",
            role,
            "--study-budget-g",
            "400",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.mark.parametrize("kind", ["rdb", "journal"])
def test_pruning_in_one_worker_depends_on_the_other_workers_trials(tmp_path, kind):
    path = tmp_path / ("study.db" if kind == "rdb" else "study.log")
    storage = optuna_worker.open_storage(kind, str(path))
    optuna.create_study(study_name="two", storage=storage, direction="maximize")
    # Both start together; the bad worker waits on the storage for the good worker's trials.
    bad = _start_worker(kind, path, "bad")
    good = _start_worker(kind, path, "good")
    outputs = {}
    for name, proc in (("good", good), ("bad", bad)):
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        outputs[name] = json.loads(out.strip().splitlines()[-1])
    assert outputs["good"]["completed"] == 3

    study = optuna.load_study(study_name="two", storage=optuna_worker.open_storage(kind, str(path)))
    trials = study.get_trials()
    small_trials = [t for t in trials if "role" not in t.user_attrs]
    (big_trial,) = [t for t in trials if t.user_attrs.get("role") == "big"]
    cheap = [t for t in trials if t.user_attrs.get("role") == "cheap"]
    assert [t.state for t in small_trials] == [TrialState.COMPLETE] * 3
    # Pruned in the bad worker at step 1, because of the good worker's three trials.
    assert big_trial.state == TrialState.PRUNED
    assert big_trial.last_step == 1
    numbers = ", ".join(str(t.number) for t in small_trials)
    assert f"of trials {numbers} at the same CO2e" in big_trial.user_attrs["why"]
    # At equal steps the big model was ahead: a step-wise median would have kept it.
    assert not MedianPruner(n_startup_trials=3, n_warmup_steps=1).prune(study, big_trial)
    # The bad worker's StudyCarbonBudget counted the good worker's 300 g: 300 + 80 (big) +
    # 20 (one cheap trial) reaches 400 g, so only one of its 10 cheap trials ran.
    assert len(cheap) == 1
    assert study_co2_g(study) == pytest.approx(400.0)


def test_same_bad_trial_alone_is_not_pruned(tmp_path):
    # Control for the two-worker test: without the other worker's trials nothing prunes it.
    study = optuna.create_study(direction="maximize", pruner=optuna_worker.pruner())
    _, pruned_at = run_steps(study, [big(s) for s in range(10)], 40.0)
    assert pruned_at is None


# ------------------------------------------------------------------ CarbonPruner forecast


def saturating(step, top, rate=0.4):
    return top - (top - 0.3) * math.exp(-rate * step)


def forecast_study(**kwargs):
    pruner = CarbonPruner(equal_co2=False, max_steps=30, n_startup_trials=3, **kwargs)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for i in range(3):
        study.add_trial(finished_trial([saturating(s, 0.88 + 0.01 * i) for s in range(30)], 10.0))
    return study


def test_forecast_prunes_a_trial_whose_curve_cannot_reach_the_best():
    study = forecast_study()
    trial, pruned_at = run_steps(study, [saturating(s, 0.7) for s in range(30)], 10.0)
    # Levelling off at 0.70 while the best is 0.90: pruned once five values show the shape.
    assert pruned_at is not None and pruned_at <= 6
    reason = study.pruner.explain(study, study.get_trials()[trial.number])
    assert "cannot reach the study's best 0.9" in reason and "g CO2e" in reason


def test_forecast_keeps_a_slow_starter_that_may_still_win_and_a_leader():
    study = forecast_study()
    # Slow but heading to 0.95: its forecast interval reaches the best.
    _, pruned_at = run_steps(study, [saturating(s, 0.95, rate=0.12) for s in range(30)], 10.0)
    assert pruned_at is None
    _, pruned_at = run_steps(study, [saturating(s, 0.92) for s in range(30)], 10.0)
    assert pruned_at is None


def test_forecast_minimises_a_loss_too():
    pruner = CarbonPruner(equal_co2=False, max_steps=30, n_startup_trials=3)
    study = optuna.create_study(direction="minimize", pruner=pruner)
    for _ in range(3):
        study.add_trial(finished_trial([0.2 + math.exp(-0.4 * s) for s in range(30)], 10.0))
    _, pruned_at = run_steps(study, [0.6 + math.exp(-0.4 * s) for s in range(30)], 10.0)
    assert pruned_at is not None and pruned_at <= 6


def test_forecast_is_off_without_max_steps_and_respects_warmup():
    study = forecast_study()
    study.pruner = CarbonPruner(equal_co2=False, n_startup_trials=3)
    _, pruned_at = run_steps(study, [saturating(s, 0.7) for s in range(30)], 10.0)
    assert pruned_at is None
    study = forecast_study(n_warmup_steps=10)
    _, pruned_at = run_steps(study, [saturating(s, 0.7) for s in range(30)], 10.0)
    assert pruned_at == 10


def test_forecast_counts_validation_noise_before_pruning_a_near_miss():
    # Levelling off at 0.87 with +-0.015 noise while the best is 0.90: the curve alone cannot
    # reach it, but a best-of-noisy-epochs could come close, so only the noise-blind pruner
    # prunes it early.
    rng = random.Random(3)
    values = [saturating(s, 0.87) + rng.gauss(0, 0.015) for s in range(30)]
    blind = forecast_study(noise_sds=0.0)
    _, blind_at = run_steps(blind, values, 10.0)
    noisy = forecast_study()
    _, noisy_at = run_steps(noisy, values, 10.0)
    assert blind_at is not None
    assert noisy_at is None or noisy_at > blind_at


def test_forecast_margin_keeps_trials_within_it():
    study = forecast_study(margin=0.25)
    _, pruned_at = run_steps(study, [saturating(s, 0.7) for s in range(30)], 10.0)
    assert pruned_at is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"noise_sds": -1.0}, "noise_sds must be"),
        ({"margin": float("nan")}, "margin must be"),
        ({"max_steps": 1}, "max_steps must be"),
        ({"confidence": 1.0}, "confidence must be in"),
        ({"min_forecast_steps": 2}, "min_forecast_steps must be"),
    ],
)
def test_forecast_settings_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CarbonPruner(**kwargs)
