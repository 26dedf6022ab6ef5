"""A run's energy cut into contiguous epoch windows, and each window's carbon.

Each epoch's window runs from the previous boundary (or fit start) to this epoch's end, so the
epochs add up to the run; evaluation is measured inside them as a share. A failing meter or
intensity never raises: the window is empty (or the last intensity is reused) and the tracker's
warn-once says so.
"""

from __future__ import annotations

import math
import time

from carbon_callbacks.energy.meter import EnergyMeter, Meter
from carbon_callbacks.intensity import IntensitySource, emissions
from carbon_callbacks.records import JOULES_PER_KWH, ComponentEnergy, Reading, Window
from carbon_callbacks.tracking.sinks import Warn


def _empty_window(start: float) -> Window:
    """A window with nothing measured, for an epoch whose meter failed."""
    end = time.time()
    reason = "energy meter failed or never started; see the warning above"
    component = ComponentEnergy("cpu", 0.0, 0.0, 0.0, "unavailable", reason)
    return Window(start, end, max(end - start, 0.0), {"cpu": component})


class EpochWindows:
    """The meter's readings cut at epoch boundaries, with evaluation's share of each.

    Args:
        meter: a ``Meter`` such as ``EnergyMeter``; None builds a process-scope
            ``EnergyMeter`` at ``start()``.
        warn: the tracker's warn-once.
    """

    def __init__(self, meter: Meter | None, warn: Warn) -> None:
        self.meter = meter
        self._warn = warn
        self.reset()

    def reset(self) -> None:
        """Forget the last run's boundaries (a new fit)."""
        self._started_meter = False
        self._start: Reading | None = None
        self._boundary: Reading | None = None
        self._eval: Reading | None = None
        self._eval_joules = 0.0
        self.fit_start_wall = time.time()

    def start(self) -> None:
        """Start the meter unless it runs already, and take the run's first boundary."""
        first = None
        try:
            if self.meter is None:
                self.meter = EnergyMeter()
            if not getattr(self.meter, "running", False):
                self.meter.start()
                self._started_meter = True
                # The meter's own start reading: the windows then add up to its whole span.
                first = getattr(self.meter, "start_reading", None)
        except Exception as exc:  # noqa: BLE001 - training goes on unmeasured
            self._warn("meter", "energy meter could not start (%s); energy is logged as 0", exc)
            return
        self._start = self._boundary = first if isinstance(first, Reading) else self.mark()

    def stop(self) -> None:
        """Stop the meter if ``start()`` started it."""
        if self._started_meter and self.meter is not None:
            try:
                self.meter.stop()
            except Exception as exc:  # noqa: BLE001
                self._warn("meter", "energy meter failed to stop (%s)", exc)
            self._started_meter = False

    def mark(self) -> Reading | None:
        if self.meter is None:
            return None
        try:
            return self.meter.mark()
        except Exception as exc:  # noqa: BLE001
            self._warn("meter", "energy meter failed (%s); energy is logged as known so far", exc)
            return None

    @property
    def evaluating(self) -> bool:
        """True between ``eval_start()`` and ``eval_end()``."""
        return self._eval is not None

    def eval_start(self) -> None:
        self._eval = self.mark()

    def eval_end(self) -> None:
        start, self._eval = self._eval, None
        if start is None:
            return
        end = self.mark()
        if end is None or self.meter is None:
            return
        try:
            self._eval_joules += self.meter.window(start, end).joules
        except Exception as exc:  # noqa: BLE001
            self._warn("meter", "energy meter failed (%s); evaluation energy unknown", exc)

    def close(self) -> tuple[Window, float]:
        """The window since the last boundary, and the evaluation joules inside it."""
        eval_joules, self._eval_joules = self._eval_joules, 0.0
        now = self.mark()
        if now is not None and self._boundary is not None and self.meter is not None:
            try:
                window = self.meter.window(self._boundary, now)
                self._boundary = now
                return window, min(eval_joules, window.joules)
            except Exception as exc:  # noqa: BLE001
                self._warn("meter", "energy meter failed (%s); energy is logged as 0", exc)
        # Nothing measured: an empty window; the boundary stays so the next epoch gets it all.
        start = self._boundary.wall if self._boundary is not None else self.fit_start_wall
        return _empty_window(start), 0.0

    def run_window(self) -> Window | None:
        """This process's energy from fit start to the last boundary, in one window."""
        if self.meter is None or self._start is None or self._boundary is None:
            return None
        try:
            return self.meter.window(self._start, self._boundary)
        except Exception as exc:  # noqa: BLE001 - a diagnostic must not fail training
            self._warn("meter", "energy meter failed (%s); the run window is unknown", exc)
            return None


class WindowCarbon:
    """Turns windows into CO2e with one intensity source, reusing the last intensity on failure.

    Args:
        source: the resolved intensity source.
        pue: data-centre PUE applied to CO2e.
        warn: the tracker's warn-once.
    """

    def __init__(self, source: IntensitySource, pue: float, warn: Warn) -> None:
        self.source = source
        self.pue = pue
        self._warn = warn
        self.last = (float("nan"), "")
        """The last (gCO2e/kWh, provenance) used."""

    def quantities(self, window: Window, eval_joules: float) -> dict[str, float]:
        """The window's additive quantities (see ``distributed.ADDITIVE``)."""
        joules = window.joules
        co2 = co2_low = co2_high = 0.0
        try:
            e = emissions(window, self.source, self.pue)
            co2, co2_low, co2_high = e.g, e.low, e.high
            self.last = (e.intensity_g_per_kwh, e.provenance)
        except Exception as exc:  # noqa: BLE001 - keep the energy, use the last intensity
            self._warn("intensity", "carbon intensity failed (%s); using the last value", exc)
            g_per_kwh = self.last[0]
            if math.isfinite(g_per_kwh):
                co2 = co2_low = co2_high = joules / JOULES_PER_KWH * g_per_kwh * self.pue
        return {
            "joules": joules,
            "low": window.low,
            "high": window.high,
            "cpu": window.component_joules("cpu"),
            "gpu": window.component_joules("gpu"),
            "ram": window.component_joules("ram"),
            "co2_g": co2,
            "co2_low": co2_low,
            "co2_high": co2_high,
            "eval_joules": eval_joules,
        }
