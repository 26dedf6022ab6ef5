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

import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.pruners import BasePruner
from optuna.storages import BaseStorage
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState
from typing_extensions import override

logger = logging.getLogger(__name__)

STEP_ATTR_PREFIX = "carbon_callbacks/step/"
"""User-attribute key prefix: one attribute per step, so each stays small in any storage."""

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


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


def check_storage(storage: Any, argument: str = "storage") -> None:
    """Check that a storage can hold per-step CO2e for every worker to read.

    Args:
        storage: An Optuna storage object or URL, or None (the in-memory default).
        argument: The argument name to use in error messages.

    Raises:
        ValueError: For a storage URL Optuna no longer supports (``redis://``) or a string
            that is not a database URL.
        TypeError: For an object that is not an Optuna storage.
    """
    if storage is None or isinstance(storage, BaseStorage):
        return
    if isinstance(storage, str):
        if storage.startswith("redis"):
            raise ValueError(
                f"{argument}={storage!r}: Optuna has no Redis RDB storage any more; use "
                "optuna.storages.JournalStorage(JournalRedisBackend(url)) instead."
            )
        if not _URL.match(storage):
            raise ValueError(
                f"{argument}={storage!r} is not a database URL; pass e.g. "
                "'sqlite:///study.db', 'postgresql://user@host/db', or a JournalStorage object."
            )
        return
    raise TypeError(
        f"{argument} must be an Optuna storage (RDBStorage, JournalStorage, InMemoryStorage, "
        f"GrpcStorageProxy) or a database URL, got {type(storage).__name__}: per-step CO2e is "
        "kept in trial user attributes, which only an Optuna storage holds for all workers."
    )


def _best_envelope(points: Sequence[CarbonPoint], maximize: bool) -> list[tuple[float, float]]:
    """(co2, best value so far) for the points that carry a metric, in CO2e order."""
    envelope: list[tuple[float, float]] = []
    best: float | None = None
    for p in points:
        if p.value is None:
            continue
        if best is None or (p.value > best if maximize else p.value < best):
            best = p.value
        envelope.append((p.co2_g_total, best))
    return envelope


def _value_at(envelope: Sequence[tuple[float, float]], co2: float) -> float | None:
    """The best value a trial had reached when it had spent ``co2`` grams.

    None when it had not yet reported anything at that spend; past its last step its final
    best holds (it reached that with less CO2e).
    """
    if not envelope or co2 < envelope[0][0]:
        return None
    if co2 >= envelope[-1][0]:
        return envelope[-1][1]
    xs = [c for c, _ in envelope]
    ys = [v for _, v in envelope]
    return float(np.interp(co2, xs, ys))


