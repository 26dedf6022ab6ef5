"""EnergyMeter: joules per component (cpu, gpu, ram) for any window of time.

Boundaries are read synchronously (``mark()``), so a window between two marks is exact to the
boundary; one background thread only keeps counters from wrapping unseen and feeds the sources
that must be polled (GPU power without an energy counter, the load-based models).
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, ParamSpec, Protocol, TypeVar

from carbon_callbacks.energy.defaults import build_sensors
from carbon_callbacks.energy.sensors.base import (
    ChainStatus,
    FallbackChain,
    Sensor,
    Totals,
    monotonic,
)
from carbon_callbacks.records import METHOD_RANK, ComponentEnergy, Reading, Window

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL = 1.0
"""Seconds between the thread's reads. Polled GPU power asks for 10 Hz on its own."""

_MAX_MARKS = 10_000
_METER_IDS = itertools.count(1)  # never reused, unlike id(): a Reading names its meter by it
_P = ParamSpec("_P")
_R = TypeVar("_R")


@dataclass(frozen=True)
class _MarkDetail:
    run: int
    totals: Mapping[str, Totals]
    notes: tuple[int, ...]  # len(chain.notes) per chain, in chain order


class Meter(Protocol):
    """What a tracker needs of an energy meter: ``EnergyMeter`` is one, a test's scripted meter
    another.

    ``mark()`` reads every sensor now; ``window(a, b)`` is the energy between two marks. A meter
    may also have ``running`` (a meter already running is neither restarted nor stopped by the
    tracker), ``methods`` and ``describe()`` (both recorded with the run in the ledger).
    """

    def start(self) -> object: ...

    def stop(self) -> object: ...

    def mark(self) -> Reading: ...

    def window(self, a: Reading, b: Reading, /) -> Window: ...


