"""Live intensity providers: Electricity Maps v3 and the UK Carbon Intensity API.

Only ever used when the user configures one (an explicit object, a token or a provider in the
environment): nothing here runs at import, and ``urllib`` is imported on the first request.

Every request has a connect/read timeout and a total deadline that also covers DNS (the request
runs in a daemon thread that is abandoned when the deadline passes, because ``getaddrinfo``
ignores socket timeouts). Results are cached per zone and hour. Any failure (no network,
timeout, HTTP error, bad token, malformed answer) falls back to the embedded value for that zone
for that hour, with one warning per cause. An Electricity Maps token is sent in the
``auth-token`` header only: it is never logged, written anywhere, put in an exception message or
shown by ``repr``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, urlencode

from carbon_callbacks.intensity import tables
from carbon_callbacks.intensity.sources import MAX_G_PER_KWH, BaseIntensity, IntensitySample
from carbon_callbacks.intensity.tables import ZoneIntensity

logger = logging.getLogger(__name__)

HOUR = 3600.0
LIVE_SPREAD = 0.10
"""Band around a live hourly value: the provider's figure for that hour, not a yearly mean."""

DEFAULT_TIMEOUT = 2.0
"""Seconds for the whole request (DNS, connect, read): an epoch end must not hang on a network."""

ELECTRICITYMAPS_URL = "https://api.electricitymap.org/v3"
UK_CARBON_INTENSITY_URL = "https://api.carbonintensity.org.uk"
TOKEN_ENV = "CARBON_CALLBACKS_ELECTRICITYMAPS_TOKEN"


class LiveError(Exception):
    """A provider request failed; ``cause`` is a short label used to warn once per cause."""

    def __init__(self, cause: str, detail: str = "") -> None:
        super().__init__(f"{cause}{': ' + detail if detail else ''}")
        self.cause = cause


def _hour(t: float) -> float:
    return math.floor(t / HOUR) * HOUR


def _iso(t: float, seconds: bool = True) -> str:
    fmt = "%Y-%m-%dT%H:%M:%SZ" if seconds else "%Y-%m-%dT%H:%MZ"
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime(fmt)


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
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LiveError("malformed response", "intensity is not a number")
    v = float(value)
    if not math.isfinite(v) or v < 0 or v > MAX_G_PER_KWH:
        raise LiveError("malformed response", "intensity out of range")
    return v


def _origin(url: str) -> tuple[str, str, int | None]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or {"http": 80, "https": 443}.get(scheme)
    except ValueError:  # a malformed port in a Location header
        port = -1
    return scheme, (parts.hostname or "").lower(), port


def _same_origin_redirects() -> Any:
    """A redirect handler that follows moves within the same scheme, host and port only.

    urllib's own handler copies every request header, ``auth-token`` included, to whatever
    host a ``Location`` names, over plain http too: a proxy, a hijacked DNS answer or a
    compromised API could collect the token. A provider that moved elsewhere is a
    configuration change for the user (the base URL), so the request fails and falls back.
    """
    import urllib.request

    class SameOriginRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):
            scheme, host, port = _origin(newurl)
            if (scheme, host, port) != _origin(req.full_url):
                # Name where it pointed (scheme, host, port; never the query) so the user
                # can fix the base URL; the token is in no part of this message.
                where = f"{scheme}://{host}" + (f":{port}" if port not in (80, 443) else "")
                raise LiveError(
                    f"HTTP {code} redirect refused",
                    f"the server sent the request to another origin ({where}); set the "
                    "provider's base URL to it if you trust it",
                )
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    return SameOriginRedirect


