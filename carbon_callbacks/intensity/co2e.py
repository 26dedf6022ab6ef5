"""Grams CO2e for a measured window: energy x intensity, hour by hour, with a range and a PUE."""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass

from carbon_callbacks._warn import WarnOnce
from carbon_callbacks.intensity import tables
from carbon_callbacks.intensity.sources import (
    HOUR,
    IntensitySample,
    IntensitySource,
    check_intensity,
    hour_start,
)
from carbon_callbacks.records import JOULES_PER_KWH, Window

logger = logging.getLogger(__name__)

MAX_PUE = 5.0
"""Far above any reported data centre (about 1.1-2.5): a larger value is a mistake."""

_warned = WarnOnce(logger)


@dataclass(frozen=True)
class HourPart:
    """The share of a window that fell in one clock hour, and the intensity used for it."""

    start: float
    end: float
    kwh: float
    g_per_kwh: float
    g: float
    provenance: str


@dataclass(frozen=True)
class Emissions:
    """CO2e of one window, with its range, the intensity used and where it came from.

    Attributes:
        g: Grams CO2e (central).
        low: Lower bound: the window's low energy x the intensity's low band.
        high: Upper bound: the window's high energy x the intensity's high band.
        intensity_g_per_kwh: The energy-weighted intensity over the window.
        provenance: Where the intensity came from (several sources joined by ``"; "``).
        pue: The power usage effectiveness applied (1.0 = measured energy only).
        parts: The window cut at clock hours, with each hour's intensity and grams.
    """

    g: float
    low: float
    high: float
    intensity_g_per_kwh: float
    provenance: str
    pue: float
    parts: tuple[HourPart, ...] = ()


def check_pue(pue: object) -> float:
    """Validate a PUE factor (1.0 to 5.0).

    Raises:
        TypeError: Not a number.
        ValueError: Below 1 (a facility cannot use less than its IT load) or above 5.
    """
    if isinstance(pue, bool) or not isinstance(pue, (int, float)):
        raise TypeError(f"pue must be a number such as 1.1, got {type(pue).__name__}")
    value = float(pue)
    if not math.isfinite(value) or value < 1.0 or value > MAX_PUE:
        raise ValueError(
            f"pue={pue!r} is not a power usage effectiveness: give 1.0 (measured energy only, "
            f"the default) up to {MAX_PUE:g}; typical cloud data centres report 1.1-1.2"
        )
    return value


def _hours(start: float, end: float) -> list[tuple[float, float]]:
    """``[start, end]`` cut at clock-hour boundaries."""
    if end <= start:
        return [(start, start)]
    cuts = [start]
    boundary = hour_start(start) + HOUR
    while boundary < end:
        cuts.append(boundary)
        boundary += HOUR
    cuts.append(end)
    return list(zip(cuts[:-1], cuts[1:], strict=True))


def _sample(source: IntensitySource, start: float, end: float) -> IntensitySample:
    """Ask a source, our own (with a band) or anyone's (without); never raise into training."""
    try:
        sample = getattr(source, "sample", None)
        if callable(sample):
            s = sample(start, end)
            if isinstance(s, IntensitySample):
                check_intensity(s.g_per_kwh, f"{type(source).__name__}.sample()")
                return s
        g, provenance = source.intensity_at(start, end)
        g = check_intensity(float(g), f"{type(source).__name__}.intensity_at()")
        return IntensitySample(g, g, g, str(provenance))
    except Exception as exc:  # noqa: BLE001 - a faulty source must not stop training
        world = tables.world()
        cause = f"{type(source).__name__}:{type(exc).__name__}"
        _warned(
            cause,
            "intensity source %r failed (%s: %s); using the world average %.4g gCO2e/kWh",
            source,
            type(exc).__name__,
            exc,
            world.g_per_kwh,
        )
        return IntensitySample(
            world.g_per_kwh, world.low, world.high, f"{world.provenance} (fallback)"
        )


def emissions(window: Window, source: IntensitySource, pue: float = 1.0) -> Emissions:
    """Grams CO2e of a window, applying the intensity hour by hour.

    The window is cut at clock hours and its energy shared between the pieces by duration
    (the meter gives a window's total, so power is taken as even within it). A time-varying
    source (live provider, user function) is asked once per hour; a yearly table once.

    Args:
        window: Measured energy (``Window`` from the meter or built by hand).
        source: Where the intensity comes from (see ``resolve()``).
        pue: Facility overhead factor applied to the energy, 1.0 (default) to 5.0. It is
            recorded in the result; nothing is applied unless you pass it.

    Returns:
        The window's ``Emissions``.

    Raises:
        TypeError: ``pue`` is not a number.
        ValueError: ``pue`` is outside 1.0-5.0.

    Example::

        from carbon_callbacks.intensity import emissions, resolve
        e = emissions(window, resolve("FR"))
        print(f"{e.g:.1f} g ({e.low:.1f}-{e.high:.1f}) at {e.intensity_g_per_kwh:.0f} g/kWh")
    """
    pue = check_pue(pue)
    # A live provider stops asking after the first failed request of this window, so an
    # epoch end waits for one deadline at most (see LiveSource.request_batch).
    batch = getattr(source, "request_batch", None)
    with batch() if callable(batch) else contextlib.nullcontext():
        return _emissions(window, source, pue)


def _emissions(window: Window, source: IntensitySource, pue: float) -> Emissions:
    start, end = float(window.start_wall), float(window.end_wall)
    if getattr(source, "time_varying", True):
        pieces = _hours(start, end)
        prefetch = getattr(source, "prefetch", None)
        if callable(prefetch) and len(pieces) > 1:
            try:
                prefetch(start, end)
            except Exception as exc:  # noqa: BLE001 - prefetch is an optimisation only
                logger.debug("intensity prefetch failed: %s", exc)
    else:
        pieces = [(start, end)]
    span = end - start
    kwh = window.joules / JOULES_PER_KWH
    kwh_low = window.low / JOULES_PER_KWH
    kwh_high = window.high / JOULES_PER_KWH

    parts: list[HourPart] = []
    g = low = high = 0.0
    provenances: dict[str, None] = {}
    for a, b in pieces:
        share = (b - a) / span if span > 0 else 1.0
        s = _sample(source, a, b)
        part_g = kwh * share * s.g_per_kwh * pue
        g += part_g
        low += kwh_low * share * s.low * pue
        high += kwh_high * share * s.high * pue
        provenances[s.provenance] = None
        parts.append(HourPart(a, b, kwh * share, s.g_per_kwh, part_g, s.provenance))
    values = {p.g_per_kwh for p in parts}
    if len(values) == 1:
        # One intensity for the whole window (a yearly table, a fixed value, one hour): say
        # exactly that value; g / (kwh * pue) would give it back as 200.00000000000003.
        intensity = values.pop()
    elif kwh > 0:
        intensity = g / (kwh * pue)
    else:
        # No energy: report the time-weighted intensity so the record still says what applied.
        weights = [(p.end - p.start) or 1.0 for p in parts]
        weighted = sum(w * p.g_per_kwh for w, p in zip(weights, parts, strict=True))
        intensity = weighted / sum(weights)
    # "+ 0.0" turns a negative zero (from a window of -0.0 J) into 0.0, never shown as "-0".
    return Emissions(
        g=g + 0.0,
        low=min(low, g) + 0.0,
        high=max(high, g) + 0.0,
        intensity_g_per_kwh=intensity + 0.0,
        provenance="; ".join(provenances),
        pue=pue,
        parts=tuple(parts),
    )
