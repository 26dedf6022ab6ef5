"""``DiminishingReturns``: stop when the rest of the run is forecast to add too little."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from carbon_callbacks.policies._base import (
    CONTINUE,
    Decision,
    best_epoch,
    count,
    positive,
)
from carbon_callbacks.policies._base import check_mode as check_monitor_mode
from carbon_callbacks.policies._forecast import epoch_cost_g
from carbon_callbacks.policies._schedule import fit_segment, lr_drop_ahead
from carbon_callbacks.policies._trend import patience_stop, turn_stop
from carbon_callbacks.policies.metric_names import metric_direction
from carbon_callbacks.records import EpochRecord

if TYPE_CHECKING:
    from carbon_callbacks.policies._learning_curve import CurveForecast

logger = logging.getLogger(__name__)

DEFAULT_MAX_LOSS = 0.002
"""0.2 accuracy points: below what a seed changes on the benchmark's tasks (see RESULTS.md)."""


class DiminishingReturns:
    """Stops when finishing the run is forecast to add less than ``max_loss`` to the metric.

    Two triggers, either of which stops the run:

    - **The forecast.** After each epoch it extrapolates the monitored metric's learning curve
      from the run's own epochs to ``max_epochs`` (a small ensemble of saturating curve
      families, fitted robustly and weighted by fit; see ``_learning_curve``) and stops when
      the upper end of the forecast gain's interval is below ``max_loss``, in the metric's own
      units: "with 95% confidence, the remaining epochs would add less than 0.002 accuracy".
      Give ``min_gain_per_kg`` too and it also stops when the gain is worth less than the CO2e
      the remaining epochs would spend, at that exchange rate. The gain is that of the smoothed
      curve from its level now to its level at the end: what a user who keeps the
      best-validation checkpoint would still get in expectation, not the luck of one noisy
      validation epoch beating the best. ``criterion="expected"`` compares the bootstrap's
      mean gain instead (the expected accuracy given up, risk-neutral: stops sooner, on noisy
      curves sooner than the interval would allow).
    - **The patience net**, Lightning's ``EarlyStopping(patience=5)`` on ``patience_monitor``
      (``val_loss``) when that metric is logged, so the rule never trains longer than that
      widely used default would. On the benchmark (``benchmarks/RESULTS.md``) the net is what
      stops most runs; the forecast stops some earlier, and that is the whole of the saving
      over ``EarlyStopping(val_loss)``: about 5% of the energy for -0.09 points of accuracy.
      ``patience=None`` turns the net off.

    Optionally (``turn_window=6``) a Mann-Kendall trend test on the last ``turn_window``
    values of ``patience_monitor`` stops when the validation loss has risen with
    ``turn_confidence``, without waiting for the patience: saturating families cannot
    represent an overfitting decline. It is off by default: it saved energy for free on the
    runs it was designed on and cost 0.3-0.4 points on held-out runs.

    The reason says it in the user's terms::

        stopping at epoch 14: epochs 15-49 are forecast to add 0.0008 val_acc (90% interval
        0-0.0017) for 31 g CO2e, below max_loss 0.002; keep the checkpoint of epoch 12
        (val_acc 0.953)

    Learning-rate schedules: where the adapter read the schedule (``EpochRecord.horizon``; the
    Lightning, Keras and transformers adapters do), a drop still ahead (the learning rate
    falling below ``lr_drop`` times today's, as StepLR, MultiStepLR or a cosine schedule far
    from its end do) holds the forecast off, since the curve's past cannot tell what the drop
    will bring (the rule has no way to know the typical gain after a drop, so it does not price
    it); the reason says how many epochs and grams CO2e away the drop is. After a drop only the
    epochs since it are fitted. The patience net still applies while waiting, so a far drop
    costs at most what ``EarlyStopping`` would spend. A schedule whose future cannot be read
    (``ReduceLROnPlateau``) is named in the reason: the forecast does not count a drop it may
    make.

    Each decision reads at most the last ``max_points`` records and keeps no state, so a
    resumed run decides exactly as an uninterrupted one and a decision costs the same at
    epoch 10 and at epoch 10,000.

    Example::

        policy = DiminishingReturns("val_acc")                      # 0.002 accuracy
        policy = DiminishingReturns("val_loss", max_loss=0.01)      # in loss units
        policy = DiminishingReturns("val_acc", max_loss=0.001, min_gain_per_kg=0.5)

    Args:
        monitor: The metric to forecast, as logged (e.g. ``"val_acc"``, ``"val_loss"``).
        mode: ``"max"``/``"min"``; None reads it from the name (``metric_direction``).
        max_loss: The metric gain you accept to give up, in the metric's units (>= 0). The
            default, 0.002, is meant for metrics in [0, 1] (accuracy, F1, AUC); set it for a
            loss or a metric in percent.
        min_gain_per_kg: Also stop when the forecast gain per kg CO2e still to be spent is
            below this exchange rate (None: ``max_loss`` alone).
        max_epochs: The run's last epoch count; None takes it from the records' horizon (the
            adapters fill it in from the trainer).
        max_co2_g: A CO2e budget for the run: the horizon ends where it would be spent.
        confidence: Coverage of the forecast interval whose upper end must be below the
            threshold (0.9: the 5th-95th percentiles).
        min_epochs: Least epochs with the metric (since the warm-up or the last LR drop)
            before a forecast is trusted.
        warmup: Leading epochs left out of the fit.
        lr_drop: A scheduled learning rate below this fraction of today's counts as a drop.
        max_points: At most this many recent epochs are fitted.
        check_mode: Refuse a ``mode`` that contradicts the metric's name.
        criterion: ``"upper"``: stop when the interval's upper end is below the threshold;
            ``"expected"``: when the mean forecast gain (losses counted as 0) is.
        patience: Epochs without improvement of ``patience_monitor`` that stop the run, as
            ``EarlyStopping``; None: no net.
        patience_monitor: The metric the net and the trend test watch (lower is better when
            its name says so, e.g. ``"val_loss"``; the transformers ``Trainer`` logs
            ``"eval_loss"``); when it is not logged both are off.
        turn_window: Epochs the trend test looks back over; None (the default): no test.
        turn_confidence: One-sided confidence the trend test needs, in (0.5, 1).

    Raises:
        ValueError: For a bad mode, a negative threshold, a confidence outside (0, 1), a
            patience not below ``max_points``, or a metric whose direction cannot be read from
            its name when ``mode`` is None.
    """

    def __init__(
        self,
        monitor: str,
        mode: Literal["min", "max"] | None = None,
        *,
        max_loss: float = DEFAULT_MAX_LOSS,
        min_gain_per_kg: float | None = None,
        max_epochs: int | None = None,
        max_co2_g: float | None = None,
        confidence: float = 0.9,
        min_epochs: int = 5,
        warmup: int = 0,
        lr_drop: float = 0.5,
        max_points: int = 100,
        check_mode: bool = True,
        criterion: Literal["expected", "upper"] = "upper",
        patience: int | None = 5,
        patience_monitor: str = "val_loss",
        turn_window: int | None = None,
        turn_confidence: float = 0.9,
    ) -> None:
        if mode is None and isinstance(monitor, str):
            mode = metric_direction(monitor)
            if mode is None:
                raise ValueError(
                    f"mode=None but the direction of monitor={monitor!r} cannot be read from its "
                    "name; pass mode='max' (higher is better) or mode='min'."
                )
        check_monitor_mode(monitor, str(mode), check_mode)
        self.monitor = monitor
        self.mode: Literal["min", "max"] = mode
        self.max_loss = positive("max_loss", max_loss, allow_zero=True)
        self.min_gain_per_kg = positive("min_gain_per_kg", min_gain_per_kg, allow_zero=True)
        self.max_epochs = None if max_epochs is None else count("max_epochs", max_epochs, 1)
        self.max_co2_g = positive("max_co2_g", max_co2_g)
        self.confidence = _between("confidence", confidence, 0.0, "0.9")
        self.min_epochs = count("min_epochs", min_epochs, 4)
        self.warmup = count("warmup", warmup, 0)
        self.lr_drop = _between("lr_drop", lr_drop, 0.0, "0.5")
        self.max_points = count("max_points", max_points, self.min_epochs)
        if criterion not in ("expected", "upper"):
            raise ValueError(f"criterion must be 'expected' or 'upper', got {criterion!r}.")
        self.criterion = criterion
        self.patience = None if patience is None else count("patience", patience, 1)
        if self.patience is not None and self.patience >= self.max_points:
            raise ValueError(
                f"patience must be below max_points ({self.max_points}), got {patience}."
            )
        if not isinstance(patience_monitor, str) or not patience_monitor:
            raise ValueError("patience_monitor must be a metric name, e.g. 'val_loss'.")
        self.patience_monitor = patience_monitor
        self.turn_window = None if turn_window is None else count("turn_window", turn_window, 4)
        self.turn_confidence = _between("turn_confidence", turn_confidence, 0.5, "0.95")
        self._warned: set[str] = set()

    def __repr__(self) -> str:
        extra = f", min_gain_per_kg={self.min_gain_per_kg:g}" if self.min_gain_per_kg else ""
        return (
            f"DiminishingReturns({self.monitor!r}, {self.mode!r}, max_loss={self.max_loss:g}"
            f"{extra}, confidence={self.confidence:g}, max_epochs={self.max_epochs})"
        )

    def _warn_once(self, cause: str, message: str, *args: object) -> None:
        # Logging only: decisions depend on the records alone.
        if cause not in self._warned:
            self._warned.add(cause)
            logger.warning(message, *args)

    def decide(self, records: Sequence[EpochRecord]) -> Decision:
        """Stop when the forecast gain to the horizon is, with confidence, below the threshold."""
        if not records:
            return CONTINUE
        last = records[-1]
        value = last.metric(self.monitor)
        if value is None or math.isnan(value):
            if all(r.metric(self.monitor) is None for r in records[-3:]):
                self._warn_once(
                    "missing",
                    "DiminishingReturns: monitor %r is not among the logged metrics (%s); it "
                    "will not stop training until %r is logged.",
                    self.monitor,
                    ", ".join(sorted(last.metrics)) or "none",
                    self.monitor,
                )
            return CONTINUE
        horizon = last.horizon
        max_epochs = self.max_epochs or (horizon.max_epochs if horizon else None)
        if not max_epochs:
            self._warn_once(
                "horizon",
                "DiminishingReturns: max_epochs is unknown (this adapter does not report it); "
                "pass DiminishingReturns(..., max_epochs=N).",
            )
            return CONTINUE
        cost_g = epoch_cost_g(records, warmup=max(self.warmup, 1))
        end_epoch = horizon_end(last, max_epochs, self.max_co2_g, cost_g)
        if end_epoch <= last.epoch:
            return CONTINUE
        recent = records[-self.max_points :]
        for check in (self._patience_net, self._turned):
            decision = check(recent)
            if decision is not None:
                return decision
        net_on = self.patience_monitor if self.patience is not None else None
        waiting = lr_drop_ahead(last, self.lr_drop, cost_g, net_on)
        if waiting is not None:
            return waiting
        points = fit_segment(records, self.monitor, self.warmup, self.max_points, self.lr_drop)
        if len(points) < self.min_epochs:
            return CONTINUE
        # numpy loads with the first forecast, not with the adapters that import the policies.
        from carbon_callbacks.policies._learning_curve import forecast_curve

        start = points[0].epoch
        sign = 1.0 if self.mode == "max" else -1.0
        forecast = forecast_curve(
            [r.epoch - start + 1 for r in points],
            [sign * (r.metric(self.monitor) or 0.0) for r in points],
            end_epoch - start + 1,
            confidence=self.confidence,
        )
        if forecast is None:
            return CONTINUE
        remaining_g = cost_g * (end_epoch - last.epoch)
        threshold = self.max_loss
        priced = 0.0
        if self.min_gain_per_kg is not None:
            priced = self.min_gain_per_kg * remaining_g / 1000.0
            threshold = max(threshold, priced)
        figure = forecast.expected_gain if self.criterion == "expected" else forecast.gain_high
        if figure >= threshold:
            return CONTINUE
        why = (
            f"below max_loss {self.max_loss:g}"
            if threshold == self.max_loss
            else f"worth less than {remaining_g:.3g} g CO2e at {self.min_gain_per_kg:g} per kg "
            f"({priced:.3g})"
        )
        return forecast_stop(
            records, points, forecast, self.monitor, self.mode, self.confidence,
            end_epoch=end_epoch, remaining_g=remaining_g, threshold=threshold, why=why,
        )  # fmt: skip

    def _patience_net(self, recent: Sequence[EpochRecord]) -> Decision | None:
        if self.patience is None:
            return None
        return patience_stop(recent, self.patience_monitor, self.patience, self.monitor, self.mode)

    def _turned(self, recent: Sequence[EpochRecord]) -> Decision | None:
        # The watched loss only: on a noisy accuracy a short trend test raises false alarms on
        # a flat stretch, where the forecast's interval is the better judge.
        if self.turn_window is None:
            return None
        return turn_stop(
            recent, self.patience_monitor, self.turn_window, self.turn_confidence,
            self.monitor, self.mode,
        )  # fmt: skip


