"""Carbon-aware stopping rules, framework-free: records in, a decision with a reason out.

One rule per private module, as Optuna's ``pruners``; every rule is stateless (each decision is
recomputed from the run's records, which the adapters checkpoint). See ``Policy`` to write one.

- ``DiminishingReturns``: forecasts the rest of the run from its learning curve and stops when
  it would add less than ``max_loss`` to the metric, and never later than
  ``EarlyStopping(val_loss, patience=5)`` would.
- ``MarginalGain``: stops when the recent gain per epoch, per kg CO2e or per kWh is too low.
- ``CarbonBudget``: stops before a CO2e or energy budget would be crossed.
- ``Forecast``: predicts the run's total energy, CO2e and duration; never stops.
- ``AnyOf``: stops when any of several rules does.
"""

from __future__ import annotations

from carbon_callbacks.policies._any_of import AnyOf
from carbon_callbacks.policies._base import CONTINUE, Decision, Policy
from carbon_callbacks.policies._budget import CarbonBudget
from carbon_callbacks.policies._diminishing_returns import DEFAULT_MAX_LOSS, DiminishingReturns
from carbon_callbacks.policies._forecast import Forecast, Prediction
from carbon_callbacks.policies._marginal_gain import MarginalGain, theil_sen_slope
from carbon_callbacks.policies.metric_names import metric_direction

# ``forecast_curve``/``CurveForecast`` (numpy) are imported from
# ``carbon_callbacks.policies._learning_curve`` where needed, keeping this package numpy-free.

__all__ = [
    "CONTINUE",
    "DEFAULT_MAX_LOSS",
    "AnyOf",
    "CarbonBudget",
    "Decision",
    "DiminishingReturns",
    "Forecast",
    "MarginalGain",
    "Policy",
    "Prediction",
    "metric_direction",
    "theil_sen_slope",
]
