"""``MarginalGain``: stop when the recent metric gain per unit of cost is below a threshold."""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Sequence
from typing import Literal

from carbon_callbacks.policies._base import (
    CONTINUE,
    Decision,
    best_epoch,
    count,
    positive,
)
from carbon_callbacks.policies._base import check_mode as check_monitor_mode
from carbon_callbacks.records import EpochRecord

logger = logging.getLogger(__name__)

_UNITS = {
    "kg": "kg CO2e",
    "kwh": "kWh",
    "epoch": "epoch",
    "fraction": "epoch",
}


def theil_sen_slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Median of the pairwise slopes: one noisy validation value cannot swing it.

    Pairs with no progress on the x axis (no energy measured between them) are skipped.

    Args:
        xs: Positions (cumulative CO2e or energy).
        ys: Metric values, same length as ``xs``.

    Returns:
        The slope, or None when no pair of points has distinct x.
    """
    slopes = [
        (ys[j] - ys[i]) / (xs[j] - xs[i])
        for i in range(len(xs))
        for j in range(i + 1, len(xs))
        if xs[j] - xs[i] > 0
    ]
    return statistics.median(slopes) if slopes else None


def typical_epoch_kwh(points: Sequence[EpochRecord]) -> float:
    """The energy of a typical epoch between the points: the median step, per epoch spanned.

    Zero when no energy was measured between them.
    """
    costs = [
        b.energy_kwh_total - a.energy_kwh_total
        for a, b in zip(points[:-1], points[1:], strict=True)
        if b.epoch > a.epoch
    ]
    epoch_kwh = statistics.median(costs) if costs else 0.0
    steps = [b.epoch - a.epoch for a, b in zip(points[:-1], points[1:], strict=True)]
    if epoch_kwh > 0 and steps:
        epoch_kwh /= max(statistics.median(steps), 1)
    return epoch_kwh


def position(r: EpochRecord, per: str, epoch_kwh: float) -> float:
    """Where a record lies on the cost axis of a threshold per ``per`` (kg, kWh or epochs)."""
    if per == "kg":
        return r.co2_g_total / 1000.0
    if per == "kwh":
        return r.energy_kwh_total
    # Epoch-equivalents: energy over a typical epoch's energy; epochs when none measured.
    return r.energy_kwh_total / epoch_kwh if epoch_kwh > 0 else float(r.epoch)


def knee_epoch(
    recent: Sequence[EpochRecord], ys: Sequence[float], xs: Sequence[float], threshold: float
) -> int:
    """The last epoch of the window still reached by a step worth its cost.

    ``ys`` are the records' gains (the metric in its improving direction), ``xs`` their
    positions on the cost axis.
    """
    knee = recent[0].epoch
    for i in range(1, len(recent)):
        x0, x1 = xs[i - 1], xs[i]
        if x1 > x0 and (ys[i] - ys[i - 1]) / (x1 - x0) >= threshold:
            knee = recent[i].epoch
    return knee


def gain_per_epoch(value: float, per: str, epoch_kwh: float, last: EpochRecord) -> float:
    """A gain per ``per`` (kg, kWh or epochs), as a gain per epoch-equivalent."""
    if per in ("epoch", "fraction"):
        return value
    if per == "kwh":
        return value * epoch_kwh
    g_per_kwh = last.co2_g_total / last.energy_kwh_total if last.energy_kwh_total > 0 else 0.0
    return value * epoch_kwh * g_per_kwh / 1000.0


class MarginalGain:
    """Stops at the shoulder: when more CO2e (or energy, or epochs) buys too little metric gain.

    After each epoch it fits the slope of the monitored metric over the last ``window`` epochs
    with a Theil-Sen estimator (the median of the pairwise slopes, so one noisy validation
    epoch cannot swing it) and compares it with the threshold; ``patience`` checks in a row
    below it stop the run. The threshold is given in exactly one of four units:

    - ``min_gain_per_epoch``: metric gain per epoch-equivalent (the energy of a typical
      post-warm-up epoch of this run), the same number on a laptop and on a GPU server;
    - ``min_gain_fraction``: a fraction of the run's own early gain rate (the slope over the
      first ``window`` epochs after the warm-up), e.g. 0.05 stops once the metric improves 20
      times slower than it did at the start;
    - ``min_gain_per_kg`` / ``min_gain_per_kwh``: gain per kg CO2e or per kWh, for a price in
      those units; note that an epoch of a small model costs micrograms, so a threshold that
      matters there is in the thousands per kg (see the README's table).

    Gains are measured in the metric's own units in its improving direction (a falling loss is
    a positive gain for ``mode="min"``). The reason always states the threshold per epoch too.
    The decision is recomputed from the last ``window + patience`` records with the metric (and,
    for ``min_gain_fraction``, the first ``window + 1`` after the warm-up), so it costs the same
    at epoch 10 and at epoch 10,000.

    Example::

        policy = MarginalGain("val_accuracy", mode="max", min_gain_per_epoch=0.001)
        # stops with e.g. "val_accuracy gained 0.0004 per epoch over 3 epochs, below 0.001 per
        # epoch (= 2.1e+04 per kg CO2e here); stopping at epoch 14, best epoch 12; shoulder at
        # epoch 12 (4.1 g CO2e, 0.0102 kWh)"

    Args:
        monitor: The metric to watch, as logged (e.g. ``"val_accuracy"``, ``"val_loss"``).
        mode: ``"max"`` if higher is better, ``"min"`` if lower is better.
        min_gain_per_epoch: Least gain per epoch-equivalent worth paying for (>= 0).
        min_gain_fraction: Least gain rate as a fraction of the run's early rate (in [0, 1]).
        min_gain_per_kg: Least gain per kg CO2e worth paying for (>= 0).
        min_gain_per_kwh: Least gain per kWh worth paying for (>= 0).
        window: Epochs the slope is measured over (the fit uses ``window + 1`` points).
        patience: Consecutive checks below the threshold before stopping.
        warmup: Leading epochs never used in the fit (their cost is mostly start-up).
        check_mode: Refuse a ``mode`` that contradicts a well-known metric name (a ``loss``
            with ``"max"``, an ``accuracy`` with ``"min"``); False turns the check off.

    Raises:
        ValueError: For a bad mode, a missing/duplicate/negative threshold, or a mode that
            contradicts the metric's name.
    """

    def __init__(
        self,
        monitor: str,
        mode: Literal["min", "max"] = "max",
        *,
        min_gain_per_epoch: float | None = None,
        min_gain_fraction: float | None = None,
        min_gain_per_kg: float | None = None,
        min_gain_per_kwh: float | None = None,
        window: int = 3,
        patience: int = 2,
        warmup: int = 1,
        check_mode: bool = True,
    ) -> None:
        check_monitor_mode(monitor, mode, check_mode)
        given = {
            "epoch": min_gain_per_epoch,
            "fraction": min_gain_fraction,
            "kg": min_gain_per_kg,
            "kwh": min_gain_per_kwh,
        }
        named = {k: v for k, v in given.items() if v is not None}
        if len(named) != 1:
            raise ValueError(
                "MarginalGain needs exactly one threshold: min_gain_per_epoch (metric gain per "
                "epoch's energy, e.g. 0.001), min_gain_fraction (of the run's early gain rate, "
                "e.g. 0.05), min_gain_per_kg (per kg CO2e) or min_gain_per_kwh (per kWh)."
            )
        self.per, value = next(iter(named.items()))
        name = {"epoch": "min_gain_per_epoch", "fraction": "min_gain_fraction"}.get(
            self.per, f"min_gain_per_{self.per}"
        )
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            raise ValueError(
                f"{name} must be >= 0, got {value:g}: it is a gain in {monitor}'s improving "
                f"direction, so it is positive for mode='{mode}' too."
            )
        self.threshold = positive(name, value, allow_zero=True)
        if self.per == "fraction" and self.threshold > 1:
            raise ValueError(
                f"min_gain_fraction must be in [0, 1] (a fraction of the early gain rate), got "
                f"{self.threshold:g}."
            )
        self.monitor = monitor
        self.mode = mode
        self.window = count("window", window, 1)
        self.patience = count("patience", patience, 1)
        self.warmup = count("warmup", warmup, 0)
        self._warned: set[str] = set()

    def __repr__(self) -> str:
        name = {"epoch": "min_gain_per_epoch", "fraction": "min_gain_fraction"}.get(
            self.per, f"min_gain_per_{self.per}"
        )
        return (
            f"MarginalGain({self.monitor!r}, {self.mode!r}, {name}={self.threshold:g}, "
            f"window={self.window}, patience={self.patience}, warmup={self.warmup})"
        )

    @property
    def unit(self) -> str:
        """The unit the gain is measured per."""
        return _UNITS[self.per]

    def _warn_once(self, cause: str, message: str, *args: object) -> None:
        # Logging only: the decision itself depends on the records alone.
        if cause not in self._warned:
            self._warned.add(cause)
            logger.warning(message, *args)

    def _points(self, records: Sequence[EpochRecord], limit: int | None) -> list[EpochRecord]:
        """Records carrying the metric after the warm-up: the last ``limit`` (or the first)."""
        out: list[EpochRecord] = []
        body = records[self.warmup :]
        source = reversed(body) if limit is not None else iter(body)
        for r in source:
            value = r.metric(self.monitor)
            if value is not None and not math.isnan(value):
                out.append(r)
                if len(out) == (limit if limit is not None else self.window + 1):
                    break
        return out[::-1] if limit is not None else out

    def decide(self, records: Sequence[EpochRecord]) -> Decision:
        """Stop when the last ``patience`` slopes are all below the threshold."""
        if not records:
            return CONTINUE
        last = records[-1]
        points = self._points(records, self.window + self.patience)
        if not points or points[-1] is not last:
            # Validation may run every few epochs: only a metric never seen is worth a warning.
            if not points and all(r.metric(self.monitor) is None for r in records[-3:]):
                self._warn_once(
                    "missing",
                    "MarginalGain: monitor %r is not among the logged metrics (%s); it will not "
                    "stop training until %r is logged.",
                    self.monitor,
                    ", ".join(sorted(last.metrics)) or "none",
                    self.monitor,
                )
            return CONTINUE
        if len(points) < self.window + self.patience:
            return CONTINUE
        epoch_kwh = typical_epoch_kwh(points)
        threshold = self.threshold
        if self.per == "fraction":
            early = self._points(records, None)
            rate = self._slope(early, epoch_kwh)
            threshold = self.threshold * max(rate or 0.0, 0.0)
        slopes: list[float] = []
        for k in range(self.patience):
            end = len(points) - k
            recent = points[end - self.window - 1 : end]
            slope = self._slope(recent, epoch_kwh)
            if slope is None:
                self._warn_once(
                    "no-energy",
                    "MarginalGain: no %s measured over the last %d epochs, so the gain per %s "
                    "cannot be computed; check the meter's methods (carbon-callbacks detect).",
                    "CO2e" if self.per == "kg" else "energy",
                    self.window,
                    self.unit,
                )
                return CONTINUE
            if slope >= threshold:
                return CONTINUE
            slopes.append(slope)
        first_window = points[: self.window + 1]
        shoulder = knee_epoch(
            first_window, [self._y(r) for r in first_window],
            [position(r, self.per, epoch_kwh) for r in first_window], threshold,
        )  # fmt: skip
        return self._decision(records, slopes[0], threshold, epoch_kwh, shoulder)

    def _y(self, r: EpochRecord) -> float:
        value = r.metric(self.monitor) or 0.0
        return value if self.mode == "max" else -value

    def _slope(self, points: Sequence[EpochRecord], epoch_kwh: float) -> float | None:
        xs = [position(r, self.per, epoch_kwh) for r in points]
        return theil_sen_slope(xs, [self._y(r) for r in points])

    def _decision(
        self,
        records: Sequence[EpochRecord],
        gain: float,
        threshold: float,
        epoch_kwh: float,
        shoulder_epoch: int,
    ) -> Decision:
        last = records[-1]
        best = best_epoch(records, self.monitor, self.mode)
        shoulder = next((r for r in reversed(records) if r.epoch == shoulder_epoch), None)
        where = (
            f"; shoulder at epoch {shoulder.epoch} ({shoulder.co2_g_total:.4g} g CO2e, "
            f"{shoulder.energy_kwh_total:.4g} kWh)"
            if shoulder is not None
            else ""
        )
        per_epoch = gain_per_epoch(threshold, self.per, epoch_kwh, records[-1])
        if self.per in ("epoch", "fraction"):
            said = (
                f"{gain:.3g} per epoch over {self.window} epochs, below {threshold:.3g} per epoch"
            )
            if self.per == "fraction":
                said += f" ({self.threshold:g} of the run's early rate)"
        else:
            said = (
                f"{gain:.3g} per {self.unit} over {self.window} epochs, below {threshold:g} per "
                f"{self.unit} (= {per_epoch:.3g} per epoch here)"
            )
        return Decision(
            True,
            f"{self.monitor} gained {said}; stopping at epoch {last.epoch}, best epoch "
            f"{best}{where}",
            {
                "rule": "MarginalGain",
                "epoch": last.epoch,
                "best_epoch": best,
                "shoulder_epoch": shoulder_epoch,
                "gain_rate": gain,
                "threshold": threshold,
                "unit": self.unit,
                "threshold_per_epoch": per_epoch,
            },
        )
