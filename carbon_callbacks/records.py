"""Value objects that cross boundaries: sensor readings, measured windows, epoch records, runs.

Every figure carries a low/high range set by how it was obtained (see ``Method``), so a window
can say "12.4 Wh (11.9-13.1)" rather than a single number that looks more exact than it is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any


class Method(str, Enum):
    """How a component's energy was obtained, best first; ordered, so ``Method.worst`` of the
    methods of several parts is the method of their sum.

    - ``counter``: a hardware energy counter (RAPL ``energy_uj``, NVML total energy).
    - ``polled``: instantaneous power sampled by the meter's thread and integrated by trapezoid.
    - ``model``: an estimate (CPU load x TDP, RAM W/GB, or the neighbouring power over an
      interval whose counter reading was refused or late); always labelled, never 0 W when busy.
    - ``unavailable``: nothing could be read or modelled; joules are 0 and the reason says why.

    A member equals its string (``Method.COUNTER == "counter"``, one dict key with it); what
    leaves the energy room (``Reading.methods``, ``Window.methods``, records) is the plain
    string, so that a checkpoint or a ledger row never needs this class to be loaded.
    """

    COUNTER = "counter"
    POLLED = "polled"
    MODEL = "model"
    UNAVAILABLE = "unavailable"

    # As its string: printed and formatted as "counter", and one dict key with "counter".
    __str__ = str.__str__
    __hash__ = str.__hash__

    def __format__(self, spec: str) -> str:
        return str.__format__(self, spec)

    @property
    def rank(self) -> int:
        """0 for the best method (``counter``), 3 for ``unavailable``."""
        return METHOD_RANK[self]

    @classmethod
    def worst(cls, *methods: str) -> Method:
        """The least exact of several methods (strings or members).

        Raises:
            ValueError: no method given, or one that is not a ``Method`` value.
        """
        if not methods:
            raise ValueError("Method.worst: give at least one method")
        return max((cls(m) for m in methods), key=METHOD_RANK.__getitem__)

    def __lt__(self, other: object) -> bool:
        return self.rank < Method(other).rank

    def __le__(self, other: object) -> bool:
        return self.rank <= Method(other).rank

    def __gt__(self, other: object) -> bool:
        return self.rank > Method(other).rank

    def __ge__(self, other: object) -> bool:
        return self.rank >= Method(other).rank


METHOD_RANK: Mapping[str, int] = MappingProxyType({m: i for i, m in enumerate(Method)})
"""Each method's place in ``Method``'s order, 0 for the best, keyed by member or plain string
(for code ranking strings that may not be methods at all, such as imported records' labels)."""

JOULES_PER_KWH = 3_600_000.0
JOULES_PER_WH = 3_600.0

COMPONENTS: tuple[str, ...] = ("cpu", "gpu", "ram")


@dataclass(frozen=True)
class Energy:
    """Joules with the range and method that say how far to trust them.

    A sensor's reading is cumulative since it was opened; the energy of a window is the later
    reading minus the earlier one (``end - start``), and the parts of one component (several
    sensors, or one source after another) add up with ``+``.

    Attributes:
        joules: the point value.
        low: lower bound of the joules, set by the method (see ``energy/sensors/ranges.py``).
        high: upper bound.
        method: how they were obtained (a ``Method``; a plain string is converted).
        reason: what was read and why this method, and what went wrong if anything did.
        devices: the zones or GPUs read.
    """

    joules: float
    low: float
    high: float
    method: Method
    reason: str = ""
    devices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.method, Method):
            object.__setattr__(self, "method", Method(self.method))
        if not isinstance(self.devices, tuple):
            object.__setattr__(self, "devices", tuple(self.devices))

    @property
    def kwh(self) -> float:
        """Energy in kWh."""
        return self.joules / JOULES_PER_KWH

    def __add__(self, other: Energy) -> Energy:
        """The sum of two parts: the worse method, both reasons, every device once."""
        if not isinstance(other, Energy):
            return NotImplemented
        reasons = [r for r in (self.reason, other.reason) if r]
        return Energy(
            self.joules + other.joules, self.low + other.low, self.high + other.high,
            Method.worst(self.method, other.method),
            "; ".join(dict.fromkeys(reasons)), tuple(dict.fromkeys(self.devices + other.devices)),
        )

    def __radd__(self, other: object) -> Energy:
        if other == 0:  # so sum() of energies starts from them
            return self
        return NotImplemented

    def __sub__(self, start: Energy) -> Energy:
        """The energy between two cumulative readings: ``end - start``.

        The joules never go below 0 and the range always holds them; method, reason and
        devices are the later reading's, which describe how the interval was read.
        """
        if not isinstance(start, Energy):
            return NotImplemented
        j = max(0.0, self.joules - start.joules)
        return Energy(j, min(j, max(0.0, self.low - start.low)), max(j, self.high - start.high),
                      self.method, self.reason, self.devices)


