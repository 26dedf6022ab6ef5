"""CounterTrack: what a counter reading may mean, judged by what the device can physically do."""

from __future__ import annotations

import pytest

from carbon_callbacks.energy.sensors.counters import MAX_REFUSED, STUCK_S, CounterTrack

MJ = 1e-3  # NVML counts millijoules


def nvml_track(ceiling_w: float = 100.0) -> CounterTrack:
    t = CounterTrack("GPU 0", unit_j=MJ, ceiling_w=ceiling_w)
    t.open(5_000_000, 0.0)
    return t


def test_a_plausible_reading_counts_exactly():
    t = nvml_track()
    assert t.read(5_000_000 + 50_000, 1.0).kind == "ok"  # 50 J in 1 s on a 100 W GPU
    assert t.joules == pytest.approx(50.0)
    assert t.bounds(0.05) == pytest.approx((50.0, 47.5, 52.5))
    assert t.take_estimated() is False


def test_one_negative_reading_is_refused_and_the_next_good_one_settles_it():
    t = nvml_track()
    t.read(5_050_000, 1.0)
    v = t.read(-1, 2.0)
    assert v.kind == "refused" and "below 0" in v.note and "estimated at 50 W" in v.note
    assert t.joules == pytest.approx(100.0)  # the interval at the neighbouring 50 W
    low, high = t.bounds(0.05)[1:]
    assert low == pytest.approx(47.5) and high == pytest.approx(52.5 + 100.0)  # 0-100 W
    assert t.take_estimated() is True
    v = t.read(5_130_000, 3.0)  # the counter was fine all along: 130 J since the start
    assert v.kind == "settled"
    assert t.joules == pytest.approx(130.0)
    assert t.bounds(0.0) == pytest.approx((130.0, 130.0, 130.0))


def test_a_reading_one_megajoule_low_is_refused_not_counted_as_a_megajoule_later():
    t = CounterTrack("GPU 0", unit_j=MJ, ceiling_w=100.0)
    base = 5_000_000_000  # 5 MJ since the driver loaded
    t.open(base, 0.0)
    t.read(base + 50_000, 1.0)
    v = t.read(base + 60_000 - 1_000_000_000, 1.1)
    assert v.kind == "refused" and "went back by 1e+06 J" in v.note
    assert t.read(base + 70_000, 1.2).kind == "settled"
    assert t.joules == pytest.approx(70.0)  # not 1 MJ more


def test_a_jump_above_the_power_ceiling_is_refused():
    t = nvml_track(ceiling_w=100.0)
    v = t.read(5_000_000 + 1_000_000, 1.0)  # 1 kJ in 1 s: 1000 W on a 100 W GPU
    assert v.kind == "refused" and "1000 W against a 100 W ceiling" in v.note


def test_a_counter_stuck_negative_is_given_up_after_max_refused():
    t = nvml_track()
    t.read(5_050_000, 1.0)
    kinds = [t.read(-7, 1.0 + i).kind for i in range(1, MAX_REFUSED + 1)]
    assert kinds == ["refused"] * MAX_REFUSED and t.refused == MAX_REFUSED
    t.give_up()
    assert t.pending == 0 and t.joules == pytest.approx(50.0 + 50.0 * MAX_REFUSED)


def test_a_counter_that_does_not_move_while_the_device_draws_power_is_refused():
    t = nvml_track()
    t.read(5_010_000, 0.5)
    assert t.read(5_010_000, 0.5 + STUCK_S / 2, draw_w=lambda: 80.0).kind == "ok"
    v = t.read(5_010_000, 0.5 + STUCK_S, draw_w=lambda: 80.0)
    assert v.kind == "refused" and "has not moved" in v.note
    # An idle device may leave it still: believed.
    t2 = nvml_track()
    assert t2.read(5_000_000, 2 * STUCK_S, draw_w=lambda: 0.0).kind == "ok"


def rapl_track(wrap_uj: int, ceiling_w: float) -> CounterTrack:
    t = CounterTrack("package-0", unit_j=1e-6, ceiling_w=ceiling_w, wrap=wrap_uj)
    return t


def test_a_rapl_reset_to_zero_is_not_a_wrap_and_counting_resumes_from_it():
    rng = 262_143_328_850
    t = rapl_track(rng, 200.0)
    t.open(150_000_000_000, 0.0)
    t.read(150_000_000_000 + 40_000_000, 1.0)  # 40 W
    v = t.read(0, 1.4)  # the driver reloaded: the counter starts again from 0
    assert v.kind == "refused" and "a reset, not a wrap" in v.note
    assert t.joules < 40.0 + 200.0 * 0.4 + 1e-9  # not +262 kJ
    v = t.read(16_000_000, 1.8)  # 16 J in 0.4 s from the new base
    assert v.kind == "rebased"
    assert t.joules == pytest.approx(40.0 + 40.0 * 0.4 + 16.0)
    assert t.take_estimated() is True  # the 0.4 s before the reset were estimated


def test_a_wrap_the_ceiling_allows_is_exact():
    rng = 20_000_000  # 20 J
    t = rapl_track(rng, 100.0)  # a wrap takes at least 0.2 s
    t.open(rng - 3_000_000, 0.0)
    assert t.read(7_000_000, 0.1).kind == "ok"
    assert t.joules == pytest.approx(10.0)


def test_reads_too_far_apart_estimate_the_unseen_wraps_and_widen_the_range():
    rng = 20_000_000  # 20 J; 100 W ceiling: a wrap at the earliest every 0.2 s
    t = rapl_track(rng, 100.0)
    t.open(0, 0.0)
    t.read(5_000_000, 0.1)  # 50 W, seen
    # Then the reader is starved for 1 s at 50 W: 50 J, two wraps and 10 J on the counter.
    v = t.read(15_000_000, 1.1)
    assert v.kind == "wraps" and "2 unseen wrap(s)" in v.note
    assert t.joules == pytest.approx(55.0)
    _, low, high = t.bounds(0.0)
    assert low == pytest.approx(15.0)  # what the counter shows without wraps
    assert high == pytest.approx(5.0 + 10.0 + 4 * 20.0)  # 100 W for 1 s allows 4 wraps
    assert low <= 55.0 <= high
