"""Stopping policies on synthetic learning curves whose shoulders are known in advance."""

from __future__ import annotations

import dataclasses
import logging
import math
import random

import pytest

from carbon_callbacks.policies import (
    CONTINUE,
    AnyOf,
    CarbonBudget,
    Decision,
    Forecast,
    MarginalGain,
    Policy,
    metric_direction,
    theil_sen_slope,
)
from carbon_callbacks.records import EpochRecord

INTENSITY = 400.0  # g CO2e per kWh, so 1 kWh = 400 g


def make_records(
    costs_g: list[float],
    metrics: list[dict[str, float]] | None = None,
    seconds: float = 10.0,
) -> list[EpochRecord]:
    """Training records with the given per-epoch CO2e (g) and metrics, totals accumulated."""
    records = []
    total_g = 0.0
    t = 1_700_000_000.0
    for epoch, g in enumerate(costs_g):
        total_g += g
        kwh = g / INTENSITY
        records.append(
            EpochRecord(
                epoch=epoch,
                start_wall=t,
                end_wall=t + seconds,
                seconds=seconds,
                energy_kwh=kwh,
                energy_kwh_low=0.9 * kwh,
                energy_kwh_high=1.1 * kwh,
                co2_g=g,
                co2_g_low=0.8 * g,
                co2_g_high=1.2 * g,
                energy_kwh_total=total_g / INTENSITY,
                co2_g_total=total_g,
                power_w=kwh * 3.6e6 / seconds,
                intensity_g_per_kwh=INTENSITY,
                metrics=metrics[epoch] if metrics else {},
            )
        )
        t += seconds
    return records


def run_until_stop(policy, costs_g, metrics=None):
    """Feed records one epoch at a time, as an adapter does; return (records seen, decision)."""
    records = make_records(costs_g, metrics)
    for n in range(1, len(records) + 1):
        decision = policy.decide(records[:n])
        if decision.stop:
            return records[:n], decision
    return records, CONTINUE


# ------------------------------------------------------------------------- MarginalGain


def test_marginal_gain_stops_at_expected_epoch_after_sharp_shoulder():
    # Accuracy rises 0.05 per 100 g epoch (0.5 per kg) up to epoch 10, then 0.001 per epoch
    # (0.01 per kg). With window=3 the Theil-Sen fit over epochs e-3..e first drops below
    # 0.1/kg at e=12 (3 of its 6 pairwise slopes are flat), the second strike is e=13.
    acc = [0.05 * min(e, 10) + 0.001 * max(e - 10, 0) for e in range(30)]
    policy = MarginalGain("val_accuracy", mode="max", min_gain_per_kg=0.1, window=3, patience=2)
    seen, decision = run_until_stop(policy, [100.0] * 30, [{"val_accuracy": a} for a in acc])
    assert decision.stop
    assert seen[-1].epoch == 13
    assert "stopping at epoch 13" in decision.reason
    assert "best epoch 13" in decision.reason
    assert "shoulder at epoch 10" in decision.reason
    assert decision.reason.startswith("val_accuracy gained")
    assert "per kg CO2e over 3 epochs, below 0.1" in decision.reason


def test_marginal_gain_stops_near_analytic_shoulder_of_smooth_curve():
    # acc(c) = 0.9 (1 - exp(-c / tau)) with c in kg; its gain per kg falls below the threshold
    # where 0.9 / tau * exp(-c / tau) = thr, i.e. c* = tau * ln(0.9 / (tau * thr)).
    tau, thr, per_epoch_kg = 1.0, 0.05, 0.1
    c_star = tau * math.log(0.9 / (tau * thr))
    costs = [per_epoch_kg * 1000] * 60
    acc = [0.9 * (1 - math.exp(-per_epoch_kg * (e + 1) / tau)) for e in range(60)]
    policy = MarginalGain("val_accuracy", min_gain_per_kg=thr, window=3, patience=2)
    seen, decision = run_until_stop(policy, costs, [{"val_accuracy": a} for a in acc])
    # The fit over the last 3 epochs measures the gain about 1.5 epochs back, the first strike
    # comes at the next whole epoch and patience adds one: at most 1.5 + 1 + 1 epochs late.
    shoulder_epoch = c_star / per_epoch_kg - 1
    assert decision.stop
    assert shoulder_epoch <= seen[-1].epoch <= shoulder_epoch + 3.5
    assert seen[-1].co2_g_total >= c_star * 1000


