"""DiminishingReturns on synthetic learning curves whose remaining gain is known exactly."""

from __future__ import annotations

import dataclasses
import logging
import math
import random

import pytest

from carbon_callbacks.policies import AnyOf, CarbonBudget, DiminishingReturns
from carbon_callbacks.policies._learning_curve import forecast_curve
from carbon_callbacks.records import EpochRecord, Horizon

INTENSITY = 400.0


def records_for(values, *, name="val_acc", cost_g=2.0, max_epochs=None, lrs=None, losses=None):
    """Training records with one metric per epoch (and ``val_loss`` when ``losses`` is
    given), 2 g per epoch, and an optional horizon."""
    out = []
    total = 0.0
    t = 1_700_000_000.0
    for epoch, v in enumerate(values):
        total += cost_g
        horizon = None
        if max_epochs is not None or lrs is not None:
            horizon = Horizon(
                max_epochs=max_epochs,
                lr=lrs[epoch] if lrs else None,
                lr_ahead=tuple(lrs[epoch + 1 :]) if lrs else (),
                scheduler="StepLR" if lrs else "",
            )
        out.append(
            EpochRecord(
                epoch=epoch,
                start_wall=t,
                end_wall=t + 1,
                seconds=1.0,
                energy_kwh=cost_g / INTENSITY,
                energy_kwh_low=cost_g / INTENSITY,
                energy_kwh_high=cost_g / INTENSITY,
                co2_g=cost_g,
                co2_g_low=cost_g,
                co2_g_high=cost_g,
                energy_kwh_total=total / INTENSITY,
                co2_g_total=total,
                power_w=cost_g / INTENSITY * 3.6e6,
                intensity_g_per_kwh=INTENSITY,
                metrics=({} if v is None else {name: v})
                | ({} if losses is None else {"val_loss": losses[epoch]}),
                horizon=horizon,
            )
        )
        t += 1
    return out


def first_stop(policy, records):
    for n in range(1, len(records) + 1):
        decision = policy.decide(records[:n])
        if decision.stop:
            return records[n - 1].epoch, decision
    return None, None


def saturating(e: int) -> float:
    return 0.9 - 0.4 * math.exp(-0.3 * e)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_saturating_curve_stops_within_two_epochs_of_where_the_gain_left_drops_below_max_loss(seed):
    rng = random.Random(seed)
    max_epochs, max_loss = 60, 0.002
    values = [saturating(e) + rng.gauss(0, 0.0005) for e in range(max_epochs)]
    # Where the true curve's remaining gain to the last epoch first falls below max_loss.
    expected = next(
        e for e in range(max_epochs) if saturating(max_epochs - 1) - saturating(e) < max_loss
    )
    stop, decision = first_stop(
        DiminishingReturns("val_acc", max_loss=max_loss, max_epochs=max_epochs),
        records_for(values),
    )
    assert stop is not None and abs(stop - expected) <= 2, (stop, expected)
    assert decision.details["gain_high"] < max_loss
    assert f"stopping at epoch {stop}: epochs {stop + 1}-{max_epochs - 1}" in decision.reason
    assert "val_acc" in decision.reason and "90% interval" in decision.reason


def test_loss_curve_in_min_mode_stops_on_its_plateau_and_names_the_best_epoch():
    losses = [0.3 + 1.5 * math.exp(-0.4 * e) for e in range(40)]
    stop, decision = first_stop(
        DiminishingReturns("val_loss", max_loss=0.005, max_epochs=40),
        records_for(losses, name="val_loss"),
    )
    assert stop is not None and 10 <= stop <= 20
    assert decision.details["best_epoch"] == stop  # still falling a little: the last is best


def test_scheduled_drop_ahead_is_waited_for_and_the_fit_restarts_after_it():
    # Plateau at 0.80 by epoch 10; StepLR divides the LR by 10 at epoch 20; the curve then
    # climbs to 0.86 and levels off again.
    def acc(e):
        base = 0.8 - 0.4 * math.exp(-0.5 * e)
        return base + (0.06 * (1 - math.exp(-0.6 * (e - 19))) if e >= 20 else 0.0)

    lrs = [0.1 if e < 20 else 0.01 for e in range(50)]
    records = records_for([acc(e) for e in range(50)], max_epochs=50, lrs=lrs)
    policy = DiminishingReturns("val_acc")
    waiting = policy.decide(records[:15])
    assert not waiting.stop and "lowers the learning rate from 0.1 to 0.01 by epoch 20" in (
        waiting.reason
    )
    assert waiting.details["waiting_for"] == 20
    stop, decision = first_stop(policy, records)
    assert stop is not None and stop >= 20 + policy.min_epochs - 1
    assert decision.details["fit_from_epoch"] == 20
    # Without the schedule it would have stopped on the first plateau.
    blind, _ = first_stop(
        DiminishingReturns("val_acc", max_epochs=50), records_for([acc(e) for e in range(50)])
    )
    assert blind is not None and blind < 20