class CarbonPruner(BasePruner):
    """Prunes trials that cannot catch up, that are behind at equal CO2e, or over the budget.

    Three carbon rules, each on its own switch, plus ``base``:

    - **forecast** (``max_steps`` given): the trial's learning curve is extrapolated to its
      last step with the same ensemble ``DiminishingReturns`` uses
      (``policies._learning_curve``); when even the upper end of the forecast final value's
      interval, plus the validation noise a best-of-epochs adds (``noise_sds``), cannot reach
      the study's current best by ``margin``, the CO2e it would still spend buys
      nothing, and it is pruned. This is what saves a study most: a slow configuration is
      stopped as soon as its curve says it cannot win, not when it falls below a median.
    - **equal CO2e** (``equal_co2=True``): trials with big models spend more per epoch, so
      comparing at equal steps is unfair to the small ones and lenient with the big ones. Each
      trial's best value so far is compared with what the completed trials had reached when
      they had spent the same cumulative CO2e (interpolated between their steps), and pruned
      when worse than the given percentile of them.
    - **study budget**: every running trial is pruned once the whole study (all trials, all
      workers) has spent ``study_budget_g``.

    The pruner keeps no state: each worker builds its own and all data comes from the trials
    in the storage, written by ``report_carbon`` (or a training adapter given ``trial=``).

    Example::

        pruner = CarbonPruner(optuna.pruners.MedianPruner(n_startup_trials=5),
                              percentile=50.0, study_budget_g=1000.0)
        study = optuna.create_study(direction="maximize", storage="sqlite:///s.db",
                                    pruner=pruner)

    Args:
        base: Another pruner consulted first (e.g. ``MedianPruner``); the trial is pruned if
            either says so. None: only the carbon rules.
        percentile: Percentile of the other trials' values at equal CO2e that a trial must
            reach, in [0, 100], as in ``PercentilePruner`` (50: the median; 25: top quarter
            survives).
        study_budget_g: Grams CO2e for the whole study; running trials are pruned once it is
            spent. None: no budget.
        n_startup_trials: Comparing starts once this many trials have completed.
        n_warmup_steps: A trial is not compared before this step.
        n_min_trials: Least number of completed trials whose curves reach this trial's CO2e
            for a comparison to count.
        storage: Optionally, the study's storage (object or URL), checked here so a storage
            that cannot hold per-step CO2e fails at construction.
        max_steps: The steps (epochs) a trial runs when not pruned; turns the forecast rule on.
            None: no forecast.
        equal_co2: Whether the equal-CO2e comparison runs (False: forecast and budget only).
        confidence: Coverage of the forecast interval (0.9: a trial is pruned when its 95th
            percentile final value is below the best).
        min_forecast_steps: Least reported values before a trial's curve is forecast.
        noise_sds: Validation noise (the residual standard deviation of the trial's curve fit)
            added to the forecast's upper bound, in standard deviations: the study's best is a
            best of noisy values, and the trial's would be one too.
        margin: The forecast's reach must fall below the study's best by this much (metric
            units) before the trial is pruned.

    Raises:
        ValueError: For a percentile outside [0, 100], a budget <= 0, a negative count.
        TypeError: For a ``base`` that is not a pruner, a ``storage`` that is not one, or a
            ``percentile``/``study_budget_g`` that is not a number.
    """

    def __init__(
        self,
        base: BasePruner | None = None,
        *,
        percentile: float = 50.0,
        study_budget_g: float | None = None,
        n_startup_trials: int = 5,
        n_warmup_steps: int = 0,
        n_min_trials: int = 1,
        storage: Any = None,
        max_steps: int | None = None,
        equal_co2: bool = True,
        confidence: float = 0.9,
        min_forecast_steps: int = 5,
        noise_sds: float = 2.0,
        margin: float = 0.0,
    ) -> None:
        if base is not None and not isinstance(base, BasePruner):
            raise TypeError(
                f"base must be an optuna.pruners.BasePruner (e.g. MedianPruner()), got "
                f"{type(base).__name__}."
            )
        if isinstance(base, CarbonPruner):
            raise TypeError("base must not be another CarbonPruner; pass its base instead.")
        if isinstance(percentile, bool) or not isinstance(percentile, (int, float, np.number)):
            raise TypeError(
                f"percentile must be a number in [0, 100] (50: the median), got "
                f"{type(percentile).__name__} {percentile!r}."
            )
        percentile = float(percentile)
        if not 0.0 <= percentile <= 100.0 or math.isnan(percentile):
            raise ValueError(f"percentile must be in [0, 100], got {percentile:g}.")
        if study_budget_g is not None:
            if isinstance(study_budget_g, bool) or not isinstance(
                study_budget_g, (int, float, np.number)
            ):
                raise TypeError(
                    f"study_budget_g must be a number of grams CO2e or None, got "
                    f"{type(study_budget_g).__name__} {study_budget_g!r}."
                )
            budget = float(study_budget_g)
            if not budget > 0 or math.isinf(budget):
                raise ValueError(
                    f"study_budget_g must be a finite number > 0 (grams CO2e), got "
                    f"{study_budget_g!r}; pass None for no study budget."
                )
            study_budget_g = budget
        for name, count, least in (
            ("n_startup_trials", n_startup_trials, 0),
            ("n_warmup_steps", n_warmup_steps, 0),
            ("n_min_trials", n_min_trials, 1),
        ):
            if isinstance(count, bool) or not isinstance(count, int) or count < least:
                raise ValueError(f"{name} must be an int >= {least}, got {count!r}.")
        check_storage(storage)
        if max_steps is not None and (
            isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 2
        ):
            raise ValueError(
                f"max_steps must be the int number of steps a trial runs (>= 2), or None for "
                f"no forecast; got {max_steps!r}."
            )
        if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not (
            0.0 < float(confidence) < 1.0
        ):
            raise ValueError(f"confidence must be in (0, 1), e.g. 0.9; got {confidence!r}.")
        if isinstance(min_forecast_steps, bool) or not isinstance(min_forecast_steps, int) or (
            min_forecast_steps < 4
        ):
            raise ValueError(f"min_forecast_steps must be an int >= 4, got {min_forecast_steps!r}.")
        for name, number in (("noise_sds", noise_sds), ("margin", margin)):
            if isinstance(number, bool) or not isinstance(number, (int, float)) or not (
                0.0 <= float(number) < math.inf
            ):
                raise ValueError(f"{name} must be a finite number >= 0, got {number!r}.")
        self._noise_sds = float(noise_sds)
        self._margin = float(margin)
        self._max_steps = max_steps
        self._equal_co2 = bool(equal_co2)
        self._confidence = float(confidence)
        self._min_forecast_steps = min_forecast_steps
        self._base = base
        self._percentile = percentile
        self._study_budget_g = study_budget_g
        self._n_startup_trials = n_startup_trials
        self._n_warmup_steps = n_warmup_steps
        self._n_min_trials = n_min_trials

    @property
    def study_budget_g(self) -> float | None:
        """The study's CO2e budget in grams, or None."""
        return self._study_budget_g

    @override
    def prune(self, study: Study, trial: FrozenTrial) -> bool:
        """True when ``base`` or a carbon rule (see ``explain``) says prune."""
        if self._base is not None and self._base.prune(study, trial):
            return True
        reason = self.explain(study, trial)
        if reason is not None:
            logger.info("Pruning trial %d: %s", trial.number, reason)
            return True
        return False

    def explain(self, study: Study, trial: FrozenTrial) -> str | None:
        """Why the carbon rules prune ``trial`` now, or None when they do not.

        ``base`` is not consulted here.
        """
        others = [t for t in study.get_trials(deepcopy=False) if t.number != trial.number]
        # Each trial's user attributes are parsed once per call: the budget and the comparison
        # both read them, and pruning runs at every step of every trial.
        carbon = {t.number: trial_carbon(t) for t in (trial, *others)}
        if self._study_budget_g is not None:
            spent = sum(max((p.co2_g_total for p in c), default=0.0) for c in carbon.values())
            if spent >= self._study_budget_g:
                return (
                    f"study CO2e budget spent: {spent:.4g} g of {self._study_budget_g:.4g} g "
                    f"across {len(others) + 1} trials"
                )
        if _is_multi_objective(study):
            return None
        if self._max_steps is not None:
            reason = self._cannot_catch_up(study, trial, others, carbon)
            if reason is not None:
                return reason
        if not self._equal_co2:
            return None
        return self._behind_at_equal_co2(study, trial, others, carbon)

    def _cannot_catch_up(
        self,
        study: Study,
        trial: FrozenTrial,
        others: Iterable[FrozenTrial],
        carbon: Mapping[int, Sequence[CarbonPoint]],
    ) -> str | None:
        """Why the trial's forecast final value cannot reach the study's best, or None."""
        step = trial.last_step
        if step is None or step < self._n_warmup_steps or self._max_steps is None:
            return None
        if step >= self._max_steps - 1:
            return None
        values = trial.intermediate_values
        steps = sorted(k for k, v in values.items() if v is not None and math.isfinite(v))
        if len(steps) < self._min_forecast_steps:
            return None
        completed = [
            t.value for t in others if t.state == TrialState.COMPLETE and t.value is not None
        ]
        if len(completed) < max(self._n_startup_trials, 1):
            return None
        maximize = study.direction == StudyDirection.MAXIMIZE
        sign = 1.0 if maximize else -1.0
        best = max(sign * float(value) for value in completed)
        from carbon_callbacks.policies._learning_curve import forecast_curve

        forecast = forecast_curve(
            [s + 1 for s in steps],
            [sign * values[s] for s in steps],
            self._max_steps,
            confidence=self._confidence,
        )
        if forecast is None:
            return None
        # The study's best is the best of noisy validation values, and this trial's final value
        # would be one too: its reach is the curve's upper bound plus what validation noise
        # adds to a best-of-epochs (``noise_sds`` residual standard deviations).
        reach = forecast.level_end_high + self._noise_sds * forecast.noise
        if reach + self._margin >= best:
            return None
        points = carbon.get(trial.number) or []
        spent = points[-1].co2_g_total if points else 0.0
        per_step = spent / (step + 1) if step >= 0 else 0.0
        left = per_step * (self._max_steps - 1 - step)
        return (
            f"forecast final value {sign * forecast.level_end:.4g} ({self._confidence:.0%} "
            f"interval up to {sign * forecast.level_end_high:.4g}, {sign * reach:.4g} with "
            f"validation noise) cannot reach the study's best "
            f"{sign * best:.4g}; pruning saves about {left:.3g} g CO2e of steps "
            f"{step + 1}-{self._max_steps - 1}"
        )

    def _behind_at_equal_co2(
        self,
        study: Study,
        trial: FrozenTrial,
        others: Iterable[FrozenTrial],
        carbon: Mapping[int, Sequence[CarbonPoint]],
    ) -> str | None:
        step = trial.last_step
        if step is None or step < self._n_warmup_steps:
            return None
        maximize = study.direction == StudyDirection.MAXIMIZE
        mine = _best_envelope(carbon[trial.number], maximize)
        if not mine:
            return None
        co2, best = mine[-1]
        completed = [t for t in others if t.state == TrialState.COMPLETE]
        if len(completed) < self._n_startup_trials:
            return None
        at_equal: list[tuple[int, float]] = []
        for t in completed:
            value = _value_at(_best_envelope(carbon[t.number], maximize), co2)
            if value is not None:
                at_equal.append((t.number, value))
        if len(at_equal) < self._n_min_trials:
            return None
        values = np.asarray([v for _, v in at_equal])
        q = 100.0 - self._percentile if maximize else self._percentile
        bar = float(np.percentile(values, q))
        if (best < bar) if maximize else (best > bar):
            return (
                f"best value {best:.4g} at {co2:.4g} g CO2e is {'below' if maximize else 'above'}"
                f" the {self._percentile:g}th percentile ({bar:.4g}) of trials "
                f"{', '.join(str(n) for n, _ in at_equal)} at the same CO2e"
            )
        return None


