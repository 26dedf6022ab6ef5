"""``Forecast``: a run's total energy, CO2e and duration predicted from its epochs so far."""

from __future__ import annotations

import logging
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from carbon_callbacks.policies._base import CONTINUE, Decision, count, increments, span
from carbon_callbacks.records import EpochRecord

logger = logging.getLogger(__name__)


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
            f"{span(self.based_on_epochs)}): {self.energy_kwh:.4g} kWh "
            f"({self.energy_kwh_low:.4g}-{self.energy_kwh_high:.4g}), {self.co2_g:.4g} g CO2e "
            f"({self.co2_g_low:.4g}-{self.co2_g_high:.4g}), {_duration(self.seconds)} "
            f"({_duration(self.seconds_low)}-{_duration(self.seconds_high)})"
        )


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


def spread(costs: Sequence[float]) -> tuple[float, float, float]:
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


def epoch_cost_g(records: Sequence[EpochRecord], warmup: int = 1, window: int = 5) -> float:
    """Median CO2e of the recent post-warm-up epochs (all epochs when none is past it)."""
    start = warmup if len(records) > warmup else 0
    first = max(start, len(records) - window)
    previous = records[first - 1].co2_g_total if first > 0 else 0.0
    costs = increments([previous] + [r.co2_g_total for r in records[first:]])[1:]
    return statistics.median(costs) if costs else 0.0


class Forecast:
    """Predicts a run's total energy, CO2e and duration after its warm-up, with a range.

    The first ``warmup`` epochs are left out (they pay for compilation, caches and data
    loading that later epochs do not). ``decide`` never stops training: at the first epoch
    past the warm-up it logs the forecast and returns it as the decision's reason (and as
    ``details["prediction"]``). ``predict`` gives it at any epoch. Pass it to
    ``CarbonBudget(forecast=...)`` to have the budget use it.

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
        self.max_epochs = count("max_epochs", max_epochs, 1)
        self.warmup = count("warmup", warmup, 0)
        self.window = None if window is None else count("window", window, 1)

    def __repr__(self) -> str:
        return f"Forecast(max_epochs={self.max_epochs}, warmup={self.warmup}, window={self.window})"

    def predict(self, records: Sequence[EpochRecord]) -> Prediction | None:
        """Forecast the run from ``records``; pure (no logging).

        Reads only the last ``window`` epochs and the last record's totals, so the cost does
        not grow with the run.

        Returns:
            The prediction, or None until an epoch past the warm-up has been measured.
        """
        done = len(records)
        if done <= self.warmup:
            return None
        first = self.warmup if self.window is None else max(self.warmup, done - self.window)
        recent = records[first:]
        previous = records[first - 1] if first > 0 else None
        co2_costs = increments(
            [previous.co2_g_total if previous else 0.0] + [r.co2_g_total for r in recent]
        )[1:]
        kwh_costs = increments(
            [previous.energy_kwh_total if previous else 0.0] + [r.energy_kwh_total for r in recent]
        )[1:]
        starts = [previous.end_wall if previous else recent[0].start_wall] + [
            r.end_wall for r in recent[:-1]
        ]
        sec_costs = [
            max(r.end_wall - s, r.seconds, 0.0) for r, s in zip(recent, starts, strict=True)
        ]
        co2 = spread(co2_costs)
        kwh = spread(kwh_costs)
        sec = spread(sec_costs)
        remaining = max(self.max_epochs - done, 0)
        last = records[-1]
        # Measurement ranges of what is already spent widen the totals' range by the same ratio
        # (read from the recent epochs: their methods are the run's methods now).
        kwh_ratio = _ratios(recent, "energy_kwh")
        co2_ratio = _ratios(recent, "co2_g")
        spent_sec = max(last.end_wall - records[0].start_wall, 0.0)
        return Prediction(
            epochs_done=done,
            max_epochs=self.max_epochs,
            based_on_epochs=tuple(r.epoch for r in recent),
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
        """Log the forecast at the first epoch past the warm-up; never stop."""
        if len(records) != self.warmup + 1:
            return CONTINUE
        prediction = self.predict(records)
        if prediction is None:
            return CONTINUE
        logger.info("%s", prediction)
        return Decision(False, str(prediction), {"rule": "Forecast", "prediction": prediction})