def http_get_json(url: str, headers: Mapping[str, str], timeout: float) -> Any:
    """GET ``url`` and decode JSON within ``timeout`` seconds all told, DNS included.

    Args:
        url: Full URL (no secrets in it: tokens go in ``headers``).
        headers: Request headers.
        timeout: Deadline for the whole request.

    Returns:
        The decoded JSON.

    Raises:
        LiveError: With cause ``timeout``, ``HTTP <code>``, ``HTTP <code> redirect refused``
            (a redirect to another scheme, host or port, which would carry the headers
            there), ``connection failed`` or ``malformed response``. Messages never include
            header values.
    """
    import urllib.error
    import urllib.request

    result: dict[str, Any] = {}
    opener = urllib.request.build_opener(_same_origin_redirects())

    def fetch() -> None:
        try:
            req = urllib.request.Request(url, headers=dict(headers))
            with opener.open(req, timeout=timeout) as resp:
                result["body"] = resp.read(1_000_000)
        except LiveError as exc:
            result["error"] = exc
        except urllib.error.HTTPError as exc:
            result["error"] = LiveError(f"HTTP {exc.code}")
        except (TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError) or "timed out" in str(reason):
                result["error"] = LiveError("timeout", f"no answer within {timeout:g} s")
            else:
                result["error"] = LiveError("connection failed", type(reason).__name__)
        except Exception as exc:  # noqa: BLE001 - anything else is still a failed request
            result["error"] = LiveError("connection failed", type(exc).__name__)

    worker = threading.Thread(target=fetch, name="carbon-callbacks-intensity", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise LiveError("timeout", f"no answer within {timeout:g} s")
    if "error" in result:
        raise result["error"]
    try:
        return json.loads(result["body"].decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise LiveError("malformed response", "not JSON") from exc


class LiveSource(BaseIntensity):
    """Shared cache, fallback and warning logic for hourly live providers.

    Args:
        zone: Provider zone name (used for the cache key and provenance).
        fallback: Embedded row used when the provider fails.
        timeout: Deadline in seconds for each request, DNS included.
    """

    time_varying = True
    provider = "live"

    def __init__(self, zone: str, fallback: ZoneIntensity, timeout: float = DEFAULT_TIMEOUT):
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.zone = zone
        self.fallback = fallback
        self.timeout = float(timeout)
        self._cache: dict[tuple[str, float], IntensitySample] = {}
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        # Per thread: inside request_batch(), the first failure of this call (or None).
        self._batch = threading.local()
        self.requests = 0
        """How many HTTP requests this source has made (for tests and diagnostics)."""

    def __str__(self) -> str:
        return f"{self.provider} {self.zone} hourly (fallback: {self.fallback.provenance})"

    # Subclasses: fetch the latest value, and a past span as {hour_start: g_per_kwh}.
    def _fetch_latest(self) -> float:
        raise NotImplementedError

    def _fetch_range(self, start: float, end: float) -> dict[float, float]:
        raise NotImplementedError

    def _secret(self) -> str:
        return ""

    def _get(self, url: str, headers: Mapping[str, str] | None = None) -> Any:
        self.requests += 1
        return http_get_json(url, headers or {}, self.timeout)

    def _live(self, g: float, hour: float) -> IntensitySample:
        return IntensitySample(
            g,
            g * (1 - LIVE_SPREAD),
            g * (1 + LIVE_SPREAD),
            f"{self.provider} {self.zone} hourly, {_iso(hour)}",
        )

    def _fallback(self, exc: Exception) -> IntensitySample:
        cause = getattr(exc, "cause", type(exc).__name__)
        z = self.fallback
        if cause not in self._warned:
            self._warned.add(cause)
            message = str(exc)
            secret = self._secret()
            if secret:
                message = message.replace(secret, "***")
            logger.warning(
                "%s request for zone %s failed (%s); using the embedded value %.4g gCO2e/kWh "
                "(%s) for the hours it cannot answer",
                self.provider,
                self.zone,
                message,
                z.g_per_kwh,
                z.provenance,
            )
        return IntensitySample(
            z.g_per_kwh, z.low, z.high, f"{z.provenance} (fallback: {self.provider} {cause})"
        )

    @contextlib.contextmanager
    def request_batch(self) -> Iterator[None]:
        """Within this block, one failed request ends requests for the rest of the block.

        ``emissions()`` wraps each window in it: after a timeout or an error, the window's
        remaining hours use the embedded fallback at once (not cached, so a later window asks
        again), so an epoch end waits for at most one deadline per source, not one per hour.
        """
        state = self._batch
        outer = getattr(state, "active", False)
        if not outer:
            state.active, state.failure = True, None
        try:
            yield
        finally:
            if not outer:
                state.active, state.failure = False, None

    def _failed_in_batch(self) -> Exception | None:
        if not getattr(self._batch, "active", False):
            return None
        return self._batch.failure

    def _note_failure(self, exc: Exception) -> None:
        if getattr(self._batch, "active", False) and self._batch.failure is None:
            self._batch.failure = exc

    def prefetch(self, start: float, end: float) -> None:
        """Fill the cache for every finished hour in ``[start, end]`` with one request.

        ``emissions()`` calls this before asking hour by hour, so a 3-hour window costs one
        range request rather than three. Hours the answer leaves out get the fallback, cached,
        so they are not asked for again one by one. Never raises.
        """
        first, now_hour = _hour(start), _hour(time.time())
        last = min(_hour(end), now_hour - HOUR)
        hours = [first + i * HOUR for i in range(int((last - first) / HOUR) + 1)]
        with self._lock:
            missing = [h for h in hours if (self.zone, h) not in self._cache]
            if not missing or self._failed_in_batch() is not None:
                return
            try:
                series = self._fetch_range(missing[0], missing[-1] + HOUR)
            except Exception as exc:  # noqa: BLE001 - fall back, never raise into training
                self._note_failure(exc)
                sample = self._fallback(exc)
                for h in missing:
                    self._cache[(self.zone, h)] = sample
                return
            gap: IntensitySample | None = None
            for h in missing:
                if h in series:
                    self._cache[(self.zone, h)] = self._live(series[h], h)
                else:
                    # The provider answered for the span and has nothing for this finished
                    # hour: asking again for that hour alone would get the same answer.
                    if gap is None:
                        gap = self._fallback(LiveError("no data for that hour"))
                    self._cache[(self.zone, h)] = gap

    def sample(self, start: float, end: float) -> IntensitySample:
        """The provider's value for the hour holding the middle of ``[start, end]``."""
        hour = _hour((start + end) / 2.0)
        key = (self.zone, hour)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                return cached
            failure = self._failed_in_batch()
            if failure is not None:
                # This call already waited for one failed request: do not wait again.
                return self._fallback(failure)
            try:
                if hour >= _hour(time.time()):
                    sample = self._live(self._fetch_latest(), hour)
                else:
                    series = self._fetch_range(hour, hour + HOUR)
                    if hour not in series:
                        raise LiveError("no data for that hour")
                    sample = self._live(series[hour], hour)
            except Exception as exc:  # noqa: BLE001 - fall back, never raise into training
                # Cached too: a dead network costs one timeout per zone and hour, not per call.
                self._note_failure(exc)
                sample = self._fallback(exc)
            self._cache[key] = sample
            return sample


def _hourly_means(points: list[tuple[float, float]]) -> dict[float, float]:
    by_hour: dict[float, list[float]] = {}
    for t, g in points:
        by_hour.setdefault(_hour(t), []).append(g)
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
        root = base_url or os.environ.get("CARBON_CALLBACKS_ELECTRICITYMAPS_URL")
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
        query = urlencode({"zone": self.zone, "start": _iso(start), "end": _iso(end)})
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
            base_url
            or os.environ.get("CARBON_CALLBACKS_UK_CARBON_INTENSITY_URL")
            or UK_CARBON_INTENSITY_URL
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
        span = f"{_iso(start, seconds=False)}/{_iso(end, seconds=False)}"
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
