"""Carbon-aware stopping rules, framework-free: records in, a decision with a reason out.

Every adapter (Lightning, Keras, transformers) calls ``policy.decide(records)`` once after each
training epoch with all of the run's training ``EpochRecord``s so far, and stops training with
its framework's own mechanism when the returned ``Decision`` says ``stop``; the ``reason`` is
logged and stored in the ledger.

Writing your own rule: any object with a ``decide(records) -> Decision`` method is a policy
(see ``Policy``). Keep it cheap and make it not raise for ordinary input (a missing metric, a
run whose energy could not be measured): return ``CONTINUE`` and log a warning instead. If it
keeps state across calls, add ``state_dict()``/``load_state_dict(state)`` so a resumed run keeps
it and ``reset()`` so a policy reused for another run (a second ``fit()``, the next Optuna trial)
starts afresh (the adapters call it at fit start, except when resuming from a checkpoint), and
make ``decide`` safe to call twice with the same records (combinators and adapters may).

Example::

    class StopAtGrams:
        def __init__(self, grams: float) -> None:
            self.grams = grams

        def decide(self, records):
            if records and records[-1].co2_g_total >= self.grams:
                return Decision(True, f"{records[-1].co2_g_total:.1f} g CO2e spent")
            return CONTINUE

    policy = AnyOf(StopAtGrams(50.0), MarginalGain("val_accuracy", min_gain_per_kg=0.5))
"""

from __future__ import annotations

import logging
import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from carbon_callbacks.records import EpochRecord

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    """What a policy says after an epoch: stop or go on, and why in words a person reads."""

    stop: bool
    reason: str = ""


CONTINUE = Decision(stop=False)


@runtime_checkable
class Policy(Protocol):
    """The interface every stopping rule implements; write your own by providing ``decide``.

    ``decide`` is called once after every training epoch with all of the run's training
    ``EpochRecord``s so far (oldest first). It must not raise for ordinary input and must be
    cheap. Policies that keep state across calls also provide ``state_dict()`` and
    ``load_state_dict(state)`` so a resumed run keeps it, and ``reset()``, which the adapters
    call when a new (not resumed) run starts.
    """

    def decide(self, records: Sequence[EpochRecord]) -> Decision:
        """Return ``Decision(stop=True, reason=...)`` to end training after this epoch."""
        ...


# --------------------------------------------------------------------------------------------
# Shared arithmetic


def _positive(name: str, value: float | None, *, allow_zero: bool = False) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}.")
    value = float(value)
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"{name} must be a finite number, got {value}.")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value:g}.")
    return value


def _count(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}.")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    return value


def _increments(totals: Sequence[float]) -> list[float]:
    """Per-epoch costs from cumulative totals (so evaluation between epochs is counted too)."""
    out: list[float] = []
    previous = 0.0
    for total in totals:
        out.append(max(total - previous, 0.0))
        previous = total
    return out


def _went_back(records: Sequence[EpochRecord], last_epoch: int | None, last_len: int) -> bool:
    """True when ``records`` cannot continue the run last seen: a new run has begun.

    A policy reused for a second ``fit()`` or the next Optuna trial sees its epochs start over
    (the last epoch number goes back) or fewer records than before; state counted for the old
    run must not carry into the new one.
    """
    if len(records) < last_len:
        return True
    return bool(records) and last_epoch is not None and records[-1].epoch < last_epoch


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


# --------------------------------------------------------------------------------------------
# Forecast


@dataclass(frozen=True)
class Prediction:
    """A forecast of a whole run, from the epochs measured so far, each figure with a range.

    The per-epoch figures (``next_*``) are what the next epoch should cost; the totals are for
    the run trained to ``max_epochs``.
    """

    epochs_done: int
    max_epochs: int
    based_on_epochs: tuple[int, ...]
    next_co2_g: float
    next_co2_g_high: float
    next_energy_kwh: float
    next_energy_kwh_high: float
    co2_g: float
    co2_g_low: float
    co2_g_high: float
    energy_kwh: float
    energy_kwh_low: float
    energy_kwh_high: float
    seconds: float
    seconds_low: float
    seconds_high: float

    def __str__(self) -> str:
        return (
            f"forecast for {self.max_epochs} epochs (from epochs "
            f"{_span(self.based_on_epochs)}): {self.energy_kwh:.4g} kWh "
            f"({self.energy_kwh_low:.4g}-{self.energy_kwh_high:.4g}), {self.co2_g:.4g} g CO2e "
            f"({self.co2_g_low:.4g}-{self.co2_g_high:.4g}), {_duration(self.seconds)} "
            f"({_duration(self.seconds_low)}-{_duration(self.seconds_high)})"
        )


