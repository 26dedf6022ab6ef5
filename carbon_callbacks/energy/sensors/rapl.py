"""CPU package and DRAM energy from RAPL counters through Linux powercap (``energy_uj``).

Which zones are counted (one package domain per socket for cpu, each DRAM domain for ram) is
found by ``rapl_zones.discover``; an AMD die or MMIO zone that shows a package counter already
taken under another name is told apart at open (within one package, the same counter value and
the same increase over two reads ``MIRROR_CHECK_S`` apart) and counted once.

- wraparound through ``max_energy_range_uj``: the meter's thread reads at least twice per the
  shortest wrap time at the zone's largest plausible power, so no wrap goes unseen; a reading
  no wrap can explain (a reset to 0 when the driver reloads) is refused and that interval
  estimated, and reads a starved thread made too far apart estimate their wraps (see
  ``counters.py``).

Since Linux 5.10 ``energy_uj`` is readable by root only (CVE-2020-8694): the warning says what
to run (``rapl_zones.permission_fix``), and the meter falls back to the CPU model meanwhile.
"""

from __future__ import annotations

import os
import time
from typing import Literal

from carbon_callbacks._checks import check_scope
from carbon_callbacks.energy.sensors.base import Sensor, SensorError, SourceMissing, check_interval
from carbon_callbacks.energy.sensors.counters import MAX_REFUSED, CounterTrack
from carbon_callbacks.energy.sensors.process import CpuShare
from carbon_callbacks.energy.sensors.ranges import (
    RAPL_AMD_REL,
    RAPL_INTEL_REL,
    RAPL_QUANTUM_J,
    counter_range,
)
from carbon_callbacks.energy.sensors.rapl_zones import (
    Discovery,
    Zone,
    cpu_vendor,
    discover,
    package_of,
    permission_fix,
    read_energy_uj,
)
from carbon_callbacks.records import Energy, Method

__all__ = ["Discovery", "RaplSensor", "Zone", "cpu_vendor", "discover", "permission_fix",
           "read_energy_uj"]

MIRROR_CHECK_S = 0.02
"""Seconds between the two reads at open that tell a mirrored counter from a distinct one."""

MIRROR_CANDIDATE_UJ = 2_000_000
"""Zones whose first reads differ by more than this are distinct without a second read: a
mirror read a moment later differs by at most one counter update (about 1 ms of power)."""

MIRROR_FLOOR_UJ = 1_000
"""Slack on top of the relative tolerance, for idle counters (a few RAPL energy units)."""


def _pause(seconds: float) -> None:
    time.sleep(seconds)


def _may_mirror(z: Zone, k: Zone, rz: int, rk: int) -> bool:
    """Whether two zones could show one counter, from one read of each."""
    return (z.kind == k.kind and z.max_range_uj == k.max_range_uj and rz != 0 and rk != 0
            and package_of(z) == package_of(k) and abs(rz - rk) <= MIRROR_CANDIDATE_UJ)


def _is_mirror(z: Zone, k: Zone, first: tuple[int, int], second: tuple[int, int]) -> bool:
    """Whether zones z and k show one counter, from two reads of each (``(z, k)`` raw values).

    The two reads of a pair are made a moment apart, so a mirror can differ by one counter
    update when the reads straddle it: values and increases must agree within a quarter of
    the increase between the reads, not exactly.
    """
    dz = (second[0] - first[0]) % z.max_range_uj
    dk = (second[1] - first[1]) % k.max_range_uj
    tol = 0.25 * max(dz, dk) + MIRROR_FLOOR_UJ

    def close(a: int, b: int) -> bool:
        gap = abs(a - b)
        return min(gap, z.max_range_uj - gap) <= tol  # either side of a wrap

    return close(*first) and close(*second) and abs(dz - dk) <= tol


