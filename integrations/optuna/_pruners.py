"""``CarbonPruner``: prunes trials that cannot catch up, are behind at equal CO2e, or over budget.

As Optuna's own pruners, the rule keeps no state and its arithmetic lives in module-level pure
functions; the class reads the trials from the study on every call and wires those together.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.pruners import BasePruner
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState
from typing_extensions import override

from carbon_callbacks.integrations.optuna._reporting import (
    CarbonPoint,
    _is_multi_objective,
    trial_carbon,
)
from carbon_callbacks.integrations.optuna._study import check_storage

logger = logging.getLogger(__name__)


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


def _check_percentile(percentile: Any) -> float:
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float, np.number)):
        raise TypeError(
            f"percentile must be a number in [0, 100] (50: the median), got "
            f"{type(percentile).__name__} {percentile!r}."
        )
    value = float(percentile)
    if not 0.0 <= value <= 100.0 or math.isnan(value):
        raise ValueError(f"percentile must be in [0, 100], got {value:g}.")
    return value


def _check_study_budget(study_budget_g: Any) -> float | None:
    if study_budget_g is None:
        return None
    if isinstance(study_budget_g, bool) or not isinstance(study_budget_g, (int, float, np.number)):
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
    return budget


def _check_forecast_args(
    max_steps: Any, confidence: Any, min_forecast_steps: Any, noise_sds: Any, margin: Any
) -> None:
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


def _spent_g(carbon: Mapping[int, Sequence[CarbonPoint]]) -> float:
    """Grams CO2e of all the trials together, from their parsed points."""
    return sum(max((p.co2_g_total for p in c), default=0.0) for c in carbon.values())


def _saved_g(points: Sequence[CarbonPoint], step: int, max_steps: int) -> float:
    """CO2e the steps after ``step`` would spend at this trial's mean cost per step so far."""
    spent = points[-1].co2_g_total if points else 0.0
    per_step = spent / (step + 1) if step >= 0 else 0.0
    return per_step * (max_steps - 1 - step)


def _values_at_equal_co2(
    completed: Iterable[FrozenTrial],
    carbon: Mapping[int, Sequence[CarbonPoint]],
    maximize: bool,
    co2: float,
) -> list[tuple[int, float]]:
    """(trial number, best value by then) of each completed trial that had spent ``co2``."""
    at_equal: list[tuple[int, float]] = []
    for t in completed:
        value = _value_at(_best_envelope(carbon[t.number], maximize), co2)
        if value is not None:
            at_equal.append((t.number, value))
    return at_equal


def _percentile_bar(values: Sequence[float], percentile: float, maximize: bool) -> float:
    """The value a trial must reach: ``percentile`` counted from the best end."""
    q = 100.0 - percentile if maximize else percentile
    return float(np.percentile(np.asarray(values), q))


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
        self._percentile = _check_percentile(percentile)
        self._study_budget_g = _check_study_budget(study_budget_g)
        for name, count, least in (
            ("n_startup_trials", n_startup_trials, 0),
            ("n_warmup_steps", n_warmup_steps, 0),
            ("n_min_trials", n_min_trials, 1),
        ):
            if isinstance(count, bool) or not isinstance(count, int) or count < least:
                raise ValueError(f"{name} must be an int >= {least}, got {count!r}.")
        check_storage(storage)
        _check_forecast_args(max_steps, confidence, min_forecast_steps, noise_sds, margin)
        self._noise_sds = float(noise_sds)
        self._margin = float(margin)
        self._max_steps = max_steps
        self._equal_co2 = bool(equal_co2)
        self._confidence = float(confidence)
        self._min_forecast_steps = min_forecast_steps
        self._base = base
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
            spent = _spent_g(carbon)
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
        left = _saved_g(carbon.get(trial.number) or [], step, self._max_steps)
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
        at_equal = _values_at_equal_co2(completed, carbon, maximize, co2)
        if len(at_equal) < self._n_min_trials:
            return None
        bar = _percentile_bar([v for _, v in at_equal], self._percentile, maximize)
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