def _span(epochs: Sequence[int]) -> str:
    if not epochs:
        return "none"
    return str(epochs[0]) if len(epochs) == 1 else f"{epochs[0]}-{epochs[-1]}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"


def _ratios(records: Sequence[EpochRecord], field: str) -> tuple[float, float]:
    """Low/central and high/central of a measured figure summed over the records."""
    central = sum(getattr(r, field) for r in records)
    if central <= 0:
        return 1.0, 1.0
    low = sum(getattr(r, f"{field}_low") for r in records)
    high = sum(getattr(r, f"{field}_high") for r in records)
    return low / central, high / central


def _spread(costs: Sequence[float]) -> tuple[float, float, float]:
    """Central, low and high per-epoch cost from recent epochs.

    The high end is the worst epoch seen plus the spread seen (at least 5 % above the worst),
    so a budget checked against it is not crossed by an epoch that runs a bit long or by a
    cost that creeps up from epoch to epoch.
    """
    center = statistics.median(costs)
    if len(costs) < 2:
        # One epoch says nothing about variation: allow 20 % either way.
        return center, 0.8 * center, 1.2 * center
    low, worst = min(costs), max(costs)
    return center, low, max(worst + (worst - low), 1.05 * worst)


class Forecast:
    """Predicts a run's total energy, CO2e and duration after its warm-up, with a range.

    The first ``warmup`` epochs are left out (they pay for compilation, caches and data
    loading that later epochs do not); the forecast is logged once, as soon as there is an
    epoch past the warm-up, and stays available as ``prediction``. It never stops training on
    its own; pass it to ``CarbonBudget(forecast=...)`` to have the budget use it.

    Example::

        forecast = Forecast(max_epochs=50)
        policy = CarbonBudget(max_co2_g=200.0, forecast=forecast)
        # after epoch 1 the log says e.g.
        # "forecast for 50 epochs (from epochs 1-1): 0.21 kWh (0.17-0.25), 84 g CO2e (...)"

    Args:
        max_epochs: The number of training epochs the run is set up for.
        warmup: Leading epochs excluded from the per-epoch estimate.
        window: How many of the most recent post-warm-up epochs the estimate uses
            (None: all of them).
    """

    def __init__(self, max_epochs: int, *, warmup: int = 1, window: int | None = 5) -> None:
        self.max_epochs = _count("max_epochs", max_epochs, 1)
        self.warmup = _count("warmup", warmup, 0)
        self.window = None if window is None else _count("window", window, 1)
        self.reset()

    def reset(self) -> None:
        """Forget the last forecast (e.g. before reusing the policy for another run)."""
        self._logged = False
        self._prediction: Prediction | None = None
        self._last_epoch: int | None = None
        self._last_len = 0

    @property
    def prediction(self) -> Prediction | None:
        """The latest forecast (None before the first post-warm-up epoch)."""
        return self._prediction

    def predict(self, records: Sequence[EpochRecord]) -> Prediction | None:
        """Forecast the run from ``records``; pure (no logging, no state change).

        Returns:
            The prediction, or None until an epoch past the warm-up has been measured.
        """
        if len(records) <= self.warmup:
            return None
        co2_costs = _increments([r.co2_g_total for r in records])
        kwh_costs = _increments([r.energy_kwh_total for r in records])
        starts = [records[0].start_wall] + [r.end_wall for r in records[:-1]]
        sec_costs = [
            max(r.end_wall - s, r.seconds, 0.0) for r, s in zip(records, starts, strict=True)
        ]
        indices = list(range(self.warmup, len(records)))
        if self.window is not None:
            indices = indices[-self.window :]
        co2 = _spread([co2_costs[i] for i in indices])
        kwh = _spread([kwh_costs[i] for i in indices])
        sec = _spread([sec_costs[i] for i in indices])
        done = len(records)
        remaining = max(self.max_epochs - done, 0)
        last = records[-1]
        # Measurement ranges of what is already spent widen the totals' range by the same ratio.
        kwh_ratio = _ratios(records, "energy_kwh")
        co2_ratio = _ratios(records, "co2_g")
        spent_sec = max(last.end_wall - records[0].start_wall, 0.0)
        return Prediction(
            epochs_done=done,
            max_epochs=self.max_epochs,
            based_on_epochs=tuple(records[i].epoch for i in indices),
            next_co2_g=co2[0],
            next_co2_g_high=co2[2],
            next_energy_kwh=kwh[0],
            next_energy_kwh_high=kwh[2],
            co2_g=last.co2_g_total + remaining * co2[0],
            co2_g_low=(last.co2_g_total + remaining * co2[1]) * co2_ratio[0],
            co2_g_high=(last.co2_g_total + remaining * co2[2]) * co2_ratio[1],
            energy_kwh=last.energy_kwh_total + remaining * kwh[0],
            energy_kwh_low=(last.energy_kwh_total + remaining * kwh[1]) * kwh_ratio[0],
            energy_kwh_high=(last.energy_kwh_total + remaining * kwh[2]) * kwh_ratio[1],
            seconds=spent_sec + remaining * sec[0],
            seconds_low=spent_sec + remaining * sec[1],
            seconds_high=spent_sec + remaining * sec[2],
        )

    def decide(self, records: Sequence[EpochRecord]) -> Decision:
        """Update ``prediction`` and log it the first time it rests on a post-warm-up epoch.

        Records that start over (a second ``fit()``, the next trial) begin a new forecast."""
        if _went_back(records, self._last_epoch, self._last_len):
            self.reset()
        self._last_len = len(records)
        self._last_epoch = records[-1].epoch if records else None
        prediction = self.predict(records)
        # The prediction follows the records: none yet means none, not the previous run's.
        self._prediction = prediction
        if prediction is None:
            return CONTINUE
        if not self._logged and len(records) > self.warmup:
            self._logged = True
            logger.info("%s", prediction)
            return Decision(stop=False, reason=str(prediction))
        return CONTINUE

    def state_dict(self) -> dict[str, Any]:
        """Whether the forecast was already logged (so a resumed run does not log it again)."""
        return {"logged": self._logged, "last_epoch": self._last_epoch, "records": self._last_len}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        self._logged = bool(state.get("logged", False))
        self._last_epoch = state.get("last_epoch")
        self._last_len = int(state.get("records", 0))


