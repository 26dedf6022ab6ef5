"""Energy sources, one module each: ``rapl`` (CPU/DRAM counters), ``nvml`` (GPUs),
``cpu_model`` (load x TDP), ``ram`` (W/GB); ``base`` holds the interface they share and
``ranges`` the documented low/high band of each method.

Only the interface is imported here, so that importing the package stays cheap; the sensor
modules load psutil/pynvml when used.
"""

from __future__ import annotations

from carbon_callbacks.energy.sensors.base import (
    ChainStatus,
    DeviceAbsent,
    FallbackChain,
    Sensor,
    SensorError,
    SourceMissing,
    Totals,
    Unavailable,
)
from carbon_callbacks.records import Energy, Method

__all__ = [
    "ChainStatus",
    "DeviceAbsent",
    "Energy",
    "FallbackChain",
    "Method",
    "Sensor",
    "SensorError",
    "SourceMissing",
    "Totals",
    "Unavailable",
]
