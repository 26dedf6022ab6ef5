"""Carbon intensity: embedded tables, location resolution, live providers, per-window CO2e.

No network unless asked: ``resolve()`` reads an explicit argument, then environment variables
(``CARBON_CALLBACKS_INTENSITY``, ``CARBON_CALLBACKS_CLOUD_REGION``, ``CARBON_CALLBACKS_ZONE``;
see ``carbon_callbacks.intensity.resolution``), uses a live provider only if one is configured
(``CARBON_CALLBACKS_ELECTRICITYMAPS_TOKEN`` or ``CARBON_CALLBACKS_PROVIDER``), and otherwise the
tables shipped in ``data/`` (sources and licences in ``data/README.md``). With nothing set it
uses the world average and warns once, naming what to set.

Example::

    from carbon_callbacks.intensity import emissions, resolve

    source = resolve("FR")                 # or 56.0, "FRA", "gcp:europe-west1", None
    g, provenance = source.intensity_at(t0, t1)
    result = emissions(window, source)      # Emissions(g, low, high, intensity, provenance, pue)

The live providers (``ElectricityMaps``, ``UKCarbonIntensity``) live in
``carbon_callbacks.intensity.live`` (``providers``, and ``http`` for the one deadline-bounded
GET they share) and are loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from carbon_callbacks.intensity.co2e import Emissions, HourPart, check_pue, emissions
from carbon_callbacks.intensity.env import ENV_VARS
from carbon_callbacks.intensity.resolution import IntensitySpec, resolve
from carbon_callbacks.intensity.sources import (
    CallableIntensity,
    FixedIntensity,
    IntensitySample,
    IntensitySource,
    MixIntensity,
    ZoneSource,
)
from carbon_callbacks.intensity.tables import ZoneIntensity, all_zones, lookup_cloud, lookup_country

if TYPE_CHECKING:
    from carbon_callbacks.intensity.live import ElectricityMaps, UKCarbonIntensity

__all__ = [
    "ENV_VARS",
    "CallableIntensity",
    "ElectricityMaps",
    "Emissions",
    "FixedIntensity",
    "HourPart",
    "IntensitySample",
    "IntensitySource",
    "IntensitySpec",
    "MixIntensity",
    "UKCarbonIntensity",
    "ZoneIntensity",
    "ZoneSource",
    "all_zones",
    "check_pue",
    "emissions",
    "lookup_cloud",
    "lookup_country",
    "resolve",
]

_LIVE = {"ElectricityMaps", "UKCarbonIntensity"}


def __getattr__(name: str) -> Any:
    # The live providers pull in http.client and ssl on use; load them only when named.
    if name in _LIVE:
        from carbon_callbacks.intensity import live

        return getattr(live, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
