"""Two checks on a recent stretch of a validation curve that need no curve model.

- ``turned``: has the curve turned the wrong way (a loss rising, an accuracy falling), with a
  stated confidence? A Mann-Kendall trend test (the sign of every pair of points, so one noisy
  epoch cannot swing it, and no noise model to estimate) on the last ``window`` epochs, one
  sided. Saturating curve families cannot represent a decline, so overfitting is caught here.
- ``epochs_without_improvement``: Lightning's ``EarlyStopping`` wait count (an epoch improves
  when it beats the best so far), the patience net of ``DiminishingReturns``.

Both are pure functions of a list of values; each costs O(window) or O(n) with tiny constants.
``patience_stop`` and ``turn_stop`` turn them into ``DiminishingReturns``'s decisions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

from carbon_callbacks.policies._base import Decision, best_epoch
from carbon_callbacks.policies.metric_names import metric_direction
from carbon_callbacks.records import EpochRecord


def mann_kendall_z(values: Sequence[float]) -> float:
    """The Mann-Kendall statistic of ``values`` as a z-score (> 0: an upward trend).

    ``S`` counts the pairs (i < j) with ``values[j] > values[i]`` minus those with
    ``values[j] < values[i]``; under no trend, with no ties, its variance is
    ``n(n-1)(2n+5)/18``, and ``(S -/+ 1) / sd`` (continuity-corrected) is close to normal
    from about 8 points. Returns 0 for fewer than 3 values.
    """
    n = len(values)
    if n < 3:
        return 0.0
    s = 0
    for i in range(n - 1):
        vi = values[i]
        for j in range(i + 1, n):
            d = values[j] - vi
            s += (d > 0) - (d < 0)
    var = n * (n - 1) * (2 * n + 5) / 18.0
    if s == 0:
        return 0.0
    return (s - 1 if s > 0 else s + 1) / math.sqrt(var)


def turned(values: Sequence[float], *, worse: str, confidence: float) -> tuple[bool, float]:
    """Whether the stretch ``values`` trends towards ``worse`` ("up" or "down").

    Returns:
        (turned, the one-sided confidence that it did: the normal CDF of the trend's z-score).
    """
    z = mann_kendall_z(values)
    if worse == "down":
        z = -z
    p = NormalDist().cdf(z)
    return p >= confidence, p


def epochs_without_improvement(values: Sequence[float], mode: str) -> tuple[int, int]:
    """Lightning's EarlyStopping wait count over ``values`` (NaN skipped).

    Returns:
        (epochs since the best value, index of the best value; -1 when there is none).
    """
    best = math.inf if mode == "min" else -math.inf
    best_i = -1
    wait = 0
    for i, v in enumerate(values):
        if v is None or math.isnan(v):
            continue
        if (v < best) if mode == "min" else (v > best):
            best, best_i, wait = v, i, 0
        else:
            wait += 1
    return wait, best_i


def _values(records: Sequence[EpochRecord], name: str) -> list[float]:
    out = []
    for r in records:
        v = r.metric(name)
        out.append(math.nan if v is None else v)
    return out


def _keep(records: Sequence[EpochRecord], monitor: str, mode: str) -> tuple[str, int | None]:
    best = best_epoch(records, monitor, mode)
    value = next((r.metric(monitor) for r in records if r.epoch == best), None)
    if best is None or value is None:
        return "", best
    return f"; keep the checkpoint of epoch {best} ({monitor} {value:.4g})", best


def patience_stop(
    recent: Sequence[EpochRecord], name: str, patience: int, monitor: str, mode: str
) -> Decision | None:
    """EarlyStopping's rule on ``name``: a stop once it has not improved for ``patience``
    epochs; None while it has, or when ``name`` is not logged (the net is then off).

    ``recent`` may be the last records only (more than ``patience`` of them): the first epoch
    at which this stops is then the same as over the whole run.
    """
    values = _values(recent, name)
    if all(math.isnan(v) for v in values):
        return None
    wait, best_i = epochs_without_improvement(values, metric_direction(name) or "min")
    if wait < patience:
        return None
    keep, best = _keep(recent, monitor, mode)
    reason = (
        f"stopping at epoch {recent[-1].epoch}: {name} has not improved for {wait} epochs (best "
        f"{values[best_i]:.4g} at epoch {recent[best_i].epoch}), the patience net "
        f"(as EarlyStopping(patience={patience})){keep}"
    )
    details = {
        "rule": "DiminishingReturns",
        "trigger": "patience",
        "epoch": recent[-1].epoch,
        "best_epoch": best,
        "watched_best_epoch": recent[best_i].epoch,
    }
    return Decision(True, reason, details)


def turn_stop(
    recent: Sequence[EpochRecord],
    name: str,
    window: int,
    confidence: float,
    monitor: str,
    mode: str,
) -> Decision | None:
    """A stop when ``name`` has trended the wrong way over its last ``window`` values."""
    values = [v for v in _values(recent, name) if not math.isnan(v)]
    if len(values) < window:
        return None
    worse = "up" if (metric_direction(name) or "min") == "min" else "down"
    has_turned, p = turned(values[-window:], worse=worse, confidence=confidence)
    if not has_turned:
        return None
    keep, best = _keep(recent, monitor, mode)
    reason = (
        f"stopping at epoch {recent[-1].epoch}: {name} has "
        f"{'risen' if worse == 'up' else 'fallen'} over the last {window} epochs (trend test, "
        f"{p:.0%} confident), so the curve has turned{keep}"
    )
    details = {
        "rule": "DiminishingReturns",
        "trigger": "turned",
        "epoch": recent[-1].epoch,
        "best_epoch": best,
        "confidence": p,
    }
    return Decision(True, reason, details)