class RaplSensor(Sensor):
    """Energy of the CPU packages (``component="cpu"``) or DRAM (``"ram"``) from RAPL counters.

    Args:
        component: "cpu" for package domains, "ram" for DRAM domains.
        root: the powercap folder.
        scope: "machine" counts the whole counters; "process" this process tree's share of the
            machine's busy CPU time in each interval (RAPL is machine-wide).
        interval: the meter's interval; reads are made more often when a counter could wrap
            sooner.
        vendor: "intel" or "amd" (sets the accuracy band); default from ``/proc/cpuinfo``.
        share: the CPU share to attribute by under scope="process", over a process tree
            shared with the other sensors; default its own.
    """

    method = "counter"

    def __init__(self, component: Literal["cpu", "ram"] = "cpu", *,
                 root: str | os.PathLike[str] = "/sys/class/powercap",
                 scope: Literal["process", "machine"] = "process", interval: float = 1.0,
                 vendor: str | None = None, share: CpuShare | None = None) -> None:
        if component not in ("cpu", "ram"):
            raise ValueError(f"component: expected 'cpu' or 'ram', got {component!r}")
        check_scope(scope)
        self.component = component
        self.root = os.fspath(root)
        self.scope = scope
        self.interval = check_interval(interval)
        self.vendor = cpu_vendor() if vendor is None else vendor
        self.poll_interval = self.interval
        self._zones: tuple[Zone, ...] = ()
        self._tracks: list[CounterTrack] = []
        # Attributed joules (each interval's increase times its share): the point, what the
        # counters read, and how far above the counters' band the estimates may reach.
        self._joules = 0.0
        self._exact = 0.0
        self._over = 0.0
        self._share = (share or CpuShare()) if scope == "process" else None
        self._t = 0.0
        self.discovery: Discovery | None = None
        self.mirrors: list[str] = []

    @property
    def rel(self) -> float:
        """The accuracy band of these counters."""
        amd = self.vendor == "amd" or any(z.control == "amd-rapl" for z in self._zones)
        return RAPL_AMD_REL if amd else RAPL_INTEL_REL

    @property
    def reason(self) -> str:
        """What is counted, and how it is attributed."""
        zones = ", ".join(z.label for z in self._zones) or "none"
        text = f"RAPL counter: {zones}"
        if self._share is not None:
            text += ("; scope=process: machine-wide counter x this process tree's share of busy "
                     "CPU time")
        for note in self.mirrors:
            text += f"; {note}"
        return text

    def open(self, now: float) -> None:
        d = discover(self.root)
        self.discovery = d
        if d.problem:
            raise SourceMissing(d.problem)
        zones = d.packages if self.component == "cpu" else d.drams
        self.mirrors = []
        if not zones:
            what = "package" if self.component == "cpu" else "DRAM"
            raise SourceMissing(f"no RAPL {what} domain under {d.root}")
        raws = [read_energy_uj(z.path, self.root) for z in zones]
        # AMD dies (and some MMIO zones) can show one socket's counter under several names.
        # Reads one after the other can straddle a counter update, so equal values are not
        # required: near values now and the same increase a moment later, in one package.
        pairs = {(i, j) for j in range(len(zones)) for i in range(j)
                 if _may_mirror(zones[i], zones[j], raws[i], raws[j])}
        again = raws
        if pairs:  # only then the second read, so start() pays the pause only here
            _pause(MIRROR_CHECK_S)
            again = [read_energy_uj(z.path, self.root) for z in zones]
        keep: list[int] = []
        for j, z in enumerate(zones):
            twin = next((i for i in keep if (i, j) in pairs and _is_mirror(
                zones[i], z, (raws[i], raws[j]), (again[i], again[j]))), None)
            if twin is None:
                keep.append(j)
            else:
                self.mirrors.append(f"{z.label} mirrors {zones[twin].label}; counted once")
        kept = [zones[i] for i in keep]
        self._zones = tuple(kept)
        self._tracks = []
        for i in keep:  # the baseline is the first read, at ``now``
            track = CounterTrack(zones[i].label, unit_j=1e-6, ceiling_w=zones[i].max_power_w,
                                 wrap=zones[i].max_range_uj)
            if not track.valid(raws[i]):
                raise SensorError(f"{zones[i].path / 'energy_uj'} reads {raws[i]}, outside "
                                  f"0-{zones[i].max_range_uj}")
            track.open(raws[i], now)
            self._tracks.append(track)
        self._joules = self._exact = self._over = 0.0
        self._t = now
        if self._share is not None:
            self._share.open(now)
        shortest = min(z.wrap_seconds for z in self._zones)
        self.poll_interval = max(0.01, min(self.interval, shortest / 2))

    def _read(self, now: float, refresh: bool = False) -> None:
        raws = [read_energy_uj(z.path, self.root) for z in self._zones]
        d_joules = d_exact = d_over = 0.0
        given_up = ""
        for track, raw in zip(self._tracks, raws, strict=True):
            before = (track.joules, track.exact, track.top - track.exact)
            verdict = track.read(raw, now)
            d_joules += track.joules - before[0]
            d_exact += track.exact - before[1]
            d_over += track.top - track.exact - before[2]
            if verdict.note:
                self.report(verdict.note, cause=f"rapl-{verdict.kind}:{self.root}:{track.label}")
            if track.refused >= MAX_REFUSED:
                track.give_up()
                given_up = (f"{track.label}: {MAX_REFUSED} counter readings in a row refused as "
                            "impossible for the device")
        share = self._share.advance(refresh=refresh) if self._share is not None else 1.0
        self._joules += d_joules * share
        self._exact += d_exact * share
        self._over += d_over * share
        self._t = now
        if given_up:
            raise SensorError(given_up, cause=f"rapl-given-up:{self.root}")

    def sample(self, now: float) -> None:
        self._read(now, refresh=True)

    def totals(self, now: float) -> Energy:
        self._read(now)
        estimated = [t.take_estimated() for t in self._tracks]
        return self._energy(Method.MODEL if any(estimated) else Method.COUNTER)

    def last_good(self) -> Energy:
        return self._energy(Method.MODEL if any(t.pending for t in self._tracks)
                            else Method.COUNTER)

    def _energy(self, method: Method) -> Energy:
        # The counters' band around what they read; estimates from 0 to their ceiling.
        low, high = counter_range(self._exact, self.rel, RAPL_QUANTUM_J)
        return Energy(self._joules, low, max(self._joules, high + self._over), method,
                      self.reason, tuple(z.name for z in self._zones))

    def describe(self) -> str:
        return f"{self.component}: counter - {self.reason}"
