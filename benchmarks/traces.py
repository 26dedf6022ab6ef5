"""Known power traces for the accuracy benchmark, as exact cumulative-energy functions.

Each trace is a function of seconds since a shared origin (``time.monotonic()`` is
CLOCK_MONOTONIC, the same clock in every process of the machine), so the driver that writes
the fake counters, the fake NVML module and the scorer all agree on the true joules of any
interval without passing samples around.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Trace:
    """A periodic power trace: ``low`` W, with ``high`` W for ``on`` s out of every ``period`` s.

    A constant trace has ``on == 0``. ``wrap_j`` is the counter range in joules: the fake
    counter goes back to zero each time it passes it (RAPL's ``max_energy_range_uj``).
    """

    name: str
    low: float
    high: float = 0.0
    period: float = 1.0
    on: float = 0.0
    wrap_j: float = 262_143.0
    what: str = ""

    def energy(self, t: float) -> float:
        """Exact joules from the origin to ``t`` seconds (the integral of the power)."""
        if t <= 0:
            return 0.0
        whole, rest = divmod(t, self.period)
        on_time = whole * self.on + min(rest, self.on)
        return self.low * t + (self.high - self.low) * on_time

    def joules(self, a: float, b: float) -> float:
        """Exact joules between ``a`` and ``b`` seconds after the origin."""
        return self.energy(b) - self.energy(a)

    def mean_power(self) -> float:
        """Long-run mean power in watts."""
        return self.low + (self.high - self.low) * self.on / self.period

    def counter_uj(self, t: float) -> int:
        """The value a RAPL ``energy_uj`` file shows at ``t``: microjoules modulo the range."""
        return int(self.energy(t) * 1e6) % int(self.wrap_j * 1e6)

    def wraps_between(self, a: float, b: float) -> int:
        """How many times the counter wraps between ``a`` and ``b``."""
        rng = self.wrap_j
        return math.floor(self.energy(b) / rng) - math.floor(self.energy(a) / rng)


@dataclass(frozen=True)
class Zone:
    """One RAPL zone of a fake tree: its folder under the tree, its kernel name, its trace."""

    folder: str
    name: str
    trace: Trace

    @property
    def is_dram(self) -> bool:
        return self.name == "dram"


@dataclass(frozen=True)
class Tree:
    """A fake powercap tree: packages and their DRAM subzones, each following a trace."""

    name: str
    zones: tuple[Zone, ...]
    what: str

    def joules(self, a: float, b: float, dram: bool = False) -> float:
        """Exact joules of the package zones (or of the DRAM zones) between ``a`` and ``b``."""
        return sum(z.trace.joules(a, b) for z in self.zones if z.is_dram == dram)

    @property
    def has_dram(self) -> bool:
        return any(z.is_dram for z in self.zones)

    @property
    def package(self) -> Trace:
        """The first package's trace (the only one on single-package trees)."""
        return next(z.trace for z in self.zones if not z.is_dram)


# CPU package traces written into fake powercap trees. The wrap trace's range is 5 s at its
# power, so a tool reading less often than every 5 s sees several wraps per gap: a stress
# case (real package counters wrap every tens of minutes or more).
CPU_TRACES: tuple[Trace, ...] = (
    Trace("constant", low=42.0, what="42 W constant"),
    Trace("square", low=10.0, high=70.0, period=0.1, on=0.05,
          what="100 ms square wave, 10 W / 70 W, 50% duty"),
    Trace("spikes", low=15.0, high=215.0, period=0.25, on=0.005,
          what="15 W with a 5 ms spike to 215 W every 250 ms"),
    Trace("wrap", low=60.0, wrap_j=300.0,
          what="60 W constant, counter range 300 J (wraps every 5 s)"),
)

# Two sockets, each with a DRAM subzone inside its package folder (intel-rapl:N/intel-rapl:N:0)
# and linked at the top as real trees have them. Package-1 and DRAM-1 vary so that a tool
# reading one socket twice, or one DRAM zone for both, is off.
SOCKETS = Tree("sockets", (
    Zone("intel-rapl:0", "package-0", Trace("s-pkg0", low=35.0, what="35 W")),
    Zone("intel-rapl:0/intel-rapl:0:0", "dram", Trace("s-dram0", low=6.0, what="6 W")),
    Zone("intel-rapl:1", "package-1", Trace("s-pkg1", low=20.0, high=80.0, period=0.3, on=0.1,
                                              what="20/80 W")),
    Zone("intel-rapl:1/intel-rapl:1:0", "dram", Trace("s-dram1", low=3.0, high=9.0, period=0.7,
                                                      on=0.2, what="3/9 W")),
), what="two packages (35 W; 20/80 W square) with DRAM zones (6 W; 3/9 W square)")

TREES: tuple[Tree, ...] = (
    *(Tree(t.name, (Zone("intel-rapl:0", "package-0", t),), t.what) for t in CPU_TRACES),
    SOCKETS,
)

# For the forecast comparison: work phases that change power every 8 s, so that the epochs a
# forecast sees first may not draw the power of the ones it predicts.
PHASED = Tree("phased", (Zone("intel-rapl:0", "package-0",
                              Trace("phased", low=30.0, high=70.0, period=16.0, on=8.0,
                                    what="30 W / 70 W, 8 s each")),),
              what="30 W / 70 W phases of 8 s")

# GPU trace followed by the fake NVML module (total-energy counter in mJ, power in mW). The
# period is not a divisor of a second, so a tool sampling power on a whole-second clock does not
# lock onto one phase of the wave (which would make its error depend on luck, not on its method).
GPU_TRACE = Trace("gpu-square", low=60.0, high=240.0, period=0.173, on=0.0865,
                  what="173 ms square wave, 60 W / 240 W")


def tree(name: str) -> Tree:
    """The fake powercap tree called ``name``."""
    for t in (*TREES, PHASED):
        if t.name == name:
            return t
    raise KeyError(name)