def _between(name: str, value: float, low: float, example: str) -> float:
    """``value`` checked to lie in the open interval (``low``, 1)."""
    number = positive(name, value)
    if number is None or not low < number < 1:
        raise ValueError(f"{name} must be in ({low:g}, 1), e.g. {example}, got {value!r}.")
    return number


def horizon_end(last: EpochRecord, max_epochs: int, max_co2_g: float | None, cost_g: float) -> int:
    """The last epoch the run will reach: its final one, or where a CO2e budget runs out."""
    end_epoch = max_epochs - 1
    if max_co2_g is not None and cost_g > 0:
        affordable = int(max(max_co2_g - last.co2_g_total, 0.0) // cost_g)
        end_epoch = min(end_epoch, last.epoch + affordable)
    return end_epoch


def forecast_stop(
    records: Sequence[EpochRecord],
    points: Sequence[EpochRecord],
    forecast: CurveForecast,
    monitor: str,
    mode: str,
    confidence: float,
    *,
    end_epoch: int,
    remaining_g: float,
    threshold: float,
    why: str,
) -> Decision:
    """The stop decision of the forecast trigger: its reason in the user's terms and details.

    Args:
        records: The run's records; the last is the epoch deciding.
        points: The records the curve was fitted to.
        forecast: The curve's forecast to ``end_epoch``.
        monitor: The forecast metric; ``mode`` its direction.
        confidence: Coverage of the forecast interval.
        end_epoch: The horizon: the run's last epoch, or where its budget runs out.
        remaining_g: CO2e the epochs up to the horizon would spend.
        threshold: The gain below which the rule stops.
        why: Which threshold it is below, in words.
    """
    last = records[-1]
    best = best_epoch(points, monitor, mode)
    best_value = next((r.metric(monitor) for r in points if r.epoch == best), None)
    # The shoulder: the first fitted epoch from which the central forecast's remaining gain
    # is already below the threshold.
    shoulder = last.epoch
    for r, level in zip(points, forecast.fitted, strict=True):
        if forecast.level_end - level < threshold:
            shoulder = r.epoch
            break
    low = max(forecast.gain_low, 0.0)
    unit = "" if mode == "max" else " (lower)"
    reason = (
        f"stopping at epoch {last.epoch}: epochs {last.epoch + 1}-{end_epoch} are forecast "
        f"to add {max(forecast.gain, 0.0):.2g} {monitor}{unit} "
        f"({confidence:.0%} interval {low:.2g}-{forecast.gain_high:.2g}) for "
        f"{remaining_g:.3g} g CO2e, {why}; keep the checkpoint of epoch {best}"
        + (f" ({monitor} {best_value:.4g})" if best_value is not None else "")
    )
    h = last.horizon
    if h is not None and not h.lr_known and h.scheduler:
        reason += f"; the {h.scheduler} schedule cannot be forecast and is not counted"
    return Decision(
        True,
        reason,
        {
            "rule": "DiminishingReturns",
            "trigger": "forecast",
            "epoch": last.epoch,
            "best_epoch": best,
            "shoulder_epoch": shoulder,
            "horizon_epoch": end_epoch,
            "gain": forecast.gain,
            "gain_low": low,
            "gain_high": forecast.gain_high,
            "expected_gain": forecast.expected_gain,
            "threshold": threshold,
            "remaining_co2_g": remaining_g,
            "fit_from_epoch": points[0].epoch,
            "family_weights": dict(forecast.weights),
        },
    )
