"""``CarbonBudget``: stop before the run's CO2e (or energy) would cross a budget."""

from __future__ import annotations

from collections.abc import Sequence

from carbon_callbacks.policies._base import CONTINUE, Decision, count, positive, span
from carbon_callbacks.policies._forecast import Forecast
from carbon_callbacks.records import EpochRecord


class CarbonBudget:
    """Stops training before the run's CO2e (or energy) would cross a budget.

    After each epoch it forecasts the next epoch's cost from the recent epochs (the warm-up
    epochs excluded, see ``Forecast``) and stops when spending it would take the run over the
    budget, so the budget is not crossed by the epoch that hits it. It stops in any case once
    the budget is reached. Costs are taken from the cumulative totals, so evaluation between
    epochs counts against the budget too. Each decision reads the last few records only.

    Example::

        policy = CarbonBudget(max_co2_g=50.0)
        trainer = L.Trainer(callbacks=[CarbonCallback(intensity="FR", policy=policy)])

    Args:
        max_co2_g: Budget in grams of CO2e for the whole run (None: no CO2e budget).
        max_energy_kwh: Budget in kWh for the whole run (None: no energy budget). Either or
            both may be given; the first one reached stops the run.
        forecast: A ``Forecast`` to estimate the next epoch with (it also logs the whole run's
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
        self.max_co2_g = positive("max_co2_g", max_co2_g)
        self.max_energy_kwh = positive("max_energy_kwh", max_energy_kwh)
        if forecast is not None and not isinstance(forecast, Forecast):
            raise TypeError(f"forecast must be a Forecast, got {type(forecast).__name__}.")
        self.forecast = forecast
        # Our own estimator never logs: max_epochs is unknown here, only the next epoch matters.
        self._estimator = forecast or Forecast(max_epochs=1, warmup=count("warmup", warmup, 0))

    def __repr__(self) -> str:
        return (
            f"CarbonBudget(max_co2_g={self.max_co2_g}, max_energy_kwh={self.max_energy_kwh}, "
            f"forecast={self.forecast!r})"
        )

    def decide(self, records: Sequence[EpochRecord]) -> Decision:
        """Stop when the budget is reached or the next epoch is forecast to cross it."""
        if not records:
            return CONTINUE
        last = records[-1]
        if self.forecast is not None:
            self.forecast.decide(records)
        prediction = self._estimator.predict(records)
        checks = []
        if self.max_co2_g is not None:
            next_g = prediction.next_co2_g_high if prediction else 0.0
            checks.append(("CO2e", "g", last.co2_g_total, self.max_co2_g, next_g))
        if self.max_energy_kwh is not None:
            next_kwh = prediction.next_energy_kwh_high if prediction else 0.0
            checks.append(("energy", "kWh", last.energy_kwh_total, self.max_energy_kwh, next_kwh))
        for what, unit, spent, budget, next_cost in checks:
            details = {
                "rule": "CarbonBudget",
                "epoch": last.epoch,
                "spent": spent,
                "budget": budget,
                "unit": unit,
                "next_cost_high": next_cost,
            }
            if spent >= budget:
                return Decision(
                    True,
                    f"{what} budget reached: {spent:.4g} {unit} spent of {budget:.4g} {unit}; "
                    f"stopping at epoch {last.epoch}",
                    details,
                )
            if spent + next_cost > budget:
                based = span(prediction.based_on_epochs) if prediction else "none"
                return Decision(
                    True,
                    f"{what} budget would be crossed: {spent:.4g} {unit} spent of "
                    f"{budget:.4g} {unit}, next epoch forecast up to {next_cost:.4g} {unit} "
                    f"(from epochs {based}); stopping at epoch {last.epoch}",
                    details,
                )
        return CONTINUE