# --------------------------------------------------------------------------------------------
# CarbonBudget


class CarbonBudget:
    """Stops training before the run's CO2e (or energy) would cross a budget.

    After each epoch it forecasts the next epoch's cost from the recent epochs (the warm-up
    epochs excluded, see ``Forecast``) and stops when spending it would take the run over the
    budget, so the budget is not crossed by the epoch that hits it. It stops in any case once
    the budget is reached. Costs are taken from the cumulative totals, so evaluation between
    epochs counts against the budget too.

    Example::

        policy = CarbonBudget(max_co2_g=50.0)
        trainer = L.Trainer(callbacks=[CarbonCallback(intensity="FR", policy=policy)])

    Args:
        max_co2_g: Budget in grams of CO2e for the whole run (None: no CO2e budget).
        max_energy_kwh: Budget in kWh for the whole run (None: no energy budget). Either or
            both may be given; the first one reached stops the run.
        forecast: A ``Forecast`` to estimate the next epoch with (and to log the whole run's
            forecast once); None builds one with ``warmup``.
        warmup: Leading epochs left out of the per-epoch estimate when ``forecast`` is None.

    Raises:
        ValueError: When no budget is given or a budget is not > 0.
    """

    def __init__(
        self,
        max_co2_g: float | None = None,
        max_energy_kwh: float | None = None,
        *,
        forecast: Forecast | None = None,
        warmup: int = 1,
    ) -> None:
        if max_co2_g is None and max_energy_kwh is None:
            raise ValueError(
                "CarbonBudget needs a budget: pass max_co2_g (grams CO2e) and/or "
                "max_energy_kwh (kWh)."
            )
        self.max_co2_g = _positive("max_co2_g", max_co2_g)
        self.max_energy_kwh = _positive("max_energy_kwh", max_energy_kwh)
        if forecast is not None and not isinstance(forecast, Forecast):
            raise TypeError(f"forecast must be a Forecast, got {type(forecast).__name__}.")
        self.forecast = forecast
        # Our own estimator never logs: max_epochs is unknown here, only the next epoch matters.
        self._estimator = forecast or Forecast(max_epochs=1, warmup=_count("warmup", warmup, 0))

    def reset(self) -> None:
        """Forget the forecast's state (e.g. before reusing the policy for another run).

        The budget itself keeps no count: it reads the spent totals from the records.
        """
        self._estimator.reset()

    def decide(self, records: Sequence[EpochRecord]) -> Decision:
        """Stop when the budget is reached or the next epoch is forecast to cross it."""
        if not records:
            return CONTINUE
        last = records[-1]
        if self.forecast is not None:
            self.forecast.decide(records)
            prediction = self.forecast.prediction
        else:
            prediction = self._estimator.predict(records)
        checks = []
        if self.max_co2_g is not None:
            checks.append(
                (
                    "CO2e",
                    "g",
                    last.co2_g_total,
                    self.max_co2_g,
                    prediction.next_co2_g_high if prediction else 0.0,
                )
            )
        if self.max_energy_kwh is not None:
            checks.append(
                (
                    "energy",
                    "kWh",
                    last.energy_kwh_total,
                    self.max_energy_kwh,
                    prediction.next_energy_kwh_high if prediction else 0.0,
                )
            )
        for what, unit, spent, budget, next_cost in checks:
            if spent >= budget:
                return Decision(
                    True,
                    f"{what} budget reached: {spent:.4g} {unit} spent of {budget:.4g} {unit}; "
                    f"stopping at epoch {last.epoch}",
                )
            if spent + next_cost > budget:
                based = _span(prediction.based_on_epochs) if prediction else "none"
                return Decision(
                    True,
                    f"{what} budget would be crossed: {spent:.4g} {unit} spent of "
                    f"{budget:.4g} {unit}, next epoch forecast up to {next_cost:.4g} {unit} "
                    f"(from epochs {based}); stopping at epoch {last.epoch}",
                )
        return CONTINUE

    def state_dict(self) -> dict[str, Any]:
        """The forecast's state (the budget itself lives in the records' totals)."""
        return {"forecast": self.forecast.state_dict() if self.forecast else None}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        if self.forecast is not None and state.get("forecast") is not None:
            self.forecast.load_state_dict(state["forecast"])