@dataclass(frozen=True, init=False)
class ComponentEnergy(Energy):
    """An ``Energy`` that carries its component's name, built name first.

    ``Window.components`` holds plain ``Energy`` values keyed by component name; this spelling
    serves code that builds a window by hand::

        Window(t0, t1, 60.0, {"cpu": ComponentEnergy("cpu", 3600.0, 3000.0, 4200.0, "model")})
    """

    name: str = ""

    def __init__(self, name: str, joules: float, low: float, high: float, method: Method | str,
                 reason: str = "", devices: tuple[str, ...] = ()) -> None:
        object.__setattr__(self, "name", name)
        Energy.__init__(self, joules, low, high, method, reason, devices)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Reading:
    """A point in time on the meter: cumulative joules per component since ``start()``.

    Returned by ``EnergyMeter.mark()``; two readings make a ``Window``.
    """

    monotonic: float
    wall: float
    joules: Mapping[str, float]
    methods: Mapping[str, str] = field(default_factory=dict)
    seq: int = 0
    meter: int = 0
    """Which meter took it (0: unknown), so a meter refuses another's readings."""
    run: int = 0
    """Which ``start()`` of that meter it belongs to (0: unknown)."""


@dataclass(frozen=True)
class Window:
    """Energy used between two readings, per component, with ranges and methods."""

    start_wall: float
    end_wall: float
    seconds: float
    components: Mapping[str, Energy]

    @property
    def joules(self) -> float:
        """Total joules over all components."""
        return sum(c.joules for c in self.components.values())

    @property
    def low(self) -> float:
        """Lower bound of the total joules."""
        return sum(c.low for c in self.components.values())

    @property
    def high(self) -> float:
        """Upper bound of the total joules."""
        return sum(c.high for c in self.components.values())

    @property
    def kwh(self) -> float:
        """Total energy in kWh."""
        return self.joules / JOULES_PER_KWH

    @property
    def power_w(self) -> float:
        """Mean power over the window in watts (0 for an empty window)."""
        return self.joules / self.seconds if self.seconds > 0 else 0.0

    @property
    def methods(self) -> dict[str, str]:
        """The method used for each component, as plain strings (records, checkpoints and the
        ledger hold strings, so that loading them needs no class of ours)."""
        return {name: str(c.method) for name, c in self.components.items()}

    def component_joules(self, name: str) -> float:
        """Joules of one component, 0 when the meter has no such component."""
        c = self.components.get(name)
        return c.joules if c is not None else 0.0

    def __str__(self) -> str:
        wh = self.joules / JOULES_PER_WH
        return (
            f"{wh:.4g} Wh ({self.low / JOULES_PER_WH:.4g}-{self.high / JOULES_PER_WH:.4g}) "
            f"over {self.seconds:.3g} s, {self.power_w:.3g} W"
        )


@dataclass(frozen=True)
class Horizon:
    """What lies ahead of a run at an epoch's end, as its adapter could read it.

    The stopping rules extrapolate a metric from its past epochs; a learning-rate schedule with
    a drop still ahead makes the future unlike the past, so the adapters pass what they can read
    of it here. Framework-free: any training loop can fill it in.
    """

    max_epochs: int | None = None
    """The epoch count the run is set up for (None: unknown)."""
    lr: float | None = None
    """The learning rate the finished epoch trained with (first parameter group)."""
    lr_ahead: tuple[float, ...] = ()
    """The learning rate each coming epoch will start with, as far as it could be computed."""
    scheduler: str = ""
    """The scheduler's class name(s), "" when none."""
    lr_known: bool = True
    """False when a scheduler exists whose future cannot be computed (it reacts to metrics,
    like ``ReduceLROnPlateau``, or could not be simulated)."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {**dataclasses.asdict(self), "lr_ahead": list(self.lr_ahead)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Horizon:
        """Rebuild from ``to_dict()`` output, ignoring unknown keys."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in d.items() if k in names}
        values["lr_ahead"] = tuple(float(x) for x in values.get("lr_ahead", ()))
        return cls(**values)