def test_marginal_gain_on_loss_in_min_mode_and_per_kwh():
    # Loss falls 0.2 per epoch of 0.25 kWh (0.8 per kWh) until epoch 6, then is flat.
    loss = [2.0 - 0.2 * min(e, 6) for e in range(20)]
    policy = MarginalGain("val_loss", mode="min", min_gain_per_kwh=0.1, window=3, patience=2)
    seen, decision = run_until_stop(policy, [100.0] * 20, [{"val_loss": v} for v in loss])
    assert decision.stop
    # Flat from epoch 6: at e=8 the 4-point fit still holds the last falling step (median of
    # pairwise gains 0.13 per kWh), from e=9 it is flat: strikes at 9 and 10.
    assert seen[-1].epoch == 10
    assert "per kWh" in decision.reason and "best epoch 6" in decision.reason


@pytest.mark.parametrize("seed", range(12))
def test_noisy_curve_does_not_stop_marginal_gain_early(seed):
    # Validation noise of 1 point of accuracy on a curve still gaining well above the threshold.
    rng = random.Random(seed)
    tau, thr, per_epoch_kg = 1.0, 0.05, 0.1
    clean = [0.9 * (1 - math.exp(-per_epoch_kg * (e + 1) / tau)) for e in range(60)]
    noisy = [a + rng.gauss(0.0, 0.01) for a in clean]
    policy = MarginalGain("val_accuracy", min_gain_per_kg=thr, window=3, patience=2)
    seen, decision = run_until_stop(policy, [100.0] * 60, [{"val_accuracy": a} for a in noisy])
    # Where the true gain is still above 3x the threshold, stopping would be premature.
    premature_kg = tau * math.log(0.9 / (tau * 3 * thr))
    assert decision.stop, "a curve that flattens must stop eventually"
    assert seen[-1].co2_g_total / 1000 > premature_kg


def test_single_bad_validation_epoch_is_not_a_shoulder():
    # Steady gain of 0.5 per kg with one collapsed validation epoch. A least-squares slope over
    # 4 points falls below 0.2 per kg at epochs 8 and 9 (two strikes); the median of pairwise
    # slopes only while the outlier is the newest point (epoch 8), so patience=2 holds.
    acc = [0.05 * e for e in range(16)]
    acc[8] = 0.0
    policy = MarginalGain("val_accuracy", min_gain_per_kg=0.2, window=3, patience=2)
    _, decision = run_until_stop(policy, [100.0] * 16, [{"val_accuracy": a} for a in acc])
    assert not decision.stop


def test_marginal_gain_skips_epochs_without_the_metric():
    # Validation every other epoch: records without the metric are ignored, not zeros.
    acc = [0.05 * min(e, 10) for e in range(40)]
    metrics = [{"val_accuracy": a} if e % 2 == 0 else {} for e, a in enumerate(acc)]
    policy = MarginalGain("val_accuracy", min_gain_per_kg=0.1, window=3, patience=2)
    seen, decision = run_until_stop(policy, [100.0] * 40, metrics)
    assert decision.stop
    assert seen[-1].epoch % 2 == 0 and seen[-1].epoch > 10


def test_missing_monitor_warns_once_naming_metrics(caplog):
    policy = MarginalGain("val_acc", min_gain_per_kg=0.1)
    records = make_records([100.0] * 8, [{"val_accuracy": 0.5, "val_loss": 1.0}] * 8)
    with caplog.at_level(logging.WARNING, logger="carbon_callbacks.policies"):
        decisions = [policy.decide(records[:n]) for n in range(1, 9)]
    assert not any(d.stop for d in decisions)
    warnings = [r for r in caplog.records if "val_acc" in r.getMessage()]
    assert len(warnings) == 1
    assert "val_accuracy, val_loss" in warnings[0].getMessage()


def test_marginal_gain_without_measured_energy_warns_and_goes_on(caplog):
    policy = MarginalGain("val_accuracy", min_gain_per_kg=0.1, window=2, patience=1)
    records = make_records([0.0] * 6, [{"val_accuracy": 0.5}] * 6)
    with caplog.at_level(logging.WARNING, logger="carbon_callbacks.policies"):
        decisions = [policy.decide(records[:n]) for n in range(1, 7)]
    assert not any(d.stop for d in decisions)
    assert sum("cannot be computed" in r.getMessage() for r in caplog.records) == 1


