"""Offline intensity sources: a fixed value, an embedded zone, an IPCC fuel mix, a user callable.

Every source answers ``intensity_at(start, end) -> (gCO2e/kWh, provenance)`` (the
``IntensitySource`` protocol below). Ours also answer ``sample(start, end) -> IntensitySample``,
which adds the low/high band that ``emissions()`` turns into a CO2e range, and say with
``time_varying`` whether a long window needs splitting hour by hour.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from carbon_callbacks._warn import WarnOnce
from carbon_callbacks.intensity import tables
from carbon_callbacks.intensity.tables import MIX_SPREAD, ZoneIntensity

logger = logging.getLogger(__name__)

MAX_G_PER_KWH = 2000.0
"""Above any real grid (the dirtiest yearly averages are about 1,300 g/kWh): a typo or kg/MWh."""

HOUR = 3600.0
"""Seconds in a clock hour: live providers answer per hour, and windows are cut at hours."""


def hour_start(t: float) -> float:
    """The start of the clock hour (Unix time) holding ``t``."""
    return math.floor(t / HOUR) * HOUR


@runtime_checkable
class IntensitySource(Protocol):
    """Anything that can say how dirty a kWh was between two wall-clock times.

    ``start`` and ``end`` are Unix epoch seconds. The result is ``(gCO2e/kWh, provenance)``,
    where provenance says in a few words where the figure comes from.
    """

    def intensity_at(self, start: float, end: float) -> tuple[float, str]:
        """The average intensity over ``[start, end]`` and where it comes from."""
        ...


@dataclass(frozen=True)
class IntensitySample:
    """An intensity with its band and provenance, for one stretch of time.

    Attributes:
        g_per_kwh: Central value, gCO2e/kWh.
        low: Lower bound of the band, gCO2e/kWh.
        high: Upper bound of the band, gCO2e/kWh.
        provenance: Where the figure comes from.
    """

    g_per_kwh: float
    low: float
    high: float
    provenance: str


def check_intensity(value: object, name: str = "intensity") -> float:
    """Validate a gCO2e/kWh figure given by a user.

    Args:
        value: The figure.
        name: The argument or environment variable it came from, for the message.

    Returns:
        The value as a float.

    Raises:
        TypeError: Not a real number.
        ValueError: Negative, not finite, or above 2000 g/kWh.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of gCO2e/kWh, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or v > MAX_G_PER_KWH:
        raise ValueError(
            f"{name}={value!r} is not a plausible grid intensity: give gCO2e/kWh between 0 and "
            f"{MAX_G_PER_KWH:g} (e.g. 56 for France, 380 for the US average)"
        )
    return v


def check_spread(spread: object, name: str = "spread") -> float:
    """Validate a relative band half-width in [0, 1)."""
    if isinstance(spread, bool) or not isinstance(spread, (int, float)):
        raise TypeError(f"{name} must be a fraction such as 0.1, got {type(spread).__name__}")
    s = float(spread)
    if not 0.0 <= s < 1.0:
        raise ValueError(f"{name}={spread!r} must be a fraction in [0, 1), e.g. 0.1 for +/-10%")
    return s


class BaseIntensity:
    """Shared plumbing: ``intensity_at`` is ``sample`` without the band."""

    time_varying: bool = False

    def sample(self, start: float, end: float) -> IntensitySample:  # pragma: no cover
        """The intensity over ``[start, end]`` with its band."""
        raise NotImplementedError

    def intensity_at(self, start: float, end: float) -> tuple[float, str]:
        """The average intensity over ``[start, end]`` and where it comes from."""
        s = self.sample(start, end)
        return s.g_per_kwh, s.provenance

    def __str__(self) -> str:
        # What a run's metadata records as its intensity source; time-invariant sources answer
        # the same at any time, so asking at 0 costs nothing and opens nothing.
        return self.sample(0.0, 0.0).provenance


class FixedIntensity(BaseIntensity):
    """A constant intensity given by the user (a PPA figure, a facility's own number).

    Args:
        g_per_kwh: gCO2e/kWh, 0 to 2000.
        spread: Relative half-width of the band, e.g. 0.1 for +/-10%. Default 0: the user's
            number is taken as exact.
        origin: Where the value came from, kept in the provenance (``"intensity=56"``).

    Raises:
        TypeError: ``g_per_kwh`` is not a number.
        ValueError: ``g_per_kwh`` is negative or above 2000, or ``spread`` is outside [0, 1).

    Example::

        source = FixedIntensity(56.0)
        source.intensity_at(0.0, 3600.0)  # (56.0, 'fixed 56 gCO2e/kWh (intensity=56.0)')
    """

    def __init__(self, g_per_kwh: float, *, spread: float = 0.0, origin: str = "") -> None:
        self.g_per_kwh = check_intensity(g_per_kwh, origin.partition("=")[0] or "intensity")
        self.spread = check_spread(spread)
        self.origin = origin or f"intensity={self.g_per_kwh:g}"
        self._sample = IntensitySample(
            self.g_per_kwh,
            self.g_per_kwh * (1 - self.spread),
            self.g_per_kwh * (1 + self.spread),
            f"fixed {self.g_per_kwh:g} gCO2e/kWh ({self.origin})",
        )

    def sample(self, start: float, end: float) -> IntensitySample:
        """The constant value."""
        return self._sample

    def __repr__(self) -> str:
        return f"FixedIntensity({self.g_per_kwh:g}, spread={self.spread:g})"


