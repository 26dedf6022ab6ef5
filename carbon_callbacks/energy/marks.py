"""What a meter keeps of its recent readings, and how two of them make a window.

A ``Reading`` carries only joules and methods per component; the meter keeps each reading's
full detail (every component's cumulative ``Energy`` and how many notes each sensor chain had
recorded) for its last ``MAX_MARKS`` readings, so that the window between two of them has
ranges and names what went wrong in between.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from carbon_callbacks.energy.sensors import ranges
from carbon_callbacks.energy.sensors.base import FallbackChain
from carbon_callbacks.records import Energy, Method, Reading, Window

MAX_MARKS = 10_000
"""Readings whose detail is kept; an older one still makes a window, with its method's band."""

_FROM_ZERO = Energy(0.0, 0.0, 0.0, Method.COUNTER)  # the start of a component that began later


MethodCounts = Mapping[str, tuple[int, ...]]
"""Per component, how many readings of the run so far had each method (in ``Method`` order)."""


@dataclass(frozen=True)
class MarkDetail:
    """One reading's detail: each component's cumulative energy, each chain's note count, and
    the run's method counts up to it (so a window knows the worst method inside it)."""

    totals: Mapping[str, Energy]
    notes: tuple[int, ...]  # len(chain.notes) per chain, in chain order
    methods: MethodCounts = dataclasses.field(default_factory=dict)


def count_methods(before: MethodCounts, totals: Mapping[str, Energy]) -> MethodCounts:
    """``before`` with one more reading of each component's method."""
    out = dict(before)
    for name, energy in totals.items():
        counts = list(out.get(name, (0,) * len(Method)))
        counts[energy.method.rank] += 1
        out[name] = tuple(counts)
    return out


class MarkBook:
    """The detail of a meter's last ``MAX_MARKS`` readings, by sequence number."""

    def __init__(self) -> None:
        self._marks: OrderedDict[int, MarkDetail] = OrderedDict()

    def add(self, seq: int, detail: MarkDetail, keep: int | None = None) -> None:
        """Keep one reading's detail, forgetting the oldest but ``keep`` (the run's start)."""
        self._marks[seq] = detail
        while len(self._marks) > MAX_MARKS:
            oldest = next(iter(self._marks))
            if oldest == keep:
                self._marks.move_to_end(oldest)
                oldest = next(iter(self._marks))
            del self._marks[oldest]

    def get(self, seq: int) -> MarkDetail | None:
        """The detail of a reading, or None once forgotten."""
        return self._marks.get(seq)

    def clear(self) -> None:
        """Forget every reading."""
        self._marks.clear()


def window_between(a: Reading, b: Reading, da: MarkDetail | None, db: MarkDetail | None,
                   chains: Sequence[FallbackChain]) -> Window:
    """The window from ``a`` to ``b`` (readings of one run), with ranges where both details
    are known and the notes the chains recorded in between."""
    comps: dict[str, Energy] = {}
    for name, jb in b.joules.items():
        tb = db.totals.get(name) if db else None
        if da is not None and tb is not None:
            # Both ends known (none at a: the component began after a, so from 0).
            part = tb - da.totals.get(name, _FROM_ZERO)
        else:
            # An end whose detail was forgotten: subtracting a zero baseline would make the
            # range span the whole run, so the method's relative band is used instead.
            j = max(0.0, jb - a.joules.get(name, 0.0))
            method = b.methods.get(name, Method.UNAVAILABLE)
            part = Energy(j, *_relative_range(j, method), method)
        if db is not None and da is not None:
            # A reading inside the window may have had a worse method than its end (an
            # interval estimated, then settled): the window is only as good as its worst.
            worst = _worst_between(da.methods.get(name), db.methods.get(name))
            new = [note for i, c in enumerate(chains) if c.component == name
                   for note in c.notes[da.notes[i]:db.notes[i]]]
            if new or (worst is not None and worst > part.method):
                reason = "; ".join([*new, part.reason]) if part.reason else "; ".join(new)
                method = part.method if worst is None else Method.worst(part.method, worst)
                part = dataclasses.replace(part, reason=reason, method=method)
        comps[name] = part
    return Window(start_wall=a.wall, end_wall=b.wall,
                  seconds=max(0.0, b.monotonic - a.monotonic), components=comps)


def _worst_between(a: tuple[int, ...] | None, b: tuple[int, ...] | None) -> Method | None:
    if b is None:
        return None
    a = a or (0,) * len(b)
    seen = [m for m, n0, n1 in zip(Method, a, b, strict=True) if n1 > n0]
    return Method.worst(*seen) if seen else None


def _relative_range(joules: float, method: str) -> tuple[float, float]:
    """The widest band a method can have, for readings whose detail is gone."""
    if method == Method.COUNTER:
        return ranges.counter_range(joules, ranges.RAPL_AMD_REL)
    if method == Method.POLLED:
        return ranges.counter_range(joules, 2 * ranges.NVML_REL)
    if method == Method.MODEL:
        return ranges.model_range(joules)
    return joules, joules