def should_prune(trial: optuna.trial.Trial) -> bool:
    """``trial.should_prune()`` that also works in multi-objective studies.

    With one objective it is exactly ``trial.should_prune()``. With several, where Optuna
    raises, it asks the study's pruner only if it is a ``CarbonPruner`` (whose CO2e budget
    needs no direction) and returns False otherwise.
    """
    study = trial.study
    if not _is_multi_objective(study):
        return trial.should_prune()
    pruner = study.pruner
    if not isinstance(pruner, CarbonPruner):
        return False
    frozen = next((t for t in study.get_trials(deepcopy=False) if t.number == trial.number), None)
    return frozen is not None and pruner.explain(study, frozen) is not None


class StudyCarbonBudget:
    """A ``study.optimize`` callback that stops the search once all trials reach a CO2e budget.

    It sums the CO2e reported by every trial of the study (all workers, all states) after each
    trial ends and calls ``study.stop()`` when the sum reaches ``max_co2_g``. Every worker
    should pass it: ``study.stop()`` ends only the calling worker's loop. Combine with
    ``CarbonPruner(study_budget_g=...)`` to also prune the trials running when it is reached.

    Example::

        study.optimize(objective, n_trials=100, callbacks=[StudyCarbonBudget(max_co2_g=500.0)])

    Args:
        max_co2_g: Grams CO2e for the whole study (> 0).

    Raises:
        ValueError: For a budget that is not a finite number > 0.
    """

    def __init__(self, max_co2_g: float) -> None:
        try:
            budget = float(max_co2_g)
        except (TypeError, ValueError):
            raise TypeError(
                f"max_co2_g must be a number, got {type(max_co2_g).__name__}."
            ) from None
        if not budget > 0 or math.isinf(budget):
            raise ValueError(
                f"max_co2_g must be a finite number > 0 (grams CO2e), got {max_co2_g!r}."
            )
        self.max_co2_g = budget

    def __call__(self, study: Study, trial: FrozenTrial) -> None:
        """Stop the study's loop in this worker when the budget is spent."""
        spent = study_co2_g(study)
        if spent >= self.max_co2_g:
            logger.info(
                "Study %r spent %.4g g CO2e of its %.4g g budget; stopping.",
                study.study_name,
                spent,
                self.max_co2_g,
            )
            study.stop()