class ZoneSource(BaseIntensity):
    """A country, aggregate or cloud region from the embedded tables (no network).

    Args:
        zone: A row of the tables, e.g. from ``tables.lookup_country("FR")``.
    """

    def __init__(self, zone: ZoneIntensity) -> None:
        self.zone = zone
        self._sample = IntensitySample(zone.g_per_kwh, zone.low, zone.high, zone.provenance)

    def sample(self, start: float, end: float) -> IntensitySample:
        """The table's value for this zone (yearly: the same at every hour)."""
        return self._sample

    def __repr__(self) -> str:
        return f"ZoneSource({self.zone.code!r}, {self.zone.g_per_kwh:g} g/kWh)"


# What people write for a fuel -> the row of the IPCC table it means.
FUEL_ALIASES = {
    "wind": "wind_onshore",
    "solar": "solar_pv_utility",
    "pv": "solar_pv_utility",
    "natural_gas": "gas",
    "lignite": "coal",
    "hard_coal": "coal",
    "water": "hydro",
    "bio": "biomass",
}


class MixIntensity(BaseIntensity):
    """The lifecycle intensity of a generation mix given by the user (IPCC AR5 medians).

    For on-site or contracted supply whose fuel shares are known, e.g. a data centre running on
    70% hydro and 30% gas.

    Args:
        mix: Fuel -> share. Shares are normalised, so percentages or fractions both work.
            Fuels: coal, gas, oil, biomass, geothermal, hydro, nuclear, wind_onshore,
            wind_offshore, solar_pv_utility, solar_pv_rooftop, solar_csp (aliases: wind, solar).

    Raises:
        ValueError: Unknown fuel (with suggestions), negative share, or all shares zero.

    Example::

        MixIntensity({"hydro": 70, "gas": 30}).intensity_at(0, 3600)[0]  # 163.8
    """

    def __init__(self, mix: Mapping[str, float]) -> None:
        factors = tables.fuel_factors()
        shares: dict[str, float] = {}
        for fuel, share in mix.items():
            key = str(fuel).strip().lower().replace(" ", "_").replace("-", "_")
            key = FUEL_ALIASES.get(key, key)
            if key not in factors:
                hint = ", ".join(tables._suggest(key, factors)) or ", ".join(factors)
                raise ValueError(f"mix: unknown fuel {fuel!r}; closest valid fuels: {hint}")
            if isinstance(share, bool) or not isinstance(share, (int, float)):
                raise ValueError(f"mix[{fuel!r}] must be a number, got {share!r}")
            if not math.isfinite(share) or share < 0:
                raise ValueError(f"mix[{fuel!r}]={share!r}: shares must be >= 0")
            shares[key] = shares.get(key, 0.0) + float(share)
        total = sum(shares.values())
        if total <= 0:
            raise ValueError("mix: give at least one fuel with a positive share")
        self.shares = {k: v / total for k, v in shares.items() if v > 0}
        g = sum(share * factors[fuel][0] for fuel, share in self.shares.items())
        parts = ", ".join(f"{fuel} {share:.0%}" for fuel, share in self.shares.items())
        self._sample = IntensitySample(
            g, g * (1 - MIX_SPREAD), g * (1 + MIX_SPREAD), f"IPCC AR5 lifecycle mix ({parts})"
        )

    def sample(self, start: float, end: float) -> IntensitySample:
        """The mix's weighted lifecycle intensity."""
        return self._sample

    def __repr__(self) -> str:
        return f"MixIntensity({self.shares!r})"


class CallableIntensity(BaseIntensity):
    """A user function ``fn(start, end) -> g_per_kwh`` or ``-> (g_per_kwh, provenance)``.

    The function is called once per hour of each window. If it raises or returns something that
    is not a plausible intensity, the fallback is used for that hour and one warning is logged:
    a broken intensity function never stops training.

    Args:
        fn: The function; ``start``/``end`` are Unix epoch seconds.
        spread: Relative half-width of the band around its values (default 0).
        fallback: Used when ``fn`` fails; default the embedded world average.

    Raises:
        TypeError: ``fn`` is not callable.
    """

    time_varying = True

    def __init__(
        self,
        fn: Callable[[float, float], float | tuple[float, str]],
        *,
        spread: float = 0.0,
        fallback: BaseIntensity | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"intensity function must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.spread = check_spread(spread)
        self.name = getattr(fn, "__qualname__", None) or type(fn).__name__
        self.fallback = fallback
        self._warned = WarnOnce(logger)

    def sample(self, start: float, end: float) -> IntensitySample:
        """Ask the function; fall back (with one warning per cause) when it fails."""
        try:
            out = self.fn(start, end)
            value, provenance = out if isinstance(out, tuple) else (out, f"function {self.name}")
            g = check_intensity(value, f"{self.name}() result")
            return IntensitySample(
                g, g * (1 - self.spread), g * (1 + self.spread), str(provenance)
            )
        except Exception as exc:  # noqa: BLE001 - a user function must not stop training
            cause = type(exc).__name__
            fallback = self.fallback or ZoneSource(tables.world())
            s = fallback.sample(start, end)
            self._warned(
                cause,
                "intensity function %s failed (%s: %s); using %s instead",
                self.name,
                cause,
                exc,
                s.provenance,
            )
            return IntensitySample(
                s.g_per_kwh, s.low, s.high, f"{s.provenance} (fallback: {self.name} failed)"
            )

    def __str__(self) -> str:
        return f"function {self.name}"

    def __repr__(self) -> str:
        return f"CallableIntensity({self.name})"