def test_marginal_gain_decides_from_records_alone_so_resume_and_repeat_calls_agree():
    acc = [0.05 * min(e, 10) for e in range(20)]
    records = make_records([100.0] * 20, [{"val_accuracy": a} for a in acc])
    first = MarginalGain("val_accuracy", min_gain_per_kg=0.1, window=3, patience=3)
    decisions = []
    for n in range(1, 16):
        decisions.append(first.decide(records[:n]))
        assert first.decide(records[:n]) == decisions[-1]  # a second call changes nothing
    # A policy built after a resume sees the same records and says the same.
    resumed = MarginalGain("val_accuracy", min_gain_per_kg=0.1, window=3, patience=3)
    assert resumed.decide(records[:15]) == decisions[-1]
    assert decisions[-1].stop and not any(d.stop for d in decisions[:-1])
    assert decisions[-1].details["shoulder_epoch"] == 10


# Run 1 ends on a single low check (flat from epoch 5, first low fit at epoch 7). Run 2 has
# one flat stretch (low check at epoch 4) and then climbs again: on its own it never stops.
RUN1_ACC = [0.05 * min(e, 5) for e in range(8)]
RUN2_ACC = [0.0, 0.1, 0.1, 0.1, 0.1] + [0.4 + 0.05 * k for k in range(10)]


def test_reused_marginal_gain_decides_a_second_run_as_a_fresh_one():
    policy = MarginalGain("val_accuracy", min_gain_per_kg=0.1, window=3, patience=2)
    _, decision = run_until_stop(policy, [100.0] * 8, [{"val_accuracy": a} for a in RUN1_ACC])
    assert not decision.stop
    runs = [[{"val_accuracy": a} for a in RUN2_ACC]]
    seen, decision = run_until_stop(policy, [100.0] * len(RUN2_ACC), runs[0])
    fresh = MarginalGain("val_accuracy", min_gain_per_kg=0.1, window=3, patience=2)
    _, alone = run_until_stop(fresh, [100.0] * len(RUN2_ACC), runs[0])
    assert not alone.stop
    assert not decision.stop, decision.reason
    assert seen[-1].epoch == len(RUN2_ACC) - 1
    # Epochs numbered on (fit(initial_epoch=20)) change nothing either.
    later = [
        dataclasses.replace(r, epoch=r.epoch + 20)
        for r in make_records([100.0] * len(RUN2_ACC), runs[0])
    ]
    assert not any(policy.decide(later[:n]).stop for n in range(1, len(later) + 1))


def test_reused_budget_forecast_does_not_use_the_previous_runs_prediction(caplog):
    forecast = Forecast(max_epochs=5)
    policy = CarbonBudget(max_co2_g=300.0, forecast=forecast)
    seen, decision = run_until_stop(policy, [10.0, 200.0, 200.0])
    assert decision.stop and seen[-1].epoch == 1  # 210 g spent, next epoch up to 240 g
    with caplog.at_level(logging.INFO, logger="carbon_callbacks.policies"):
        # Run 2 spends 100 g in its warm-up epoch: nothing forecasts the next one yet, so the
        # 240 g of run 1's forecast must not stop it.
        first = policy.decide(make_records([100.0]))
        assert not first.stop, first.reason
        assert forecast.predict(make_records([100.0])) is None
        seen, decision = run_until_stop(policy, [100.0, 10.0, 10.0, 10.0, 10.0])
    assert not decision.stop and seen[-1].epoch == 4
    logged = [r.getMessage() for r in caplog.records if "forecast for 5 epochs" in r.getMessage()]
    assert len(logged) == 1  # each run logs its own forecast once


def test_policies_keep_no_reset_or_state_machinery():
    for policy in (
        MarginalGain("val_accuracy", min_gain_per_kg=0.1),
        Forecast(max_epochs=3),
        CarbonBudget(max_co2_g=1.0),
        AnyOf(CarbonBudget(max_co2_g=1.0)),
    ):
        for name in ("reset", "state_dict", "load_state_dict"):
            assert not hasattr(policy, name), (type(policy).__name__, name)


@pytest.mark.parametrize(
    ("name", "direction"),
    [
        ("val_mape", "min"),
        ("val_map", "max"),
        ("val_loss", "min"),
        ("val_acc", "max"),
        ("eval_f1", "max"),
        ("val/accuracy", "max"),
        ("valLoss", "min"),
        ("mAP", "max"),
        ("val_rmse", "min"),
        ("mean_absolute_percentage_error", "min"),
        ("f1_score", "max"),
        ("val_answer", None),
        ("lr", None),
    ],
)
def test_metric_direction_reads_whole_words_of_the_name(name, direction):
    assert metric_direction(name) == direction