# --------------------------------------------------------------------------------------------
# Metric direction

# Words that say which way a metric improves. Matched as whole words of the name (split at
# non-alphanumerics and camelCase), never as substrings: "map" is inside "mape", "acc" inside
# "accuracy_loss", and a substring rule flips such names.
_LOWER_IS_BETTER_WORDS = frozenset(
    {
        "loss", "error", "err", "mae", "mse", "rmse", "mape", "smape", "msle", "nll",
        "crossentropy", "perplexity", "ppl", "wer", "cer",
    }
)  # fmt: skip
_HIGHER_IS_BETTER_WORDS = frozenset(
    {
        "accuracy", "acc", "f1", "auc", "auroc", "map", "precision", "recall", "iou", "dice",
        "bleu", "rouge", "rouge1", "rouge2", "rougel", "rougelsum", "r2",
    }
)  # fmt: skip
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z][a-z])")
_WORD_SPLIT = re.compile(r"[^a-z0-9]+")


def metric_direction(name: str) -> Literal["min", "max"] | None:
    """Which way a metric improves, read from its name.

    The name is split into words (at ``_``, ``/``, ``.``, ``-``, spaces and camelCase) and the
    last word with a known direction decides, so ``val_loss`` and ``eval_mape`` are ``"min"``
    while ``val_acc``, ``eval_f1`` and ``val_map`` are ``"max"``. A name written as one word
    (``valloss``) is matched on its ending for the unambiguous long words only.

    Args:
        name: A metric name as logged, e.g. ``"val_accuracy"`` or ``"val/loss"``.

    Returns:
        ``"min"`` when lower is better (loss, error, mae, mse, rmse, mape, perplexity, wer,
        cer...), ``"max"`` when higher is better (accuracy, acc, f1, auc, map, precision,
        recall, iou, bleu, r2...), None when the name does not say.
    """
    if not isinstance(name, str):
        return None
    words = [w for w in _WORD_SPLIT.split(_CAMEL.sub("_", name).lower()) if w]
    for word in reversed(words):
        if word in _LOWER_IS_BETTER_WORDS:
            return "min"
        if word in _HIGHER_IS_BETTER_WORDS:
            return "max"
    if words:
        # Short words (acc, err, map, wer, cer...) end too many unrelated words to match inside
        # one: "answer" is not a word error rate.
        last = words[-1]
        for word in sorted(_LOWER_IS_BETTER_WORDS | _HIGHER_IS_BETTER_WORDS, key=len)[::-1]:
            if len(word) >= 4 and last.endswith(word):
                return "min" if word in _LOWER_IS_BETTER_WORDS else "max"
    return None