@pytest.mark.parametrize("seed", range(5))
def test_noisy_flat_then_rising_curve_is_not_stopped_on_its_flat_part(seed):
    rng = random.Random(seed)
    values = [0.5 + rng.gauss(0, 0.01) for _ in range(12)]
    values += [0.5 + 0.02 * k + rng.gauss(0, 0.01) for k in range(1, 29)]
    policy = DiminishingReturns("val_acc", max_epochs=40)
    records = records_for(values)
    for n in range(policy.min_epochs, 13):
        decision = policy.decide(records[:n])
        assert not decision.stop, decision.reason
    # The interval is what holds it: the upper end allows more than max_loss.
    f = forecast_curve(range(1, 13), values[:12], 40)
    assert f is not None and f.gain_high > policy.max_loss


def test_replay_after_resume_gives_the_same_decision():
    values = [saturating(e) for e in range(60)]
    records = records_for(values, max_epochs=60)
    policy = DiminishingReturns("val_acc")
    uninterrupted = [policy.decide(records[:n]) for n in range(1, 61)]
    # A checkpoint holds the records as dicts; a fresh policy after the resume reads them back.
    restored = [EpochRecord.from_dict(r.to_dict()) for r in records]
    assert restored[-1].horizon == records[-1].horizon
    resumed = DiminishingReturns("val_acc")
    for n in range(1, 61):
        again = resumed.decide(restored[:n])
        assert again == uninterrupted[n - 1]
        assert again.details == uninterrupted[n - 1].details


def test_tracker_checkpoint_carries_the_horizon_for_a_resumed_decision():
    import json

    from carbon_callbacks.tracking.tracker import EpochTracker

    records = records_for([saturating(e) for e in range(25)], max_epochs=60)
    tracker = EpochTracker(intensity=400.0, ledger=False)
    tracker.load_state_dict({"version": 1, "records": [r.to_dict() for r in records]})
    state = json.loads(json.dumps(tracker.state_dict()))  # as a checkpoint stores it
    other = EpochTracker(intensity=400.0, ledger=False, policy=DiminishingReturns("val_acc"))
    other.load_state_dict(state)
    assert other.records == tuple(records)
    assert [r.horizon for r in other.records] == [r.horizon for r in records]
    assert other.decide() == DiminishingReturns("val_acc").decide(records)


def test_exchange_rate_stops_when_the_gain_is_worth_less_than_the_co2e_left():
    values = [saturating(e) for e in range(60)]
    priced = DiminishingReturns("val_acc", max_loss=0.0, min_gain_per_kg=1.0, max_epochs=60)
    stop, decision = first_stop(priced, records_for(values))
    # 2 g per epoch: at epoch e the rest costs (59 - e) * 2 g, worth that many mg of accuracy.
    assert stop is not None
    assert decision.details["gain_high"] < (59 - stop) * 2.0 / 1000.0
    assert "worth less than" in decision.reason


def test_budget_ends_the_horizon_earlier():
    values = [saturating(e) for e in range(60)]
    full, _ = first_stop(DiminishingReturns("val_acc", max_epochs=60), records_for(values))
    short, decision = first_stop(
        DiminishingReturns("val_acc", max_epochs=60, max_co2_g=40.0), records_for(values)
    )
    assert short is not None and full is not None and short <= full
    assert decision.details["horizon_epoch"] <= 20


def test_max_epochs_from_the_horizon_and_a_warning_when_unknown(caplog):
    values = [saturating(e) for e in range(60)]
    with caplog.at_level(logging.WARNING):
        stop, _ = first_stop(DiminishingReturns("val_acc"), records_for(values))
    assert stop is None and "max_epochs is unknown" in caplog.text
    stop, _ = first_stop(DiminishingReturns("val_acc"), records_for(values, max_epochs=60))
    assert stop is not None


def test_missing_metric_epochs_are_skipped_and_details_flow_through_any_of():
    values = [saturating(e) if e % 2 == 0 else None for e in range(60)]
    policy = AnyOf(CarbonBudget(max_co2_g=1e9), DiminishingReturns("val_acc", max_epochs=60))
    stop, decision = first_stop(policy, records_for(values))
    assert stop is not None and stop % 2 == 0
    assert decision.details["shoulder_epoch"] <= stop