class EnergyMeter:
    """Measures the energy this process (or this machine) uses, per component, with ranges.

    Counters are used where the hardware has them (RAPL, NVML total energy), polled power where
    it has only a power reading, and a labelled model (CPU load x TDP, RAM W/GB) where nothing
    can be read. Every figure carries the method that produced it and a low/high range.

    Args:
        interval: seconds between the background thread's reads (counters, models). Polled GPU
            power is sampled at 10 Hz or faster whatever this is.
        scope: "process" counts only this process tree (its share of CPU time, its GPUs under
            DDP via ``LOCAL_RANK``/``CUDA_VISIBLE_DEVICES``); "machine" counts the whole machine.
        gpu_ids: CUDA device ordinals (as this process sees them) to measure; None picks by
            scope.
        rapl_root: the powercap folder holding RAPL zones.
        nvml: a pynvml-like module to use; None imports ``pynvml`` lazily at ``start()``.
        sensors: explicit sensors to use instead of detecting them (one or more per component).

    Raises:
        ValueError: an argument is out of range (the message names it and the fix).

    Example::

        from carbon_callbacks import EnergyMeter

        with EnergyMeter() as meter:
            a = meter.mark()
            train_one_epoch()
            b = meter.mark()
            print(meter.window(a, b))   # "0.52 Wh (0.26-0.78) over 61 s, 31 W"
        print(meter.last_window.methods)  # {"cpu": "model", "ram": "model"}
    """

    def __init__(
        self,
        *,
        interval: float = DEFAULT_INTERVAL,
        scope: Literal["process", "machine"] = "process",
        gpu_ids: Sequence[int] | None = None,
        rapl_root: str | os.PathLike[str] = "/sys/class/powercap",
        nvml: Any | None = None,
        sensors: Sequence[Sensor] | None = None,
    ) -> None:
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not (
            0.01 <= interval <= 3600
        ):
            raise ValueError(
                f"interval: expected seconds between 0.01 and 3600, got {interval!r}; "
                f"the default is {DEFAULT_INTERVAL}"
            )
        if scope not in ("process", "machine"):
            raise ValueError(f"scope: expected 'process' or 'machine', got {scope!r}")
        if gpu_ids is not None:
            if isinstance(gpu_ids, (str, bytes)) or not all(
                isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in gpu_ids
            ):
                raise ValueError(
                    f"gpu_ids: expected a list of non-negative CUDA device ordinals such as "
                    f"[0, 1], got {gpu_ids!r}"
                )
        self.interval = float(interval)
        self.scope = scope
        self.gpu_ids = tuple(gpu_ids) if gpu_ids is not None else None
        self.rapl_root = os.fspath(rapl_root)
        if sensors is not None:
            sensors = list(sensors)
            if not sensors or not all(isinstance(s, Sensor) for s in sensors):
                raise ValueError(
                    "sensors: expected a non-empty list of carbon_callbacks.energy.sensors.Sensor "
                    "objects, or None to detect them"
                )
            self._chains = [s if isinstance(s, FallbackChain) else FallbackChain([s])
                            for s in sensors]
        else:
            self._chains = build_sensors(
                scope=scope, gpu_ids=self.gpu_ids, rapl_root=self.rapl_root, nvml=nvml,
                interval=self.interval,
            )
        self._lock = threading.RLock()
        # Held by start() and stop() for their whole length, so a start() cannot open the
        # sensors while a stop() joining the thread (outside _lock) is about to close them.
        self._cycle = threading.RLock()
        self._id = next(_METER_IDS)
        self._seq = itertools.count()
        self._run = 0
        self._running = False
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._marks: OrderedDict[int, _MarkDetail] = OrderedDict()
        self._start_reading: Reading | None = None
        self._methods: dict[str, str] = {}
        self.last_window: Window | None = None
        """The window returned by the last ``stop()`` (also set by ``with`` and the decorator)."""

    # ---- state -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True between ``start()`` and ``stop()``."""
        return self._running

    @property
    def start_reading(self) -> Reading | None:
        """The reading ``start()`` took (what ``stop()``'s window starts from); None if stopped.

        A caller that starts the meter and cuts windows from it takes this as its first
        boundary, so its windows add up to the meter's whole span.
        """
        with self._lock:
            return self._start_reading if self._running else None

    @property
    def methods(self) -> dict[str, str]:
        """The method of each measured component as of the last reading ({} before ``start()``).

        Which sources exist is found when ``start()`` opens them (a GPU, a readable counter).
        """
        with self._lock:
            return dict(self._methods)

    def status(self) -> list[ChainStatus]:
        """Each component's source, method and why, as fields (one ``ChainStatus`` each)."""
        with self._lock:
            return [c.status() for c in self._chains]

    def describe(self) -> list[str]:
        """One line per component: its source, method and why."""
        lines = []
        for c in self.status():
            if c.absent:
                lines.append(f"{c.component}: not measured - {c.absent}")
            else:
                lines.append(c.line)
            lines.extend(f"  note: {n}" for n in c.notes)
        return lines

    # ---- start / stop ------------------------------------------------------------------

    def start(self) -> EnergyMeter:
        """Open every sensor, take the baseline and start the sampler thread.

        Returns:
            The meter, ready for ``mark()``. Calling it on a running meter does nothing.
        """
        with self._cycle, self._lock:
            if self._running:
                return self
            self._run += 1
            now = monotonic()
            for c in self._chains:
                c.open(now)
            self._running = True
            self._start_reading = self._mark_locked()
            self._stop_event = threading.Event()
            # Started even when nothing polls now: a source can switch to polling mid-run
            # (an NVML energy counter failing over to polled power). Idle, it wakes once per
            # interval and does nothing.
            self._thread = threading.Thread(
                target=self._loop, args=(self._stop_event, self._run),
                name=f"carbon-callbacks-meter-{id(self):x}-{self._run}", daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> Window | None:
        """Stop the thread, close the sensors and return the window since ``start()``.

        Returns:
            The whole span since ``start()``, or None when the meter was not running.
        """
        with self._cycle:
            with self._lock:
                if not self._running:
                    return None
                end = self._mark_locked()
                start = self._start_reading
                self._running = False
                self._stop_event.set()
                thread, self._thread = self._thread, None
            # Joined outside _lock (the thread takes it), but inside _cycle: no start() can
            # open the sensors before they are closed below.
            if thread is not None and thread is not threading.current_thread():
                thread.join()
            with self._lock:
                for c in self._chains:
                    c.close()
                window = self.window(start, end) if start is not None else None
                self.last_window = window
                return window

    def __enter__(self) -> EnergyMeter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __call__(self, func: Callable[_P, _R]) -> Callable[_P, _R]:
        """Use the meter as a decorator: it runs for the duration of each call.

        A call made while the meter is already running (a nested or recursive call) is
        measured by the outer run, so the meter is not stopped under it.
        """

        @functools.wraps(func)
        def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            if self.running:
                return func(*args, **kwargs)
            with self:
                return func(*args, **kwargs)

        return wrapper

    # ---- readings ----------------------------------------------------------------------

    def mark(self) -> Reading:
        """Read every sensor now: cumulative joules per component since ``start()``.

        Raises:
            RuntimeError: the meter is not running (call ``start()`` first).
        """
        with self._lock:
            if not self._running:
                raise RuntimeError("mark: the meter is not running; call start() first")
            return self._mark_locked()

    def _mark_locked(self) -> Reading:
        now, wall = monotonic(), time.time()
        totals: dict[str, Totals] = {}
        for c in self._chains:
            if c.absent:
                continue
            t = c.totals(now)
            prev = totals.get(c.component)
            if prev is not None:  # several sensors for one component add up
                worst = max(prev.method, t.method, key=lambda m: METHOD_RANK.get(m, 9))
                t = Totals(prev.joules + t.joules, prev.low + t.low, prev.high + t.high, worst,
                           "; ".join(r for r in (prev.reason, t.reason) if r),
                           prev.devices + t.devices)
            totals[c.component] = t
        notes = tuple(len(c.notes) for c in self._chains)
        seq = next(self._seq)
        self._methods = {k: v.method for k, v in totals.items()}
        self._marks[seq] = _MarkDetail(self._run, totals, notes)
        while len(self._marks) > _MAX_MARKS:
            oldest = next(iter(self._marks))
            if self._start_reading is not None and oldest == self._start_reading.seq:
                self._marks.move_to_end(oldest)
                oldest = next(iter(self._marks))
            del self._marks[oldest]
        return Reading(
            monotonic=now, wall=wall, joules={k: v.joules for k, v in totals.items()},
            methods={k: v.method for k, v in totals.items()}, seq=seq, meter=self._id,
        )

    def window(self, a: Reading, b: Reading) -> Window:
        """The energy used between two readings of this meter, per component, with ranges.

        Args:
            a: the earlier reading (from ``mark()``).
            b: the later reading.

        Returns:
            A ``Window`` whose components carry joules, low/high, method and reason; a source
            that failed inside the window is named in that component's reason.

        Raises:
            ValueError: ``b`` is earlier than ``a``, or they come from different runs.
        """
        if b.monotonic < a.monotonic:
            raise ValueError("window: b is earlier than a; pass window(earlier, later)")
        with self._lock:
            # Details only for readings this meter took (seq numbers are per meter).
            da = self._marks.get(a.seq) if a.meter == self._id else None
            db = self._marks.get(b.seq) if b.meter == self._id else None
            chains = list(self._chains)
        if da is not None and db is not None and da.run != db.run:
            raise ValueError(
                "window: a and b come from different runs of the meter (it was restarted "
                "between them); take both readings after the same start()"
            )
        comps: dict[str, ComponentEnergy] = {}
        for name, jb in b.joules.items():
            j = max(0.0, jb - a.joules.get(name, 0.0))
            method = b.methods.get(name, "unavailable")
            tb = db.totals.get(name) if db else None
            ta = da.totals.get(name) if da else None
            if da is not None and tb is not None:
                # Both ends known (no ta: the component began after a, so from 0).
                low_a = ta.low if ta else 0.0
                high_a = ta.high if ta else 0.0
                low = min(j, max(0.0, tb.low - low_a))
                high = max(j, tb.high - high_a)
                reason, devices = tb.reason, tb.devices
            else:
                # An end whose detail was evicted or that another meter took: subtracting a
                # zero baseline would make the range span the whole run, so the method's
                # relative band is used instead.
                low, high = _relative_range(j, method)
                reason, devices = "", ()
            if db is not None and da is not None:
                new = [note for i, c in enumerate(chains) if c.component == name
                       for note in c.notes[da.notes[i]:db.notes[i]]]
                if new:
                    reason = "; ".join([*new, reason]) if reason else "; ".join(new)
            comps[name] = ComponentEnergy(name, j, low, high, method, reason, tuple(devices))
        return Window(start_wall=a.wall, end_wall=b.wall,
                      seconds=max(0.0, b.monotonic - a.monotonic), components=comps)

    # ---- thread ------------------------------------------------------------------------

    def _loop(self, stop_event: threading.Event, run: int) -> None:
        due: dict[int, float] = {}
        failed = False
        while True:
            now = monotonic()
            wait = self.interval
            with self._lock:
                if not self._running or self._run != run:
                    return
                for i, c in enumerate(self._chains):
                    period = c.poll_interval
                    if c.absent or not period:
                        continue
                    d = due.setdefault(i, now + period)
                    if now >= d:
                        try:
                            c.sample(now)
                        except Exception:
                            # Chains degrade their own sensors' failures, so this is a bug
                            # outside them. The thread must live on for the other chains
                            # (counters would wrap unseen): one warning a run.
                            if not failed:
                                failed = True
                                logger.warning("energy meter sampler: unexpected error from "
                                               "%s; sampling goes on", c.component,
                                               exc_info=True)
                        # Catch up without bursts when the thread was starved.
                        d = max(d + period, now + period * 0.5)
                        due[i] = d
                    wait = min(wait, d - now)
            if stop_event.wait(max(0.001, wait)):
                return


def _relative_range(joules: float, method: str) -> tuple[float, float]:
    """The widest band a method can have, for readings this meter holds no detail for."""
    from carbon_callbacks.energy.sensors import ranges

    if method == "counter":
        return ranges.counter_range(joules, ranges.RAPL_AMD_REL)
    if method == "polled":
        return ranges.counter_range(joules, 2 * ranges.NVML_REL)
    if method == "model":
        return ranges.model_range(joules)
    return joules, joules
