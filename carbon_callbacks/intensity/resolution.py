"""Turn what the user gave (or nothing) into an ``IntensitySource``.

Order: explicit argument > environment variables > live provider if configured > embedded
tables. A place named by the argument or the environment is looked up live only when a provider
is configured (a token, or ``CARBON_CALLBACKS_PROVIDER``); otherwise the embedded table answers
and no socket is ever opened. When nothing names a place, the world average is used with one
warning that says what to set.

Environment variables:

``CARBON_CALLBACKS_INTENSITY``
    A value in gCO2e/kWh (``"56"``) or any string ``resolve()`` accepts (``"FR"``). Wins over
    the others.
``CARBON_CALLBACKS_CLOUD_REGION``
    ``provider:region``, e.g. ``gcp:europe-west1``, ``aws:eu-west-3``, ``azure:westeurope``.
``CARBON_CALLBACKS_ZONE``
    A country (ISO 3166 alpha-2/alpha-3), aggregate (``WORLD``, ``EU``) or Electricity Maps zone.
    Electricity Maps is asked for countries by alpha-2 (``FRA`` -> ``FR``, ``UK`` -> ``GB``);
    aggregates, which it does not have, always use the embedded table (with one warning).
``CARBON_CALLBACKS_ELECTRICITYMAPS_TOKEN``
    Enables Electricity Maps for the zone named by the argument or ``CARBON_CALLBACKS_ZONE``.
``CARBON_CALLBACKS_ELECTRICITYMAPS_URL``
    API root override (a proxy, or a local server in tests).
``CARBON_CALLBACKS_PROVIDER``
    ``electricitymaps``, ``uk-carbon-intensity`` or ``none`` (embedded tables only, even with a
    token set).
``CARBON_CALLBACKS_UK_POSTCODE``
    GB postcode for ``uk-carbon-intensity`` (national figure when unset).
``CARBON_CALLBACKS_UK_CARBON_INTENSITY_URL``
    API root override for the UK API.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

from carbon_callbacks._warn import WarnOnce
from carbon_callbacks.intensity import tables
from carbon_callbacks.intensity.env import (  # noqa: F401 - ENV_VARS is re-exported
    CLOUD_REGION_ENV,
    ENV_VARS,
    INTENSITY_ENV,
    PROVIDER_ENV,
    TOKEN_ENV,
    UK_POSTCODE_ENV,
    ZONE_ENV,
)
from carbon_callbacks.intensity.sources import (
    CallableIntensity,
    FixedIntensity,
    IntensitySource,
    MixIntensity,
    ZoneSource,
)

logger = logging.getLogger(__name__)

PROVIDERS = ("electricitymaps", "uk-carbon-intensity", "none")
_UK_CODES = {"GB", "GBR", "UK"}

_warned = WarnOnce(logger)


IntensitySpec: TypeAlias = (
    float | str | IntensitySource | Mapping[str, float] | Callable[[float, float], Any] | None
)
"""What ``intensity=`` takes everywhere: see ``resolve``."""


def _provider() -> str:
    name = os.environ.get(PROVIDER_ENV, "").strip().lower()
    if name:
        if name not in PROVIDERS:
            raise ValueError(
                f"{PROVIDER_ENV}={name!r} is not a provider; use one of {', '.join(PROVIDERS)}"
            )
        return name
    return "electricitymaps" if os.environ.get(TOKEN_ENV) else "none"


def _place(code: str, origin: str) -> IntensitySource:
    """A country or zone: live if a provider is configured, else the embedded table."""
    provider = _provider()
    if provider == "electricitymaps":
        row = _zone_or_country(code, origin)
        if row.kind == "aggregate":
            # Electricity Maps has no WORLD, EU or continent zones: asking would fail every hour.
            _warned(
                f"em-aggregate-{row.code}",
                "Electricity Maps has no aggregate zones; %s=%r uses the embedded yearly "
                "average %.4g gCO2e/kWh (%s)",
                origin,
                code,
                row.g_per_kwh,
                row.provenance,
            )
            return ZoneSource(row)
        from carbon_callbacks.intensity import live  # loaded only when a provider is configured

        # The constructor turns "FRA", "France" or "UK" into the alpha-2 code the API knows.
        return live.ElectricityMaps(code, fallback=row)
    if provider == "uk-carbon-intensity":
        if code.strip().upper() in _UK_CODES:
            from carbon_callbacks.intensity import live

            return live.UKCarbonIntensity(os.environ.get(UK_POSTCODE_ENV) or None)
        _warned(
            "uk-not-gb",
            "%s=uk-carbon-intensity covers Great Britain only; %s=%r uses the embedded table",
            PROVIDER_ENV,
            origin,
            code,
        )
    return ZoneSource(_zone_or_country(code, origin))


def _zone_or_country(code: str, origin: str) -> tables.ZoneIntensity:
    try:
        return tables.lookup_country(code)
    except ValueError as exc:
        # A sub-national grid zone ("US-CAL-CISO") has no row of its own: use its country and
        # say so in the provenance rather than refuse a valid Electricity Maps zone.
        head = code.strip().upper().split("-")[0]
        if "-" in code and len(head) == 2:
            try:
                country = tables.lookup_country(head)
            except ValueError:
                pass
            else:
                import dataclasses

                return dataclasses.replace(
                    country, source=f"{country.source} (country of zone {code.strip().upper()})"
                )
        raise ValueError(f"{origin}: {exc}".replace("intensity: ", "", 1)) from None


def _from_string(text: str, origin: str) -> IntensitySource:
    spec = text.strip()
    if not spec:
        raise ValueError(f"{origin} is empty: give gCO2e/kWh, a country code or a cloud region")
    try:
        value = float(spec)
    except ValueError:
        pass
    else:
        return FixedIntensity(value, origin=f"{origin}={spec}")
    head, sep, rest = spec.partition(":")
    head = head.strip().lower()
    if sep and head in tables.CLOUD_PROVIDERS:
        try:
            return ZoneSource(tables.lookup_cloud(spec))
        except ValueError as exc:
            raise ValueError(f"{origin}: {exc}".replace("intensity: ", "", 1)) from None
    if sep and head in ("electricitymaps", "em"):
        from carbon_callbacks.intensity import live

        return live.ElectricityMaps(rest, fallback=_zone_or_country(rest, origin))
    if head in ("uk-carbon-intensity", "ukci"):
        from carbon_callbacks.intensity import live

        return live.UKCarbonIntensity(rest.strip() or None)
    if sep:
        raise ValueError(
            f"{origin}={spec!r}: unknown prefix {head!r}; use gcp:, aws:, azure:, "
            "electricitymaps: or uk-carbon-intensity:"
        )
    return _place(spec, origin)


def resolve(intensity: IntensitySpec = None) -> IntensitySource:
    """The intensity source for a run, from an argument, the environment, or the world average.

    Args:
        intensity: What the user passed:

            - ``None``: read the environment (see this module's docstring); if nothing is set,
              the world average with one warning naming the argument and variables to set.
            - a number: a fixed gCO2e/kWh (0 to 2000).
            - a string: a number, a country (``"FR"``, ``"FRA"``, case-insensitive), an
              aggregate (``"WORLD"``, ``"EU"``), a cloud region (``"gcp:europe-west1"``,
              ``"aws:eu-west-3"``, ``"azure:westeurope"``), ``"electricitymaps:DE"`` or
              ``"uk-carbon-intensity"`` / ``"uk-carbon-intensity:RG10"``.
            - a mapping fuel -> share: an IPCC lifecycle mix (``MixIntensity``).
            - an ``IntensitySource``: returned as is.
            - any other callable ``fn(start, end)``: wrapped in ``CallableIntensity``.

    Returns:
        An object with ``intensity_at(start, end) -> (g_per_kwh, provenance)``.

    Raises:
        ValueError: Unknown code (the message names it and suggests close valid codes), a value
            outside 0-2000 g/kWh, or a live provider asked for without its token.
        TypeError: An argument of a type none of the above.
    """
    if intensity is None:
        return _from_environment()
    if isinstance(intensity, bool):
        raise TypeError("intensity must be a number, a code string or a source, not a bool")
    if isinstance(intensity, (int, float)):
        return FixedIntensity(intensity, origin=f"intensity={intensity:g}")
    if isinstance(intensity, str):
        return _from_string(intensity, "intensity")
    if isinstance(intensity, IntensitySource):
        return intensity
    if isinstance(intensity, Mapping):
        return MixIntensity(intensity)
    if callable(intensity):
        return CallableIntensity(intensity)
    raise TypeError(
        "intensity must be None, gCO2e/kWh, a code such as 'FR' or 'gcp:europe-west1', a fuel "
        f"mix mapping or an IntensitySource, got {type(intensity).__name__}"
    )


def _from_environment() -> IntensitySource:
    for name in (INTENSITY_ENV, CLOUD_REGION_ENV, ZONE_ENV):
        value = os.environ.get(name, "").strip()
        if value:
            return _from_string(value, name)
    if _provider() == "uk-carbon-intensity":
        return _place("GB", PROVIDER_ENV)
    if os.environ.get(TOKEN_ENV):
        _warned(
            "token-no-zone",
            "%s is set but no zone is named; set %s (e.g. DE) to use Electricity Maps",
            TOKEN_ENV,
            ZONE_ENV,
        )
    world = tables.world()
    _warned(
        "world",
        "no location for carbon intensity: using the world average %.4g gCO2e/kWh (%s), which "
        "can be 10x off for a given country. Pass intensity='FR' (a country code, "
        "'gcp:europe-west1', or gCO2e/kWh) or set %s, %s or %s.",
        world.g_per_kwh,
        world.provenance,
        ZONE_ENV,
        CLOUD_REGION_ENV,
        INTENSITY_ENV,
    )
    return ZoneSource(world)
