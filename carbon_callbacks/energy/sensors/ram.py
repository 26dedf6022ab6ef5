"""RAM energy from a documented W/GB figure, for machines with no DRAM energy counter.

``WATTS_PER_GB`` is Cloud Carbon Footprint's memory coefficient (0.392 W per GB, from Micron
and Crucial DDR power figures; cloudcarbonfootprint.org, Methodology, "Memory"). Under
``scope="process"`` it applies to the resident memory of this process tree (sampled by the
meter's thread and integrated by trapezoid); under ``scope="machine"`` to all installed memory,
since DRAM draws refresh power whether or not it holds anything.
"""

from __future__ import annotations

from typing import Literal

import psutil

from carbon_callbacks._checks import check_number, check_scope
from carbon_callbacks.energy.sensors.base import Sensor, SensorError, check_interval
from carbon_callbacks.energy.sensors.process import ProcessTree
from carbon_callbacks.energy.sensors.ranges import model_range
from carbon_callbacks.records import Energy, Method

WATTS_PER_GB = 0.392
"""Power of DRAM per GB (Cloud Carbon Footprint's memory coefficient)."""

GB = 1024**3


class RamModelSensor(Sensor):
    """RAM energy as W/GB x memory used by the scope: method ``model``.

    Args:
        scope: "process" (resident memory of this process tree) or "machine" (installed memory).
        watts_per_gb: the coefficient; default ``WATTS_PER_GB``.
        interval: seconds between memory samples by the meter's thread.
        tree: the process tree to follow (shared with the CPU model when given).
    """

    component = "ram"
    method = "model"

    def __init__(self, *, scope: Literal["process", "machine"] = "process",
                 watts_per_gb: float = WATTS_PER_GB, interval: float = 1.0,
                 tree: ProcessTree | None = None) -> None:
        check_scope(scope)
        watts_per_gb = check_number(watts_per_gb, "watts_per_gb", above=0, unit="W/GB",
                                    fix=f"the default is {WATTS_PER_GB}")
        self.scope = scope
        self.watts_per_gb = float(watts_per_gb)
        self.poll_interval = check_interval(interval)
        self._tree = (tree or ProcessTree()) if scope == "process" else None
        self._joules = 0.0
        self._t = 0.0
        self._gb = 0.0

    @property
    def reason(self) -> str:
        """Why this is a model and what memory it counts."""
        what = ("resident memory of this process tree" if self.scope == "process"
                else "all installed memory")
        return f"estimate: {self.watts_per_gb:g} W/GB x {what} (no DRAM energy counter)"

    def _gb_now(self) -> float:
        try:
            if self._tree is None:
                return psutil.virtual_memory().total / GB
            return self._tree.rss_bytes() / GB
        except Exception as exc:
            raise SensorError(f"cannot read memory use: {exc}") from exc

    def open(self, now: float) -> None:
        if self._tree is not None:
            try:
                # Opened once for all its sharers at start(); a reopen mid-run is harmless
                # here (resident memory needs no baseline).
                self._tree.open_at(now)
            except Exception as exc:
                raise SensorError(f"cannot read memory use: {exc}") from exc
        self._gb = self._gb_now()
        self._t = now
        self._joules = 0.0

    def _advance(self, now: float) -> None:
        dt = now - self._t
        if dt <= 0:
            return
        gb = self._gb_now()
        self._joules += self.watts_per_gb * (self._gb + gb) / 2 * dt
        self._t, self._gb = now, gb

    def sample(self, now: float) -> None:
        if self._tree is not None:
            self._tree.refresh()  # at most every REFRESH_EVERY s, whoever of its sharers asks
        self._advance(now)

    def totals(self, now: float) -> Energy:
        self._advance(now)
        return self.last_good()

    def last_good(self) -> Energy:
        low, high = model_range(self._joules)
        return Energy(self._joules, low, high, Method.MODEL, self.reason)

    def describe(self) -> str:
        return f"ram: model - {self.reason}"
