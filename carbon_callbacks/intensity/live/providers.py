"""Live intensity providers: Electricity Maps v3 and the UK Carbon Intensity API.

Only ever used when the user configures one (an explicit object, a token or a provider in the
environment): nothing here runs at import, and no socket is opened before the first request.

Every request goes through ``http.get_json``: one deadline covers DNS, connect, headers and body,
and nothing of the request is left once it returns. ``LiveSource`` caches per zone and hour and
falls back to the embedded value for the zone on any failure (no network, timeout, HTTP error,
bad token, malformed answer), with one warning per cause. An Electricity Maps token is sent
in the ``auth-token`` header only: it is never logged, written anywhere, put in an exception
message or shown by ``repr``.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, urlencode

from carbon_callbacks.intensity import tables
from carbon_callbacks.intensity.env import (
    ELECTRICITYMAPS_URL_ENV,
    TOKEN_ENV,
    UK_CARBON_INTENSITY_URL_ENV,
)
from carbon_callbacks.intensity.live.http import LiveError
from carbon_callbacks.intensity.live.source import DEFAULT_TIMEOUT, LiveSource, iso_utc
from carbon_callbacks.intensity.sources import check_intensity, hour_start
from carbon_callbacks.intensity.tables import ZoneIntensity

ELECTRICITYMAPS_URL = "https://api.electricitymap.org/v3"
UK_CARBON_INTENSITY_URL = "https://api.carbonintensity.org.uk"


def _parse_time(text: Any) -> float:
    if not isinstance(text, str):
        raise LiveError("malformed response", "datetime is not a string")
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise LiveError("malformed response", "unreadable datetime") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def _plausible(value: Any) -> float:
    try:
        return check_intensity(value, "the provider's intensity")
    except (TypeError, ValueError) as exc:
        raise LiveError("malformed response", "intensity is not a plausible number") from exc


def _hourly_means(points: list[tuple[float, float]]) -> dict[float, float]:
    by_hour: dict[float, list[float]] = {}
    for t, g in points:
        by_hour.setdefault(hour_start(t), []).append(g)
    return {h: sum(v) / len(v) for h, v in by_hour.items()}


class ElectricityMaps(LiveSource):
    """Hourly carbon intensity from the Electricity Maps v3 API (needs a token).

    Uses ``/carbon-intensity/latest`` for the current hour and ``/carbon-intensity/past-range``
    for finished hours, with the token in the ``auth-token`` header.

    Args:
        zone: Electricity Maps zone, e.g. ``"DE"``, ``"FR"``, ``"US-CAL-CISO"``. A country
            given another way (``"FRA"``, ``"France"``, ``"UK"``) is sent as its ISO alpha-2
            code, the only country form the API knows.
        token: API token; default ``$CARBON_CALLBACKS_ELECTRICITYMAPS_TOKEN``.
        base_url: API root; default ``$CARBON_CALLBACKS_ELECTRICITYMAPS_URL`` or the public API.
        timeout: Deadline per request in seconds, DNS included (default 2).
        fallback: Embedded row used on failure; default the zone's country (or the world).

    Raises:
        ValueError: No token given and the environment variable is unset, an empty zone, or
            an aggregate such as ``"WORLD"`` (Electricity Maps has none).

    Example::

        source = ElectricityMaps("DE")  # token from the environment
        g, provenance = source.intensity_at(time.time() - 60, time.time())
    """

    provider = "Electricity Maps"

    def __init__(
        self,
        zone: str,
        token: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        fallback: ZoneIntensity | None = None,
    ) -> None:
        zone = electricity_maps_zone(str(zone))
        token = token if token is not None else os.environ.get(TOKEN_ENV, "")
        if not token:
            raise ValueError(
                f"Electricity Maps needs an API token: pass token=... or set {TOKEN_ENV}"
            )
        super().__init__(zone, fallback or country_fallback(zone), timeout)
        self._token = token
        root = base_url or os.environ.get(ELECTRICITYMAPS_URL_ENV)
        self.base_url = (root or ELECTRICITYMAPS_URL).rstrip("/")

    def _secret(self) -> str:
        return self._token

    def _headers(self) -> dict[str, str]:
        return {"auth-token": self._token, "Accept": "application/json"}

    def _fetch_latest(self) -> float:
        url = f"{self.base_url}/carbon-intensity/latest?{urlencode({'zone': self.zone})}"
        body = self._get(url, self._headers())
        if not isinstance(body, dict):
            raise LiveError("malformed response", "expected a JSON object")
        return _plausible(body.get("carbonIntensity"))

    def _fetch_range(self, start: float, end: float) -> dict[float, float]:
        query = urlencode({"zone": self.zone, "start": iso_utc(start), "end": iso_utc(end)})
        body = self._get(f"{self.base_url}/carbon-intensity/past-range?{query}", self._headers())
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise LiveError("malformed response", "expected a 'data' list")
        points = []
        for item in data:
            if not isinstance(item, dict):
                raise LiveError("malformed response", "data item is not an object")
            t = _parse_time(item.get("datetime"))
            if start <= t < end:
                points.append((t, _plausible(item.get("carbonIntensity"))))
        return _hourly_means(points)

    def __repr__(self) -> str:
        return f"ElectricityMaps({self.zone!r}, base_url={self.base_url!r})"


_OUTWARD = re.compile(r"^[A-Z]{1,2}[0-9][A-Z0-9]?$")


class UKCarbonIntensity(LiveSource):
    """Half-hourly intensity for Great Britain from the UK Carbon Intensity API (no key).

    National figures use ``/intensity`` (actual where published, else forecast); with a
    postcode, the regional ``/regional/postcode/{outward}`` forecast. Half-hours are averaged
    into hours.

    Args:
        postcode: A GB postcode or its outward part (``"RG10"``, ``"SW1A 1AA"``); None for
            the national figure.
        base_url: API root; default ``$CARBON_CALLBACKS_UK_CARBON_INTENSITY_URL`` or the
            public API.
        timeout: Deadline per request in seconds, DNS included (default 2).

    Raises:
        ValueError: The postcode's outward code is not a valid GB outward code.
    """

    provider = "UK Carbon Intensity"

    def __init__(
        self,
        postcode: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        outward = None
        if postcode is not None:
            outward = str(postcode).strip().upper().split(" ")[0]
            if not _OUTWARD.match(outward):
                raise ValueError(
                    f"postcode={postcode!r} is not a GB postcode: give e.g. 'RG10' or 'SW1A 1AA'"
                )
        super().__init__(
            f"GB postcode {outward}" if outward else "GB", tables.lookup_country("GB"), timeout
        )
        self.postcode = outward
        self.base_url = (
            base_url or os.environ.get(UK_CARBON_INTENSITY_URL_ENV) or UK_CARBON_INTENSITY_URL
        ).rstrip("/")

    @staticmethod
    def _value(item: Any) -> tuple[float, float]:
        if not isinstance(item, dict) or not isinstance(item.get("intensity"), dict):
            raise LiveError("malformed response", "entry without 'intensity'")
        intensity = item["intensity"]
        value = intensity.get("actual")
        if value is None:
            value = intensity.get("forecast")
        return _parse_time(item.get("from")), _plausible(value)

    def _entries(self, body: Any) -> list[Any]:
        data = body.get("data") if isinstance(body, dict) else None
        if self.postcode:
            # Regional answers nest the half-hours one level down, as a list or an object.
            if isinstance(data, list) and data:
                data = data[0]
            data = data.get("data") if isinstance(data, dict) else None
        if not isinstance(data, list) or not data:
            raise LiveError("malformed response", "expected a non-empty 'data' list")
        return data

    def _fetch_latest(self) -> float:
        if self.postcode:
            url = f"{self.base_url}/regional/postcode/{quote(self.postcode)}"
        else:
            url = f"{self.base_url}/intensity"
        return self._value(self._entries(self._get(url))[0])[1]

    def _fetch_range(self, start: float, end: float) -> dict[float, float]:
        span = f"{iso_utc(start, seconds=False)}/{iso_utc(end, seconds=False)}"
        if self.postcode:
            url = f"{self.base_url}/regional/intensity/{span}/postcode/{quote(self.postcode)}"
        else:
            url = f"{self.base_url}/intensity/{span}"
        points = [self._value(item) for item in self._entries(self._get(url))]
        return _hourly_means([(t, g) for t, g in points if start <= t < end])

    def __repr__(self) -> str:
        return f"UKCarbonIntensity(postcode={self.postcode!r}, base_url={self.base_url!r})"


def electricity_maps_zone(code: str) -> str:
    """The zone name Electricity Maps expects for what a user typed.

    Electricity Maps names countries by ISO alpha-2 (``"FR"``, ``"GB"``) and grid areas by
    sub-zones (``"US-CAL-CISO"``, ``"DK-DK1"``); an alpha-3 code or ``"UK"`` would cost a
    failed request every hour.

    Args:
        code: A country (alpha-2, alpha-3, ``"UK"`` or its name) or an Electricity Maps zone.

    Returns:
        The alpha-2 code for a country in the embedded table, else the code in upper case.

    Raises:
        ValueError: Empty, or an aggregate (``"WORLD"``, ``"EU"``, continents).
    """
    key = code.strip().upper()
    if not key:
        raise ValueError("zone must name an Electricity Maps zone such as 'DE' or 'FR'")
    try:
        row = tables.lookup_country(key)
    except ValueError:
        return key  # a sub-zone, or a zone the embedded table does not list
    if row.kind == "aggregate":
        raise ValueError(
            f"zone={code.strip()!r} is an aggregate and Electricity Maps has no aggregate zones: "
            f"use intensity={row.code!r} for the embedded yearly average, or a country or zone "
            "such as 'DE' or 'US-CAL-CISO'"
        )
    return tables.country_alpha2(row.code) or key


def country_fallback(zone: str) -> ZoneIntensity:
    """The embedded row for a provider zone: its country (``"US-CAL-CISO"`` -> USA), else world."""
    for candidate in (zone, zone.split("-")[0]):
        try:
            return tables.lookup_country(candidate)
        except ValueError:
            continue
    return tables.world()