# --------------------------------------------------------------------------------------------
# MarginalGain


class MarginalGain:
    """Stops at the shoulder: when more CO2e (or energy) buys too little metric gain.

    After each epoch it fits the slope of the monitored metric against the run's cumulative
    CO2e (or energy) over the last ``window`` epochs with a Theil-Sen estimator (the median of
    the pairwise slopes, so one noisy validation epoch cannot swing it). A slope below the
    threshold counts as one strike; ``patience`` strikes in a row stop the run. The shoulder is
    the epoch where the streak of strikes began; the reason also names the best epoch, whose
    checkpoint is the one to keep.

    Gains are measured in the metric's own units in its improving direction: for
    ``mode="min"`` a falling loss is a positive gain, so the threshold is positive in both
    modes.

    Example::

        policy = MarginalGain("val_accuracy", mode="max", min_gain_per_kg=0.5)
        # stops with e.g. "val_accuracy gained 0.02 per kg CO2e over 3 epochs, below 0.5;
        # stopping at epoch 14, best epoch 12; shoulder at epoch 13 (412 g CO2e)"

    Args:
        monitor: The metric to watch, as logged (e.g. ``"val_accuracy"``, ``"val_loss"``).
        mode: ``"max"`` if higher is better, ``"min"`` if lower is better.
        min_gain_per_kg: Least gain per kg CO2e worth paying for (>= 0).
        min_gain_per_kwh: Least gain per kWh worth paying for (>= 0); use it instead of
            ``min_gain_per_kg`` for a rule that does not depend on the grid's intensity.
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
        min_gain_per_kg: float | None = None,
        min_gain_per_kwh: float | None = None,
        window: int = 3,
        patience: int = 2,
        warmup: int = 1,
        check_mode: bool = True,
    ) -> None:
        if not isinstance(monitor, str) or not monitor:
            raise ValueError("monitor must be the name of a logged metric, e.g. 'val_accuracy'.")
        if mode not in ("min", "max"):
            raise ValueError(
                f"mode must be 'min' or 'max', got {mode!r}: 'max' when higher {monitor} is "
                "better (accuracy), 'min' when lower is better (loss)."
            )
        if check_mode:
            direction = metric_direction(monitor)
            if mode == "max" and direction == "min":
                raise ValueError(
                    f"mode='max' does not fit monitor={monitor!r}, which reads as lower-is-better;"
                    " pass mode='min' (or check_mode=False if higher really is better)."
                )
            if mode == "min" and direction == "max":
                raise ValueError(
                    f"mode='min' does not fit monitor={monitor!r}, which reads as "
                    "higher-is-better; pass mode='max' (or check_mode=False if lower really "
                    "is better)."
                )
        if (min_gain_per_kg is None) == (min_gain_per_kwh is None):
            raise ValueError(
                "MarginalGain needs exactly one threshold: min_gain_per_kg (metric gain per kg "
                "CO2e) or min_gain_per_kwh (metric gain per kWh)."
            )
        self.per = "kg" if min_gain_per_kg is not None else "kwh"
        name = "min_gain_per_kg" if self.per == "kg" else "min_gain_per_kwh"
        value = min_gain_per_kg if self.per == "kg" else min_gain_per_kwh
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            raise ValueError(
                f"{name} must be >= 0, got {value:g}: it is a gain in {monitor}'s improving "
                f"direction, so it is positive for mode='{mode}' too."
            )
        self.threshold = float(_positive(name, value, allow_zero=True))  # type: ignore[arg-type]
        self.monitor = monitor
        self.mode = mode
        self.window = _count("window", window, 1)
        self.patience = _count("patience", patience, 1)
        self.warmup = _count("warmup", warmup, 0)
        self._warned_missing = False
        self._warned_no_energy = False
        self.reset()

    def reset(self) -> None:
        """Forget the strikes (e.g. before reusing the policy for another run)."""
        self._strikes = 0
        self._shoulder: int | None = None
        self._last_epoch: int | None = None
        self._last_len = 0
        self.last_gain: float | None = None

    @property
    def unit(self) -> str:
        """The unit the gain is measured per."""
        return "kg CO2e" if self.per == "kg" else "kWh"

    def _points(self, records: Sequence[EpochRecord]) -> list[tuple[EpochRecord, float, float]]:
        points = []
        for r in records:
            value = r.metric(self.monitor)
            if value is None or math.isnan(value):
                continue
            x = r.co2_g_total / 1000.0 if self.per == "kg" else r.energy_kwh_total
            points.append((r, x, value if self.mode == "max" else -value))
        return points

    def decide(self, records: Sequence[EpochRecord]) -> Decision:
        """Count a strike when the recent gain per unit is below the threshold; stop on
        ``patience`` strikes. Calling it again for the same last epoch changes nothing; records
        that start over (a second ``fit()``, the next Optuna trial) start the count afresh."""
        if _went_back(records, self._last_epoch, self._last_len):
            self.reset()
        self._last_len = len(records)
        if not records:
            return CONTINUE
        last = records[-1]
        points = self._points(records[self.warmup :])
        if not points or points[-1][0] is not last:
            # Validation may run every few epochs: only a metric never seen is worth a warning.
            seen = any(r.metric(self.monitor) is not None for r in records)
            if not seen and not self._warned_missing:
                self._warned_missing = True
                logger.warning(
                    "MarginalGain: monitor %r is not among the logged metrics (%s); it will not "
                    "stop training until %r is logged.",
                    self.monitor,
                    ", ".join(sorted(last.metrics)) or "none",
                    self.monitor,
                )
            return CONTINUE
        if self._last_epoch == last.epoch:
            return self._decision(points)
        self._last_epoch = last.epoch
        if len(points) < self.window + 1:
            return CONTINUE
        recent = points[-(self.window + 1) :]
        gain = theil_sen_slope([p[1] for p in recent], [p[2] for p in recent])
        if gain is None:
            if not self._warned_no_energy:
                self._warned_no_energy = True
                logger.warning(
                    "MarginalGain: no %s measured over the last %d epochs, so the gain per %s "
                    "cannot be computed; check the meter's methods (carbon-callbacks detect).",
                    "CO2e" if self.per == "kg" else "energy",
                    self.window,
                    self.unit,
                )
            return CONTINUE
        self.last_gain = gain
        if gain < self.threshold:
            if self._strikes == 0:
                self._shoulder = self._knee(recent)
            self._strikes += 1
        else:
            self._strikes = 0
            self._shoulder = None
        return self._decision(points)

    def _knee(self, recent: list[tuple[EpochRecord, float, float]]) -> int:
        """The last epoch of the window still reached by a step worth its cost."""
        knee = recent[0][0].epoch
        for (_, x0, y0), (r, x1, y1) in zip(recent[:-1], recent[1:], strict=True):
            if x1 > x0 and (y1 - y0) / (x1 - x0) >= self.threshold:
                knee = r.epoch
        return knee

    def _decision(self, points: list[tuple[EpochRecord, float, float]]) -> Decision:
        if self._strikes < self.patience or self.last_gain is None:
            return CONTINUE
        best = max(points, key=lambda p: p[2])[0]
        last = points[-1][0]
        shoulder = next((p[0] for p in points if p[0].epoch == self._shoulder), None)
        where = (
            f"; shoulder at epoch {shoulder.epoch} ({shoulder.co2_g_total:.4g} g CO2e, "
            f"{shoulder.energy_kwh_total:.4g} kWh)"
            if shoulder is not None
            else ""
        )
        return Decision(
            True,
            f"{self.monitor} gained {self.last_gain:.3g} per {self.unit} over {self.window} "
            f"epochs, below {self.threshold:g}; stopping at epoch {last.epoch}, best epoch "
            f"{best.epoch}{where}",
        )

    @property
    def shoulder_epoch(self) -> int | None:
        """The epoch where the current streak of low gains began (None when there is none)."""
        return self._shoulder

    def state_dict(self) -> dict[str, Any]:
        """Strikes and shoulder, so a resumed run keeps counting where it left off."""
        return {
            "strikes": self._strikes,
            "shoulder": self._shoulder,
            "last_epoch": self._last_epoch,
            "last_gain": self.last_gain,
            "records": self._last_len,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        self._strikes = int(state.get("strikes", 0))
        self._shoulder = state.get("shoulder")
        self._last_epoch = state.get("last_epoch")
        self.last_gain = state.get("last_gain")
        self._last_len = int(state.get("records", 0))


# --------------------------------------------------------------------------------------------
# Combinators


class AnyOf:
    """Stops when any of its policies says stop; every policy sees every epoch.

    All policies are asked each time (so stateful ones keep counting) and the reasons of all
    that say stop are joined.

    Example::

        policy = AnyOf(CarbonBudget(max_co2_g=100.0),
                       MarginalGain("val_loss", mode="min", min_gain_per_kwh=0.05))

    Args:
        *policies: Objects with a ``decide(records) -> Decision`` method.

    Raises:
        ValueError: With no policy.
        TypeError: When an argument has no ``decide`` method.
    """

    def __init__(self, *policies: Policy) -> None:
        if not policies:
            raise ValueError("AnyOf needs at least one policy, e.g. AnyOf(CarbonBudget(50.0)).")
        for i, p in enumerate(policies):
            if not callable(getattr(p, "decide", None)):
                raise TypeError(
                    f"AnyOf argument {i} ({type(p).__name__}) is not a policy: it needs a "
                    "decide(records) -> Decision method."
                )
        self.policies = tuple(policies)

    def reset(self) -> None:
        """Reset every policy that has a ``reset()`` (before reusing them for another run)."""
        for p in self.policies:
            reset = getattr(p, "reset", None)
            if callable(reset):
                reset()

    def decide(self, records: Sequence[EpochRecord]) -> Decision:
        """Ask every policy; stop if any says stop."""
        decisions = [p.decide(records) for p in self.policies]
        reasons = [d.reason for d in decisions if d.stop]
        if reasons:
            return Decision(True, "; and ".join(r for r in reasons if r) or "stopped")
        return CONTINUE

    def state_dict(self) -> dict[str, Any]:
        """The state of each policy that keeps one, by position."""
        return {
            "policies": [
                p.state_dict() if callable(getattr(p, "state_dict", None)) else None
                for p in self.policies
            ]
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        states = list(state.get("policies", []))
        if len(states) != len(self.policies):
            raise ValueError(
                f"state holds {len(states)} policies but this AnyOf has {len(self.policies)}; "
                "build the AnyOf with the same policies, in the same order, as when saved."
            )
        for p, s in zip(self.policies, states, strict=True):
            if s is not None and callable(getattr(p, "load_state_dict", None)):
                p.load_state_dict(s)


__all__ = [
    "CONTINUE",
    "AnyOf",
    "CarbonBudget",
    "Decision",
    "Forecast",
    "MarginalGain",
    "Policy",
    "Prediction",
    "metric_direction",
    "theil_sen_slope",
]