def test_mode_check_accepts_min_for_mape_and_refuses_max():
    assert MarginalGain("val_mape", mode="min", min_gain_per_kg=0.1).mode == "min"
    with pytest.raises(ValueError, match="pass mode='min'"):
        MarginalGain("val_mape", mode="max", min_gain_per_kg=0.1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"monitor": "val_accuracy", "min_gain_per_kg": -0.5}, "min_gain_per_kg must be >= 0"),
        ({"monitor": "val_loss", "mode": "min", "min_gain_per_kwh": -1}, "positive for mode='min'"),
        ({"monitor": "val_accuracy", "mode": "maximize", "min_gain_per_kg": 1}, "'min' or 'max'"),
        ({"monitor": "val_loss", "mode": "max", "min_gain_per_kg": 1}, "pass mode='min'"),
        ({"monitor": "val_accuracy", "mode": "min", "min_gain_per_kg": 1}, "pass mode='max'"),
        ({"monitor": "val_accuracy"}, "exactly one threshold"),
        ({"monitor": "acc", "min_gain_per_kg": 1, "min_gain_per_kwh": 1}, "exactly one"),
        ({"monitor": "acc", "min_gain_per_kg": 1, "window": 0}, "window must be >= 1"),
        ({"monitor": "acc", "min_gain_per_kg": 1, "patience": 0}, "patience must be >= 1"),
        ({"monitor": "", "min_gain_per_kg": 1}, "monitor must be"),
    ],
)
def test_marginal_gain_rejects_bad_configuration(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MarginalGain(**kwargs)


def test_mode_check_can_be_turned_off_for_unusual_metrics():
    policy = MarginalGain("neg_loss", mode="max", min_gain_per_kg=0.1, check_mode=False)
    assert policy.mode == "max"


def test_theil_sen_ignores_one_outlier_and_pairs_without_progress():
    assert theil_sen_slope([0, 1, 2, 3, 4], [0, 1, 2, 30, 4]) == pytest.approx(1.0)
    assert theil_sen_slope([1, 1, 1], [0, 1, 2]) is None


# ------------------------------------------------------------------------- CarbonBudget


@pytest.mark.parametrize("with_forecast", [False, True])
@pytest.mark.parametrize("seed", range(40))
def test_carbon_budget_never_ends_above_budget(seed, with_forecast):
    # A costly warm-up epoch, then epochs jittering +-10 % around a cost drawn per run.
    rng = random.Random(seed)
    mean = rng.uniform(3.0, 15.0)
    costs = [3 * mean] + [mean * rng.uniform(0.9, 1.1) for _ in range(200)]
    budget = 100.0
    forecast = Forecast(max_epochs=len(costs)) if with_forecast else None
    seen, decision = run_until_stop(CarbonBudget(max_co2_g=budget, forecast=forecast), costs)
    assert decision.stop
    assert seen[-1].co2_g_total <= budget
    # ...and not absurdly early: less than about three epochs' worth is left on the table.
    assert seen[-1].co2_g_total > budget - 3.5 * mean


def test_carbon_budget_with_steadily_rising_cost_stays_under():
    costs = [20.0] + [5.0 + 0.5 * e for e in range(60)]
    seen, decision = run_until_stop(CarbonBudget(max_co2_g=150.0), costs)
    assert decision.stop and seen[-1].co2_g_total <= 150.0
    assert "would be crossed" in decision.reason


def test_carbon_budget_warmup_epoch_is_not_in_the_forecast():
    # Warm-up costs 60 g, later epochs 10 g: counting the warm-up would stop at 40 g spent.
    seen, decision = run_until_stop(CarbonBudget(max_co2_g=100.0), [60.0] + [10.0] * 20)
    assert seen[-1].co2_g_total >= 80.0
    assert "(from epochs 1-" in decision.reason


def test_carbon_budget_stops_once_reached_even_without_forecast_data():
    seen, decision = run_until_stop(CarbonBudget(max_co2_g=50.0), [80.0, 10.0])
    assert decision.stop and seen[-1].epoch == 0
    assert decision.reason.startswith("CO2e budget reached: 80 g spent of 50 g")


def test_energy_budget_stops_on_kwh():
    # 10 g at 400 g/kWh is 0.025 kWh per epoch.
    seen, decision = run_until_stop(CarbonBudget(max_energy_kwh=0.2), [10.0] * 40)
    assert decision.stop and seen[-1].energy_kwh_total <= 0.2
    assert decision.reason.startswith("energy budget")


def test_carbon_budget_fed_by_forecast_logs_the_run_forecast_once(caplog):
    forecast = Forecast(max_epochs=30)
    policy = CarbonBudget(max_co2_g=1e6, forecast=forecast)
    with caplog.at_level(logging.INFO, logger="carbon_callbacks.policies"):
        run_until_stop(policy, [30.0] + [10.0] * 29)
    logged = [r.getMessage() for r in caplog.records if "forecast for 30 epochs" in r.getMessage()]
    assert len(logged) == 1
    assert forecast.predict(make_records([30.0] + [10.0] * 29)).co2_g == pytest.approx(320.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "needs a budget"),
        ({"max_co2_g": 0}, "max_co2_g must be > 0"),
        ({"max_co2_g": -5.0}, "max_co2_g must be > 0"),
        ({"max_energy_kwh": float("nan")}, "finite"),
    ],
)
def test_carbon_budget_rejects_bad_budgets(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CarbonBudget(**kwargs)


def test_carbon_budget_rejects_non_forecast():
    with pytest.raises(TypeError, match="forecast must be a Forecast"):
        CarbonBudget(max_co2_g=1.0, forecast=5)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- Forecast


def test_forecast_predicts_totals_with_interval_excluding_warmup():
    forecast = Forecast(max_epochs=20, warmup=1)
    records = make_records([50.0, 9.0, 10.0, 11.0])
    p = forecast.predict(records)
    assert p is not None
    assert p.based_on_epochs == (1, 2, 3)
    spent = 80.0
    assert p.co2_g == pytest.approx(spent + 16 * 10.0)
    assert p.co2_g_low < spent + 16 * 9.0 < p.co2_g < spent + 16 * 11.0 < p.co2_g_high
    assert p.energy_kwh == pytest.approx(p.co2_g / INTENSITY)
    assert p.seconds == pytest.approx(40.0 + 16 * 10.0)
    assert "forecast for 20 epochs" in str(p)


def test_forecast_never_stops_and_speaks_once_after_the_warmup():
    forecast = Forecast(max_epochs=5)
    records = make_records([10.0] * 3)
    assert forecast.decide(records[:1]) == CONTINUE
    first = forecast.decide(records[:2])
    assert not first.stop and "forecast for 5 epochs" in first.reason
    assert first.details["prediction"].max_epochs == 5
    assert forecast.decide(records[:3]).reason == ""
    assert Forecast(max_epochs=5).decide(records).reason == ""  # resumed: said already


def test_forecast_rejects_bad_max_epochs():
    with pytest.raises(ValueError, match="max_epochs must be >= 1"):
        Forecast(max_epochs=0)


# -------------------------------------------------------------------------------- AnyOf


class StopAtGrams:
    """A user-written policy, as the module docstring shows."""

    def __init__(self, grams: float) -> None:
        self.grams = grams

    def decide(self, records):
        if records and records[-1].co2_g_total >= self.grams:
            return Decision(True, f"{records[-1].co2_g_total:.0f} g spent")
        return CONTINUE


def test_any_of_stops_on_first_policy_and_keeps_others_counting():
    acc = [0.05 * min(e, 10) for e in range(30)]
    gain = MarginalGain("val_accuracy", min_gain_per_kg=0.1, window=3, patience=2)
    policy = AnyOf(StopAtGrams(2500.0), gain)
    seen, decision = run_until_stop(policy, [100.0] * 30, [{"val_accuracy": a} for a in acc])
    assert isinstance(StopAtGrams(1.0), Policy)
    assert seen[-1].epoch == 13 and "val_accuracy gained" in decision.reason
    seen, decision = run_until_stop(
        AnyOf(StopAtGrams(500.0), MarginalGain("val_accuracy", min_gain_per_kg=0.1)),
        [100.0] * 30,
        [{"val_accuracy": a} for a in acc],
    )
    assert seen[-1].epoch == 4 and decision.reason == "500 g spent"


def test_any_of_keeps_the_stopping_rules_details():
    acc = [0.05 * min(e, 10) for e in range(30)]
    policy = AnyOf(StopAtGrams(1e9), MarginalGain("val_accuracy", min_gain_per_kg=0.1))
    _, decision = run_until_stop(policy, [100.0] * 30, [{"val_accuracy": a} for a in acc])
    assert decision.stop and decision.details["rule"] == "MarginalGain"
    assert decision.details["policies"][0] == {}
    assert policy.monitor == "val_accuracy"


def test_any_of_rejects_non_policies():
    with pytest.raises(ValueError, match="at least one policy"):
        AnyOf()
    with pytest.raises(TypeError, match="argument 1"):
        AnyOf(StopAtGrams(1.0), "val_loss")  # type: ignore[arg-type]
