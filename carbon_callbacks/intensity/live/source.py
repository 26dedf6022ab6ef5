"""What every live provider shares: a cache per zone and hour, fallback, one warning per cause.

A provider subclass only says how to ask for the latest value and for a span of finished hours;
``LiveSource`` decides when to ask, caches answers and failures, and never lets a failure reach
training: the embedded value for the zone answers instead, and the user is told once per cause.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from typing import Any

from carbon_callbacks._warn import WarnOnce
from carbon_callbacks.intensity.live.http import LiveError, check_timeout, get_json
from carbon_callbacks.intensity.sources import HOUR, BaseIntensity, IntensitySample, hour_start
from carbon_callbacks.intensity.tables import ZoneIntensity

logger = logging.getLogger(__name__)

LIVE_SPREAD = 0.10
"""Band around a live hourly value: the provider's figure for that hour, not a yearly mean."""

DEFAULT_TIMEOUT = 2.0
"""Seconds for the whole request (DNS, connect, headers, body): an epoch end must not hang."""


def iso_utc(t: float, seconds: bool = True) -> str:
    fmt = "%Y-%m-%dT%H:%M:%SZ" if seconds else "%Y-%m-%dT%H:%MZ"
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime(fmt)


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
        self.zone = zone
        self.fallback = fallback
        self.timeout = check_timeout(timeout)
        self._cache: dict[tuple[str, float], IntensitySample] = {}
        self._lock = threading.Lock()
        self._warned = WarnOnce(logger)
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
        return get_json(url, headers or {}, self.timeout)

    def _live(self, g: float, hour: float) -> IntensitySample:
        return IntensitySample(
            g,
            g * (1 - LIVE_SPREAD),
            g * (1 + LIVE_SPREAD),
            f"{self.provider} {self.zone} hourly, {iso_utc(hour)}",
        )

    def _fallback(self, exc: Exception) -> IntensitySample:
        cause = getattr(exc, "cause", type(exc).__name__)
        z = self.fallback
        message = str(exc)
        secret = self._secret()
        if secret:
            message = message.replace(secret, "***")
        self._warned(
            cause,
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
        first, now_hour = hour_start(start), hour_start(time.time())
        last = min(hour_start(end), now_hour - HOUR)
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
        hour = hour_start((start + end) / 2.0)
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
                if hour >= hour_start(time.time()):
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