@dataclass(frozen=True)
class EpochRecord:
    """One epoch (or evaluation) of a run: its energy, CO2e and the model's metrics.

    ``energy_kwh_total``/``co2_g_total`` are cumulative since fit start (training epochs plus
    evaluation), so the run's metric-vs-CO2e curve can be drawn from the records alone.
    """

    epoch: int
    start_wall: float
    end_wall: float
    seconds: float
    energy_kwh: float
    energy_kwh_low: float
    energy_kwh_high: float
    co2_g: float
    co2_g_low: float
    co2_g_high: float
    energy_kwh_total: float
    co2_g_total: float
    power_w: float
    intensity_g_per_kwh: float
    intensity_source: str = ""
    cpu_energy_kwh: float = 0.0
    gpu_energy_kwh: float = 0.0
    ram_energy_kwh: float = 0.0
    methods: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    stage: str = "train"
    pue: float = 1.0
    horizon: Horizon | None = field(default=None, compare=False)
    """What the adapter read of the road ahead (max_epochs, the LR schedule); not a
    measurement, so not part of equality and not stored in the ledger."""
    partial: bool = False
    """True for an epoch the run ended inside (a failure, a signal): its energy was spent and is
    counted, but the epoch did not finish, so it has no metrics."""

    LOG_KEYS = (
        "energy_kwh",
        "energy_kwh_total",
        "co2_g",
        "co2_g_total",
        "power_w",
        "cpu_energy_kwh",
        "gpu_energy_kwh",
        "ram_energy_kwh",
        "intensity_g_per_kwh",
    )

    def log_dict(self, prefix: str = "") -> dict[str, float]:
        """The per-epoch keys every adapter logs (``LOG_KEYS``), with an optional prefix."""
        return {f"{prefix}{k}": float(getattr(self, k)) for k in self.LOG_KEYS}

    def metric(self, name: str) -> float | None:
        """The value of a logged metric for this epoch, or None if it was not logged."""
        value = self.metrics.get(name)
        return None if value is None else float(value)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for the ledger and exports)."""
        d = dataclasses.asdict(self)
        d["methods"] = dict(self.methods)
        d["metrics"] = {k: float(v) for k, v in self.metrics.items()}
        # Only when known: the ledger and its exports keep measurements, not the road ahead.
        d.pop("horizon", None)
        if self.horizon is not None:
            d["horizon"] = self.horizon.to_dict()
        return d

    @classmethod
    def build(
        cls,
        *,
        epoch: int,
        start_wall: float,
        end_wall: float,
        energy_kwh: float,
        co2_g: float,
        seconds: float | None = None,
        energy_kwh_low: float | None = None,
        energy_kwh_high: float | None = None,
        co2_g_low: float | None = None,
        co2_g_high: float | None = None,
        energy_kwh_total: float | None = None,
        co2_g_total: float | None = None,
        power_w: float | None = None,
        intensity_g_per_kwh: float | None = None,
        **fields: Any,
    ) -> EpochRecord:
        """The one way a record is made: every figure a float, and what is not given derived.

        Not given: ``seconds`` is the wall span; a range (``_low``/``_high``) is the value
        itself (no range known); the totals are the record's own figures (a run of one
        record); ``power_w`` is the mean power over ``seconds`` (0 for an empty span);
        ``intensity_g_per_kwh`` is ``co2_g / energy_kwh`` (0 without energy). Any other field
        (``intensity_source``, the per-component kWh, ``methods``, ``metrics``, ``stage``,
        ``pue``...) is passed as given, ``methods`` and ``metrics`` copied as plain dicts.

        Raises:
            TypeError: for a field ``EpochRecord`` does not have.
        """
        kwh, g = float(energy_kwh), float(co2_g)
        span = float(end_wall) - float(start_wall) if seconds is None else float(seconds)
        for name in ("cpu_energy_kwh", "gpu_energy_kwh", "ram_energy_kwh", "pue"):
            value = fields.get(name)
            if value is not None:
                fields[name] = float(value)
        if fields.get("methods") is not None:
            fields["methods"] = dict(fields["methods"])
        if fields.get("metrics") is not None:
            fields["metrics"] = {k: float(v) for k, v in fields["metrics"].items()}
        return cls(
            epoch=int(epoch),
            start_wall=float(start_wall),
            end_wall=float(end_wall),
            seconds=span,
            energy_kwh=kwh,
            energy_kwh_low=kwh if energy_kwh_low is None else float(energy_kwh_low),
            energy_kwh_high=kwh if energy_kwh_high is None else float(energy_kwh_high),
            co2_g=g,
            co2_g_low=g if co2_g_low is None else float(co2_g_low),
            co2_g_high=g if co2_g_high is None else float(co2_g_high),
            energy_kwh_total=kwh if energy_kwh_total is None else float(energy_kwh_total),
            co2_g_total=g if co2_g_total is None else float(co2_g_total),
            power_w=(kwh * JOULES_PER_KWH / span if span > 0 else 0.0)
            if power_w is None
            else float(power_w),
            intensity_g_per_kwh=(g / kwh if kwh > 0 else 0.0)
            if intensity_g_per_kwh is None
            else float(intensity_g_per_kwh),
            **fields,
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EpochRecord:
        """Rebuild a record from ``to_dict()`` output, ignoring unknown keys."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in d.items() if k in names}
        horizon = values.get("horizon")
        if isinstance(horizon, Mapping):
            values["horizon"] = Horizon.from_dict(horizon)
        return cls(**values)


