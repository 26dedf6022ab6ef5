"""Intensity figures as users read them: exact where the source is one value, never "-0"."""

from __future__ import annotations

import math

import pytest

from carbon_callbacks.intensity import FixedIntensity, emissions, resolve
from carbon_callbacks.records import ComponentEnergy, Window
from carbon_callbacks.reports import format_energy, format_grams, render

HOUR = 3600.0


def window(start: float, seconds: float, joules: float) -> Window:
    cpu = ComponentEnergy("cpu", joules, 0.9 * joules, 1.1 * joules, "counter")
    return Window(start, start + seconds, seconds, {"cpu": cpu})


@pytest.mark.parametrize("pue", [1.0, 1.1, 1.58])
def test_a_single_valued_source_reports_exactly_its_intensity(pue):
    # Energies and spans where g / (kwh * pue) comes back as 200.00000000000003 or
    # 199.99999999999997; the record must say 200, as the source did.
    for i in range(1, 200):
        joules = 37.1 * i**1.7
        e = emissions(window(1000.0 * i, 0.37 * i, joules), FixedIntensity(200), pue=pue)
        assert e.intensity_g_per_kwh == 200.0
        assert e.g == pytest.approx(joules / 3.6e6 * 200 * pue)
    e = emissions(window(HOUR - 10, 3 * HOUR, 5e6), resolve("FR"))  # several hours, one value
    assert e.intensity_g_per_kwh == resolve("FR").intensity_at(0, HOUR)[0]


def test_a_window_of_negative_zero_joules_gives_positive_zero_grams():
    e = emissions(window(0.0, 1.0, -0.0), FixedIntensity(56))
    for value in (e.g, e.low, e.high, e.intensity_g_per_kwh):
        assert math.copysign(1.0, value) == 1.0


def test_outputs_print_no_float_noise_and_no_negative_zero():
    rows = [["FR", 200.00000000000003, -0.0]]
    csv_text = render(["zone", "g/kWh", "co2_g"], rows, "csv")
    json_text = render(["zone", "g/kWh", "co2_g"], rows, "json")
    table = render(["zone", "g/kWh", "co2_g"], rows, "table")
    for text in (csv_text, json_text, table):
        assert "200.00000000000003" not in text and "-0" not in text
    assert "FR,200.0,0.0" in csv_text
    assert format_grams(-0.0) == "0 g" and format_energy(-0.0) == "0 kWh"
