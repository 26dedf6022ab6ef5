"""Per-step CO2e kept in a trial's user attributes, where every worker can read it back.

``report_carbon`` writes one user attribute per step (``carbon_callbacks/step/<step>`` holding
``[co2_g_total, energy_kwh_total, value]``); the readers below turn a trial's attributes back into
points and totals. Nothing here keeps state: the study's storage is the only record.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.study import Study
from optuna.trial import FrozenTrial

STEP_ATTR_PREFIX = "carbon_callbacks/step/"
"""User-attribute key prefix: one attribute per step, so each stays small in any storage."""


@dataclass(frozen=True)
class CarbonPoint:
    """One step of a trial: cumulative CO2e and energy, and the metric if it was given."""

    step: int
    co2_g_total: float
    energy_kwh_total: float
    value: float | None = None


def _finite_nonneg(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}.") from None
    if math.isnan(number) or math.isinf(number) or number < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
    return number


def _is_multi_objective(study: Study) -> bool:
    return len(study.directions) > 1


def report_carbon(
    trial: optuna.trial.Trial,
    step: int,
    co2_g_total: float,
    energy_kwh_total: float,
    value: float | None = None,
) -> None:
    """Record a trial's cumulative CO2e and energy at a step, readable by every worker.

    Stores ``[co2_g_total, energy_kwh_total, value]`` as the user attribute
    ``carbon_callbacks/step/<step>``. When ``value`` is given and the study has one objective,
    it is also reported with ``trial.report(value, step)`` so any pruner (this module's or
    Optuna's) sees it; in a multi-objective study, where Optuna refuses ``trial.report``, the
    value is kept in the attribute only.

    Args:
        trial: The running trial (``optuna.trial.Trial``).
        step: The step (epoch), an int >= 0, as passed to ``trial.report``.
        co2_g_total: Grams CO2e spent by the trial since it started.
        energy_kwh_total: kWh spent by the trial since it started.
        value: The monitored metric at this step, or None.

    Raises:
        TypeError: When ``trial`` cannot hold user attributes or a figure is not a number.
        ValueError: For a negative step, a negative or non-finite total.
    """
    if not callable(getattr(trial, "set_user_attr", None)):
        raise TypeError(
            f"trial must be an optuna.trial.Trial (got {type(trial).__name__}): pass the "
            "trial that Optuna hands to the objective."
        )
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"step must be an int >= 0, got {step!r}.")
    co2 = _finite_nonneg("co2_g_total", co2_g_total)
    kwh = _finite_nonneg("energy_kwh_total", energy_kwh_total)
    metric: float | None = None
    if value is not None:
        try:
            metric = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"value must be a number, got {type(value).__name__}.") from None
        if math.isnan(metric) or math.isinf(metric):
            # JSON storages differ on NaN; a missing metric is what a NaN means here.
            metric = None
    trial.set_user_attr(f"{STEP_ATTR_PREFIX}{int(step)}", [co2, kwh, metric])
    study = getattr(trial, "study", None)
    if metric is not None and study is not None and not _is_multi_objective(study):
        trial.report(metric, int(step))


def trial_carbon(trial: FrozenTrial | optuna.trial.Trial) -> list[CarbonPoint]:
    """The per-step CO2e a trial reported, oldest step first.

    The metric of each point is the trial's intermediate value at that step when there is one
    (what ``trial.report`` stored), else the value kept in the attribute.
    """
    attrs = trial.user_attrs
    intermediate = getattr(trial, "intermediate_values", {}) or {}
    points = []
    for key, stored in attrs.items():
        if not key.startswith(STEP_ATTR_PREFIX):
            continue
        try:
            step = int(key[len(STEP_ATTR_PREFIX) :])
            co2, kwh, value = stored
        except (TypeError, ValueError):
            continue
        value = intermediate.get(step, value)
        if value is not None and (math.isnan(value) or math.isinf(value)):
            value = None
        points.append(CarbonPoint(step, float(co2), float(kwh), value))
    points.sort(key=lambda p: p.step)
    return points


def trial_co2_g(trial: FrozenTrial | optuna.trial.Trial) -> float:
    """Grams CO2e a trial has reported so far (0 when it reported none).

    Return it as the CO2e objective of a multi-objective study.
    """
    points = trial_carbon(trial)
    return max((p.co2_g_total for p in points), default=0.0)


def trial_energy_kwh(trial: FrozenTrial | optuna.trial.Trial) -> float:
    """kWh a trial has reported so far (0 when it reported none)."""
    points = trial_carbon(trial)
    return max((p.energy_kwh_total for p in points), default=0.0)


def study_co2_g(study: Study) -> float:
    """Grams CO2e of all the study's trials together, in every state and from every worker."""
    return sum(trial_co2_g(t) for t in study.get_trials(deepcopy=False))
