"""Live intensity providers and the one bounded GET they share.

``providers`` holds ``ElectricityMaps`` and ``UKCarbonIntensity``; ``source`` their common
``LiveSource`` (cache per zone and hour, fallback to the embedded table, one warning per cause);
``http`` holds ``get_json``, whose single deadline covers DNS, connect, headers and body.
Loaded only when a provider is configured or named.
"""

from __future__ import annotations

from carbon_callbacks.intensity.live.http import LiveError, get_json
from carbon_callbacks.intensity.live.providers import (
    ElectricityMaps,
    UKCarbonIntensity,
    country_fallback,
    electricity_maps_zone,
)
from carbon_callbacks.intensity.live.source import DEFAULT_TIMEOUT, LIVE_SPREAD, LiveSource

__all__ = [
    "DEFAULT_TIMEOUT",
    "LIVE_SPREAD",
    "ElectricityMaps",
    "LiveError",
    "LiveSource",
    "UKCarbonIntensity",
    "country_fallback",
    "electricity_maps_zone",
    "get_json",
]
