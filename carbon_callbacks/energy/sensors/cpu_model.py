"""CPU energy estimated from load x TDP, for machines with no readable energy counter.

Power of the CPU package at utilisation ``u`` is ``TDP x f(u)`` where ``f`` is the curve Teads
measured on server CPUs and Boavizta/Cloud Carbon Footprint reuse (Davy 2021, "Building an AWS
EC2 carbon emissions dataset", Teads Engineering): 12% of TDP idle, 32% at 10% load, 75% at 50%,
102% at 100%, linear in between. It never gives 0 W, so a busy CPU is never reported as free.

``scope="machine"`` counts the whole package; ``scope="process"`` counts the process tree's
share of the machine's busy CPU time in each interval.

The TDP comes from the bundled table (``data/cpu_tdp.csv``, from CodeCarbon's ``cpu_power.csv``)
matched against the CPU's model name, times the number of sockets. An unknown CPU (most VMs
report a generic name) gets ``DEFAULT_W_PER_CPU`` per logical CPU and says so.
"""

from __future__ import annotations

import bisect
import functools
import platform
import re
from dataclasses import dataclass
from importlib import resources
from typing import Literal

from carbon_callbacks._checks import check_number, check_scope
from carbon_callbacks.energy.sensors.base import Sensor, SensorError, check_interval
from carbon_callbacks.energy.sensors.process import CpuShare, logical_cpus, machine_busy_seconds
from carbon_callbacks.energy.sensors.ranges import model_range
from carbon_callbacks.records import Energy, Method

DEFAULT_W_PER_CPU = 3.5
"""Watts per logical CPU at full load when the CPU model is unknown.

Cloud Carbon Footprint's average maximum for an AWS vCPU (3.5 W; minimum 0.74 W), derived from
SPECpower results of the host CPUs (cloudcarbonfootprint.org, Methodology, "Compute").
"""

LOAD_CURVE: tuple[tuple[float, float], ...] = ((0.0, 0.12), (0.1, 0.32), (0.5, 0.75), (1.0, 1.02))
"""(utilisation, fraction of TDP) points of the Teads curve, linear in between."""

CPUINFO = "/proc/cpuinfo"


def load_fraction(u: float) -> float:
    """Fraction of TDP drawn at utilisation ``u`` (0..1), from ``LOAD_CURVE``."""
    u = min(1.0, max(0.0, u))
    xs = [p[0] for p in LOAD_CURVE]
    i = max(1, bisect.bisect_left(xs, u))
    (x0, y0), (x1, y1) = LOAD_CURVE[i - 1], LOAD_CURVE[i]
    return y0 + (y1 - y0) * (u - x0) / (x1 - x0)


@dataclass(frozen=True)
class CpuInfo:
    """What the CPU model needs to know about this machine's CPUs."""

    model_name: str
    sockets: int
    logical: int


def read_cpu_info(cpuinfo: str = CPUINFO) -> CpuInfo:
    """The CPU's model name and socket count (from ``/proc/cpuinfo`` where there is one)."""
    name, sockets = "", set()
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not name:
                    name = value.strip()
                elif key == "physical id":
                    sockets.add(value.strip())
    except OSError:
        pass
    if not name:
        name = platform.processor() or platform.machine()
    return CpuInfo(name, max(1, len(sockets)), logical_cpus())


def _tokens(name: str) -> list[str]:
    cleaned = re.sub(r"\((?:r|tm)\)", " ", name, flags=re.IGNORECASE)
    cleaned = re.sub(r"@.*$", " ", cleaned)
    cleaned = re.sub(r"\b(?:cpu|processor|\d+-core|with radeon.*)\b", " ", cleaned,
                     flags=re.IGNORECASE)
    return cleaned.lower().split()


@functools.lru_cache(maxsize=1)
def _tdp_text() -> str:
    """The bundled CSV, lower-cased, with a newline in front so every row starts with one."""
    path = resources.files("carbon_callbacks.energy.sensors").joinpath("data/cpu_tdp.csv")
    return "\n" + path.read_text(encoding="utf-8").lower().replace("\r\n", "\n")


def _tdp_of(name: str) -> float | None:
    """TDP of one lower-case table name, found in the CSV text without parsing all of it.

    Parsing the 4,890 rows took about 7 ms at every meter construction, in the training
    thread; a lookup needs only the 10-20 runs of words of one model name.
    """
    text = _tdp_text()
    for key in (f"\n{name},", f'\n"{name}",'):
        at = text.find(key)
        if at >= 0:
            end = text.find("\n", at + len(key))
            value = text[at + len(key) : end if end >= 0 else len(text)]
            try:
                return float(value.strip())
            except ValueError:
                return None
    return None


