"""RAM model: W/GB x the memory the scope uses, integrated over time."""

from __future__ import annotations

import psutil
import pytest

from carbon_callbacks.energy.sensors.ram import GB, WATTS_PER_GB, RamModelSensor


def test_machine_scope_counts_installed_memory():
    s = RamModelSensor(scope="machine")
    s.open(100.0)
    t = s.totals(110.0)
    expected = WATTS_PER_GB * psutil.virtual_memory().total / GB * 10.0
    assert t.joules == pytest.approx(expected, rel=1e-9)
    assert t.method == "model" and "W/GB" in t.reason
    assert t.low == pytest.approx(expected * 0.5) and t.high == pytest.approx(expected * 1.5)


def test_process_scope_follows_resident_memory_by_trapezoid():
    s = RamModelSensor(scope="process", watts_per_gb=1.0)
    s.open(0.0)
    rss0 = psutil.Process().memory_info().rss / GB
    block = bytearray(256 * 1024 * 1024)  # touched, so it is resident
    for i in range(0, len(block), 4096):
        block[i] = 1
    rss1 = psutil.Process().memory_info().rss / GB
    t = s.totals(2.0)
    assert rss1 - rss0 > 0.2
    assert t.joules == pytest.approx((rss0 + rss1) / 2 * 2.0, rel=0.02)
    del block


def test_bad_coefficient_names_the_argument():
    with pytest.raises(ValueError, match="watts_per_gb"):
        RamModelSensor(watts_per_gb=-1)
    with pytest.raises(ValueError, match="scope"):
        RamModelSensor(scope="box")  # type: ignore[arg-type]