def test_decision_reads_a_bounded_number_of_records():
    values = [saturating(e) for e in range(3000)]
    records = records_for(values, max_epochs=5000)
    policy = DiminishingReturns("val_acc", max_loss=0.0)
    d = policy.decide(records)
    short = policy.decide(records[-policy.max_points :])
    # Same answer from the last max_points records: the rest is never read.
    assert dataclasses.replace(d, details={}) == dataclasses.replace(short, details={})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"monitor": "val_thing"}, "cannot be read from its name"),
        ({"monitor": "val_acc", "mode": "min"}, "mode='min' does not fit"),
        ({"monitor": "val_acc", "max_loss": -1.0}, "max_loss must be >= 0"),
        ({"monitor": "val_acc", "confidence": 1.5}, "confidence must be in"),
        ({"monitor": "val_acc", "lr_drop": 2.0}, "lr_drop must be in"),
        ({"monitor": "val_acc", "min_epochs": 2}, "min_epochs must be >= 4"),
        ({"monitor": "val_acc", "criterion": "mean"}, "criterion must be"),
        ({"monitor": "val_acc", "patience": 100}, "patience must be below max_points"),
        ({"monitor": "val_acc", "turn_confidence": 0.4}, "turn_confidence must be in"),
    ],
)
def test_bad_configuration_is_refused_with_the_argument_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DiminishingReturns(**kwargs)


# ------------------------------------------------------------- patience net and trend test


def overfitting_losses(n, turn=10):
    """A val_loss that falls to epoch ``turn`` and then rises steadily."""
    return [1.0 - 0.05 * e if e <= turn else 0.5 + 0.02 * (e - turn) for e in range(n)]


def test_patience_net_stops_where_early_stopping_on_val_loss_would():
    # val_acc still climbs (the forecast would go on); val_loss bottoms out at epoch 10.
    accs = [0.5 + 0.01 * e for e in range(40)]
    records = records_for(accs, max_epochs=40, losses=overfitting_losses(40))
    stop, decision = first_stop(DiminishingReturns("val_acc"), records)
    assert stop == 15  # EarlyStopping(patience=5): epochs 11-15 do not improve on epoch 10
    assert decision.details["trigger"] == "patience"
    assert decision.details["watched_best_epoch"] == 10
    assert "val_loss has not improved for 5 epochs" in decision.reason
    assert "keep the checkpoint of epoch 15" in decision.reason
    off, _ = first_stop(DiminishingReturns("val_acc", patience=None), records)
    assert off is None or off > 15


def test_patience_net_is_off_when_its_metric_is_not_logged():
    accs = [0.5 + 0.01 * e for e in range(40)]
    stop, _ = first_stop(DiminishingReturns("val_acc"), records_for(accs, max_epochs=40))
    assert stop is None


def test_patience_net_still_applies_while_waiting_for_a_scheduled_drop():
    lrs = [0.1 if e < 30 else 0.01 for e in range(40)]
    accs = [0.8 - 0.4 * math.exp(-0.5 * e) for e in range(40)]
    records = records_for(accs, max_epochs=40, lrs=lrs, losses=overfitting_losses(40))
    policy = DiminishingReturns("val_acc")
    waiting = policy.decide(records[:12])
    assert not waiting.stop
    assert "by epoch 30 (19 epochs, about 38 g CO2e away)" in waiting.reason
    assert "the patience net on val_loss still applies" in waiting.reason
    stop, decision = first_stop(policy, records)
    assert stop == 15 and decision.details["trigger"] == "patience"


def test_trend_test_stops_a_turned_val_loss_before_the_patience_runs_out():
    accs = [0.5 + 0.01 * e for e in range(40)]
    records = records_for(accs, max_epochs=40, losses=overfitting_losses(40))
    stop, decision = first_stop(DiminishingReturns("val_acc", turn_window=6), records)
    # Epochs 10-15 rise monotonically: the test is confident once it has six rising values.
    assert stop is not None and stop < 15
    assert decision.details["trigger"] == "turned"
    assert "val_loss has risen over the last 6 epochs" in decision.reason


def test_mann_kendall_reads_a_trend_and_not_noise():
    from carbon_callbacks.policies._trend import mann_kendall_z, turned

    assert mann_kendall_z([1, 2, 3, 4, 5, 6]) > 2.0
    assert mann_kendall_z([6, 5, 4, 3, 2, 1]) < -2.0
    assert abs(mann_kendall_z([1, 3, 2, 3, 1, 2])) < 0.5
    assert turned([1, 2, 3, 4, 5, 6], worse="up", confidence=0.95)[0]
    assert not turned([1, 2, 3, 4, 5, 6], worse="down", confidence=0.95)[0]


def test_expected_criterion_stops_no_later_than_the_interval():
    rng = random.Random(0)
    values = [saturating(e) + rng.gauss(0, 0.01) for e in range(60)]
    records = records_for(values, max_epochs=60)
    upper, _ = first_stop(DiminishingReturns("val_acc"), records)
    expected, decision = first_stop(DiminishingReturns("val_acc", criterion="expected"), records)
    assert expected is not None and (upper is None or expected <= upper)
    assert decision.details["expected_gain"] < 0.002
