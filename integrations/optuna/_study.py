"""Study-wide pieces: the storage check, the study's CO2e budget callback, the Pareto knee."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np
from optuna.storages import BaseStorage
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial

from carbon_callbacks.integrations.optuna._reporting import study_co2_g

logger = logging.getLogger(__name__)

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


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
