"""Optuna integration: per-step CO2e on trials, a carbon-fair pruner, study budgets, Pareto knee.

Each Optuna worker builds its own pruner and shares only the study's storage, so everything the
pruner needs lives in the trials themselves: ``report_carbon`` writes one user attribute per
step (``carbon_callbacks/step/<step>`` holding ``[co2_g_total, energy_kwh_total, value]``), which
every worker reads back from the storage (RDB/SQLite, JournalStorage, gRPC proxy, or in-memory
within one process). The training adapters call ``report_carbon`` themselves when given
``trial=``; a hand-written objective calls it after each step.

Single-objective studies::

    import optuna
    from carbon_callbacks.integrations.optuna import CarbonPruner, StudyCarbonBudget, report_carbon

    def objective(trial):
        model = build(trial)
        for step in range(20):
            train_one_epoch(model)
            report_carbon(trial, step, co2_g_total=meter_g(), energy_kwh_total=meter_kwh(),
                          value=accuracy(model))
            if trial.should_prune():
                raise optuna.TrialPruned()
        return accuracy(model)

    study = optuna.create_study(
        direction="maximize",
        storage="sqlite:///search.db",
        pruner=CarbonPruner(optuna.pruners.MedianPruner(), study_budget_g=500.0),
    )
    study.optimize(objective, n_trials=50, callbacks=[StudyCarbonBudget(max_co2_g=500.0)])

Multi-objective studies (metric, CO2e): Optuna refuses ``trial.report`` and
``trial.should_prune`` there (both raise ``NotImplementedError``), so no intermediate value can
be reported and no pruner is consulted. ``report_carbon`` then stores the metric with the
CO2e in the user attribute instead of calling ``trial.report``, and ``should_prune(trial)``
applies the rules that need no single direction (the study's CO2e budget of a
``CarbonPruner``) and returns False otherwise; raise ``optuna.TrialPruned`` yourself when it
says True (Optuna accepts that in multi-objective studies). To end each trial early, give the
training adapter a policy (``MarginalGain``, ``CarbonBudget``); return
``(metric, trial_co2_g(trial))`` from the objective and pick a trial with ``pareto_knee(study)``.
"""

from __future__ import annotations

from carbon_callbacks.integrations.optuna._pruners import CarbonPruner, should_prune
from carbon_callbacks.integrations.optuna._reporting import (
    STEP_ATTR_PREFIX,
    CarbonPoint,
    report_carbon,
    study_co2_g,
    trial_carbon,
    trial_co2_g,
    trial_energy_kwh,
)
from carbon_callbacks.integrations.optuna._study import (
    StudyCarbonBudget,
    check_storage,
    pareto_knee,
)

__all__ = [
    "STEP_ATTR_PREFIX",
    "CarbonPoint",
    "CarbonPruner",
    "StudyCarbonBudget",
    "check_storage",
    "pareto_knee",
    "report_carbon",
    "should_prune",
    "study_co2_g",
    "trial_carbon",
    "trial_co2_g",
    "trial_energy_kwh",
]