def pareto_knee(
    study: Study,
    *,
    metric_index: int = 0,
    co2_index: int = 1,
    objective: Callable[[FrozenTrial], tuple[float, float]] | None = None,
) -> FrozenTrial:
    """The knee of a (metric, CO2e) Pareto front: the trial where more CO2e stops paying.

    Both objectives are scaled to [0, 1] across the front (0 = best end); the knee is the
    front trial farthest from the straight line joining the front's two ends, i.e. where the
    trade-off bends most (with fewer than three trials, the one nearest the ideal corner).

    Args:
        study: A study with at least two objectives.
        metric_index: Index of the metric among the study's objectives.
        co2_index: Index of the CO2e (or energy) objective.
        objective: Optional function giving ``(metric, co2)`` of a front trial, for studies
            whose values hold them elsewhere; the study's directions still apply.

    Returns:
        The knee trial.

    Raises:
        ValueError: For a single-objective study, bad indices, or no completed trial.
    """
    directions = study.directions
    if len(directions) < 2:
        raise ValueError(
            "pareto_knee needs a multi-objective study, e.g. "
            "optuna.create_study(directions=['maximize', 'minimize']) returning "
            "(metric, trial_co2_g(trial))."
        )
    n = len(directions)
    for name, index in (("metric_index", metric_index), ("co2_index", co2_index)):
        if not 0 <= index < n:
            raise ValueError(f"{name} must be in [0, {n - 1}] for this study, got {index}.")
    if metric_index == co2_index:
        raise ValueError("metric_index and co2_index must differ.")
    front = study.best_trials
    if not front:
        raise ValueError("the study has no completed trial, so it has no Pareto front yet.")

    def pair(t: FrozenTrial) -> tuple[float, float]:
        if objective is not None:
            return objective(t)
        return t.values[metric_index], t.values[co2_index]

    # Losses: lower is better on both axes.
    signs = [
        -1.0 if directions[metric_index] == StudyDirection.MAXIMIZE else 1.0,
        -1.0 if directions[co2_index] == StudyDirection.MAXIMIZE else 1.0,
    ]
    raw = np.asarray([[s * v for s, v in zip(signs, pair(t), strict=True)] for t in front])
    lo, hi = raw.min(axis=0), raw.max(axis=0)
    scaled = (raw - lo) / np.where(hi > lo, hi - lo, 1.0)
    nearest = int(np.argmin(np.hypot(scaled[:, 0], scaled[:, 1])))
    if len(front) < 3:
        return front[nearest]
    # Ends of the front: best metric, and least CO2e.
    a = scaled[int(np.argmin(scaled[:, 0]))]
    b = scaled[int(np.argmin(scaled[:, 1]))]
    chord = b - a
    length = float(np.hypot(*chord))
    if length == 0:
        return front[nearest]

    # Signed distance from the chord, positive on the ideal corner's side; the largest is the
    # knee. A front bulging the other way has no knee: take the trial nearest the ideal.
    def side(points: np.ndarray) -> np.ndarray:
        return (chord[0] * (points[..., 1] - a[1]) - chord[1] * (points[..., 0] - a[0])) / length

    toward_ideal = np.sign(side(np.zeros(2))) or 1.0
    distances = side(scaled) * toward_ideal
    best = int(np.argmax(distances))
    return front[best] if distances[best] > 1e-12 else front[nearest]


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
