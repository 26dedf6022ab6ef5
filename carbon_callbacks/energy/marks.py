"""What a meter keeps of its recent readings, and how two of them make a window.

A ``Reading`` carries only joules and methods per component; the meter keeps each reading's
full detail (every component's cumulative ``Energy`` and how many notes each sensor chain had
recorded) for its last ``MAX_MARKS`` readings, so that the window between two of them has
ranges and names what went wrong in between.
"""

from __future__ import annotations

import bisect
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


@dataclass(frozen=True)
class MarkDetail:
    """One reading's detail: each component's cumulative energy, each chain's note count."""

    totals: Mapping[str, Energy]
    notes: tuple[int, ...]  # len(chain.notes) per chain, in chain order


class MarkBook:
    """The detail of a meter's last ``MAX_MARKS`` readings, by sequence number, and each
    component's methods over time (so a window knows the worst method inside it)."""

    def __init__(self) -> None:
        self._marks: OrderedDict[int, MarkDetail] = OrderedDict()
        # Per component, the readings where its method changed: (first seq, method) runs,
        # appended only on a change, so a reading costs a comparison.
        self._runs: dict[str, tuple[list[int], list[Method]]] = {}
        self._dropped: dict[str, Method] = {}  # the worst of the runs dropped from the front

    def add(self, seq: int, detail: MarkDetail, keep: int | None = None) -> None:
        """Keep one reading's detail, forgetting the oldest but ``keep`` (the run's start)."""
        self._marks[seq] = detail
        for name, energy in detail.totals.items():
            starts, methods = self._runs.setdefault(name, ([], []))
            if not methods or methods[-1] is not energy.method:
                starts.append(seq)
                methods.append(energy.method)
                if len(starts) > 2 * MAX_MARKS:
                    self._drop_runs(name)
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
        self._runs.clear()
        self._dropped.clear()

    def worst(self, name: str, after: int, upto: int) -> Method | None:
        """The worst method of a component's readings with ``after < seq <= upto``."""
        runs = self._runs.get(name)
        if not runs or upto <= after:
            return None
        starts, methods = runs
        last = bisect.bisect_right(starts, upto) - 1
        if last < 0:
            return None
        first = bisect.bisect_right(starts, after + 1) - 1
        seen = methods[max(0, first):last + 1]
        if first < 0 and name in self._dropped:
            seen.append(self._dropped[name])
        return Method.worst(*seen)

    def _drop_runs(self, name: str) -> None:
        # Only a method flapping at every reading gets here; the runs dropped are older than
        # every reading still kept but the start, for which their worst is kept.
        starts, methods = self._runs[name]
        gone = methods[:MAX_MARKS]
        if name in self._dropped:
            gone.append(self._dropped[name])
        self._dropped[name] = Method.worst(*gone)
        del starts[:MAX_MARKS], methods[:MAX_MARKS]

    def window(self, a: Reading, b: Reading, chains: Sequence[FallbackChain]) -> Window:
        """The window from ``a`` to ``b`` (readings of one run), with ranges where both details
        are known and the notes the chains recorded in between."""
        da, db = self._marks.get(a.seq), self._marks.get(b.seq)
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
                method = Method(b.methods.get(name, Method.UNAVAILABLE))
                part = Energy(j, *_relative_range(j, method), method)
            if db is not None and da is not None:
                # A reading inside the window may have had a worse method than its end (an
                # interval estimated, then settled): the window is only as good as its worst.
                worst = self.worst(name, a.seq, b.seq)
                new = [note for i, c in enumerate(chains) if c.component == name
                       for note in c.notes[da.notes[i]:db.notes[i]]]
                if new or (worst is not None and worst > part.method):
                    reason = "; ".join([*new, part.reason]) if part.reason else "; ".join(new)
                    method = part.method if worst is None else Method.worst(part.method, worst)
                    part = dataclasses.replace(part, reason=reason, method=method)
            comps[name] = part
        return Window(start_wall=a.wall, end_wall=b.wall,
                      seconds=max(0.0, b.monotonic - a.monotonic), components=comps)


def _relative_range(joules: float, method: str) -> tuple[float, float]:
    """The widest band a method can have, for readings whose detail is gone."""
    if method == Method.COUNTER:
        return ranges.counter_range(joules, ranges.RAPL_AMD_REL)
    if method == Method.POLLED:
        return ranges.counter_range(joules, 2 * ranges.NVML_REL)
    if method == Method.MODEL:
        return ranges.model_range(joules)
    return joules, joules