def lookup_tdp(model_name: str) -> tuple[str, float] | None:
    """The table row that best matches a CPU model name, as (name, TDP W), or None.

    The longest run of the name's words (marks like "(R)", "CPU" and the clock removed) that is
    a table entry wins; a match must contain a digit so a family name alone never matches.
    """
    toks = _tokens(model_name)
    best: tuple[str, float] | None = None
    for i in range(len(toks)):
        for j in range(len(toks), i, -1):
            cand = " ".join(toks[i:j])
            if best is not None and len(cand) <= len(best[0]):
                continue
            tdp = _tdp_of(cand)
            if tdp is not None:
                if any(c.isdigit() for c in cand):
                    best = (cand, tdp)
                break
    return best


class CpuModelSensor(Sensor):
    """CPU energy from psutil load x TDP: method ``model``, labelled as an estimate.

    Args:
        scope: "process" (this process tree's share of busy CPU time) or "machine".
        tdp_w: the package TDP to use instead of the table (all sockets together).
        info: CPU facts; default read from this machine.
        interval: seconds between load samples by the meter's thread.
        share: the CPU share to attribute by under scope="process", over a process tree
            shared with the other sensors; default its own.
    """

    component = "cpu"
    method = "model"

    def __init__(self, *, scope: Literal["process", "machine"] = "process",
                 tdp_w: float | None = None, info: CpuInfo | None = None,
                 interval: float = 1.0, share: CpuShare | None = None) -> None:
        check_scope(scope)
        if tdp_w is not None:
            tdp_w = check_number(tdp_w, "tdp_w", above=0, unit="W",
                                 fix="or None to look the CPU up in the TDP table")
        self.scope = scope
        self.info = info or read_cpu_info()
        self.poll_interval = check_interval(interval)
        if tdp_w is not None:
            self.tdp_w, self.tdp_source = float(tdp_w), "TDP given by the caller"
        else:
            match = lookup_tdp(self.info.model_name)
            if match is not None:
                self.tdp_w = match[1] * self.info.sockets
                self.tdp_source = (f"TDP {match[1]:g} W x {self.info.sockets} socket(s) for "
                                   f"'{match[0]}' from the bundled table")
            else:
                self.tdp_w = DEFAULT_W_PER_CPU * self.info.logical
                self.tdp_source = (f"CPU '{self.info.model_name}' not in the TDP table: default "
                                   f"{DEFAULT_W_PER_CPU:g} W per logical CPU x "
                                   f"{self.info.logical} = {self.tdp_w:g} W")
        self._share = (share or CpuShare()) if scope == "process" else None
        self._joules = 0.0
        self._t = 0.0
        self._busy = 0.0

    @property
    def reason(self) -> str:
        """Why this is a model and how it was set up."""
        share = ("share of busy CPU time used by this process tree" if self.scope == "process"
                 else "whole machine")
        return f"estimate: load x TDP (Teads curve), {self.tdp_source}; {share}"

    def open(self, now: float) -> None:
        try:
            if self._share is not None:
                self._share.open(now)
            self._busy = machine_busy_seconds()
        except Exception as exc:  # psutil unusable here (exotic OS, no /proc)
            raise SensorError(f"cannot read CPU load: {exc}") from exc
        self._t = now
        self._joules = 0.0

    def _advance(self, now: float, refresh: bool = False) -> None:
        dt = now - self._t
        if dt <= 0:
            return
        try:
            busy = machine_busy_seconds()
            # The same share (capped, last kept when no tick passed) RAPL attributes by.
            share = self._share.advance(refresh=refresh) if self._share is not None else 1.0
        except Exception as exc:
            raise SensorError(f"cannot read CPU load: {exc}") from exc
        d_busy = max(0.0, busy - self._busy)
        u = min(1.0, d_busy / (dt * self.info.logical))
        self._joules += self.tdp_w * load_fraction(u) * share * dt
        self._t, self._busy = now, busy

    def sample(self, now: float) -> None:
        self._advance(now, refresh=True)

    def totals(self, now: float) -> Energy:
        self._advance(now)
        low, high = model_range(self._joules)
        return Energy(self._joules, low, high, Method.MODEL, self.reason)

    def last_good(self) -> Energy | None:
        low, high = model_range(self._joules)
        return Energy(self._joules, low, high, Method.MODEL, self.reason)

    def describe(self) -> str:
        return f"cpu: model - {self.reason}"
