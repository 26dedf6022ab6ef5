"""An Optuna worker process for tests/test_optuna.py: one role of a two-worker study.

Roles share only the study's storage, as real workers do:

- ``good``: runs three trials of a small model (10 g CO2e per step) to completion.
- ``bad``: waits, by polling the storage, until three trials are complete, then runs one trial
  of a big model (40 g per step) that is ahead of the small ones at equal steps but behind them
  at equal CO2e, then cheap trials under a ``StudyCarbonBudget`` that counts the other
  worker's CO2e too.

Prints one JSON line with what this worker saw.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from carbon_callbacks.integrations.optuna import (
    CarbonPruner,
    StudyCarbonBudget,
    report_carbon,
)

STEPS = 10
SMALL_G_PER_STEP = 10.0
BIG_G_PER_STEP = 40.0
INTENSITY = 400.0


def small_model_value(step: int, offset: float) -> float:
    """Accuracy of the small model: 0.9 (1 - exp(-c / 30 g)) with c its CO2e so far."""
    return 0.9 * (1 - math.exp(-SMALL_G_PER_STEP * (step + 1) / 30.0)) + offset


def big_model_value(step: int) -> float:
    """Faster per step than the small model (0.57 vs 0.44 at step 1), slower per gram."""
    return 0.9 * (1 - math.exp(-(step + 1) / 2.0))


def open_storage(kind: str, path: str):
    if kind == "rdb":
        return f"sqlite:///{path}"
    return JournalStorage(JournalFileBackend(path))


def pruner() -> CarbonPruner:
    return CarbonPruner(percentile=50.0, n_startup_trials=3, n_warmup_steps=1)


def run_good(study: optuna.Study) -> dict:
    def objective(trial: optuna.Trial) -> float:
        offset = 0.01 * trial.number
        value = 0.0
        for step in range(STEPS):
            value = small_model_value(step, offset)
            co2 = SMALL_G_PER_STEP * (step + 1)
            report_carbon(trial, step, co2, co2 / INTENSITY, value=value)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return value

    study.optimize(objective, n_trials=3)
    return {"completed": len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))}


def run_bad(study: optuna.Study, study_budget_g: float) -> dict:
    waited = 0
    deadline = time.monotonic() + 60
    while len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) < 3:
        if time.monotonic() > deadline:
            raise SystemExit("the other worker never completed its trials")
        waited += 1
        time.sleep(0.05)

    def big(trial: optuna.Trial) -> float:
        trial.set_user_attr("role", "big")
        value = 0.0
        for step in range(STEPS):
            value = big_model_value(step)
            co2 = BIG_G_PER_STEP * (step + 1)
            report_carbon(trial, step, co2, co2 / INTENSITY, value=value)
            if trial.should_prune():
                frozen = study.get_trials(deepcopy=False)[trial.number]
                trial.set_user_attr("why", study.pruner.explain(study, frozen))
                raise optuna.TrialPruned()
        return value

    def cheap(trial: optuna.Trial) -> float:
        trial.set_user_attr("role", "cheap")
        for step in range(2):
            report_carbon(trial, step, 10.0 * (step + 1), 0.0, value=0.95)
        return 0.95

    study.optimize(big, n_trials=1)
    study.optimize(cheap, n_trials=10, callbacks=[StudyCarbonBudget(max_co2_g=study_budget_g)])
    return {"polls_waiting_for_other_worker": waited}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=["rdb", "journal"], required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--study", required=True)
    parser.add_argument("--role", choices=["good", "bad"], required=True)
    parser.add_argument("--study-budget-g", type=float, default=400.0)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(
        study_name=args.study, storage=open_storage(args.kind, args.path), pruner=pruner()
    )
    if args.role == "good":
        result = run_good(study)
    else:
        result = run_bad(study, args.study_budget_g)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
