"""MarginalGain's thresholds per epoch-equivalent and per fraction of the run's early rate."""

from __future__ import annotations

import pytest

from carbon_callbacks.policies import MarginalGain

from .test_diminishing_returns import first_stop, records_for

# Gains 0.05 per epoch to epoch 8, then 0.0005 per epoch.
ACC = [0.05 * min(e, 8) + 0.0005 * max(e - 8, 0) for e in range(30)]


def test_per_epoch_threshold_stops_after_the_climb_and_says_it_per_epoch():
    stop, decision = first_stop(
        MarginalGain("val_acc", min_gain_per_epoch=0.002, window=3, patience=2), records_for(ACC)
    )
    assert stop == 12  # epochs 9-11 and 10-12 both gained 0.0005 per epoch
    assert "gained 0.0005 per epoch over 3 epochs, below 0.002 per epoch" in decision.reason
    assert decision.details["threshold_per_epoch"] == pytest.approx(0.002)
    assert decision.details["shoulder_epoch"] == 8  # the last epoch the climb reached


def test_per_epoch_threshold_is_the_same_on_a_cheap_and_an_expensive_machine():
    cheap = first_stop(MarginalGain("val_acc", min_gain_per_epoch=0.002), records_for(ACC))
    dear = first_stop(
        MarginalGain("val_acc", min_gain_per_epoch=0.002), records_for(ACC, cost_g=5000.0)
    )
    assert cheap[0] == dear[0] == 12


def test_fraction_of_the_early_rate():
    # Early rate 0.05 per epoch; 5% of it is 0.0025 per epoch.
    stop, decision = first_stop(MarginalGain("val_acc", min_gain_fraction=0.05), records_for(ACC))
    assert stop == 12
    assert decision.details["threshold"] == pytest.approx(0.0025)
    assert "0.05 of the run's early rate" in decision.reason


def test_per_kg_reason_also_states_the_threshold_per_epoch():
    # 2 g per epoch: 1 per kg is 0.002 per epoch.
    stop, decision = first_stop(MarginalGain("val_acc", min_gain_per_kg=1.0), records_for(ACC))
    assert stop == 12
    assert "below 1 per kg CO2e (= 0.002 per epoch here)" in decision.reason


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_gain_fraction": 1.5}, "min_gain_fraction must be in"),
        ({"min_gain_per_epoch": 0.1, "min_gain_per_kg": 1.0}, "exactly one threshold"),
        ({"min_gain_per_epoch": -0.1}, "min_gain_per_epoch must be >= 0"),
    ],
)
def test_bad_thresholds_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MarginalGain("val_acc", **kwargs)