RUN_STATUSES: tuple[str, ...] = ("completed", "stopped", "failed", "interrupted")
"""How a run can end.

- ``completed``: it ran to its planned end (``max_epochs``, ``epochs``, ``max_steps``).
- ``stopped``: something asked it to stop before that end; ``RunEnd.stopped_by`` says what.
- ``failed``: an exception ended it; ``RunEnd.error_type`` and ``reason`` say which.
- ``interrupted``: a signal ended it (SIGINT/``KeyboardInterrupt``, SIGTERM).
"""

STOPPED_BY: tuple[str, ...] = ("policy", "early_stopping", "pruning", "user")
"""Who stopped a ``stopped`` run: our stopping policy, the framework's early stopping (its
``EarlyStopping`` callback), an Optuna pruner, or the user's own code (any other callback or the
model asking the framework to stop)."""


@dataclass(frozen=True)
class RunEnd:
    """How a run ended, and why.

    Args:
        status: one of ``RUN_STATUSES``.
        stopped_by: for ``stopped``, one of ``STOPPED_BY`` ("" when not known, as in ledgers
            written before the stopper was recorded); "" otherwise.
        reason: in words: the policy's or early stopping's reason, the exception's message, the
            signal.
        error_type: for ``failed``, the exception's class name.

    Raises:
        ValueError: an unknown status or stopper, naming the ones that exist.
    """

    status: str = "completed"
    stopped_by: str = ""
    reason: str = ""
    error_type: str = ""

    def __post_init__(self) -> None:
        if self.status not in RUN_STATUSES:
            raise ValueError(f"status must be one of {RUN_STATUSES}, got {self.status!r}")
        if self.status == "stopped" and self.stopped_by not in ("", *STOPPED_BY):
            raise ValueError(f"stopped_by must be one of {STOPPED_BY}, got {self.stopped_by!r}")
        if self.status != "stopped" and self.stopped_by:
            raise ValueError(f"stopped_by is for stopped runs, not {self.status!r} ones")

    @property
    def stopped_early(self) -> bool:
        """Whether the run ended before its planned end for a stop request (not a failure)."""
        return self.status == "stopped"

    def describe(self) -> str:
        """One line: ``"stopped by early_stopping: ..."``, ``"failed: ValueError: ..."``."""
        head = f"stopped by {self.stopped_by}" if self.stopped_by else self.status
        detail = ": ".join(x for x in (self.error_type, self.reason) if x)
        return f"{head}: {detail}" if detail else head


@dataclass(frozen=True)
class RunSummary:
    """A finished (or interrupted) run: its epochs, totals and why it stopped."""

    run_id: str
    start_wall: float
    end_wall: float
    epochs: tuple[EpochRecord, ...]
    energy_kwh: float
    co2_g: float
    stopped_early: bool = False
    stop_reason: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    end: RunEnd = field(default_factory=RunEnd)
    """How the run ended (``stopped_early``/``stop_reason`` repeat it for older callers)."""
