"""GPU energy through NVML: the total-energy counter, else polled power, else a labelled model.

Per GPU, the best source that answers is used:

1. ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since the driver loaded; Volta and newer):
   method ``counter``, read at each boundary. A reading the GPU cannot have produced in the
   time elapsed (backwards, negative, above its power ceiling, or still while it draws power)
   is refused and that interval estimated (``counters.py``); three in a row give the counter up
   for polled power.
2. ``nvmlDeviceGetPowerUsage`` (mW) sampled by the meter's thread and integrated by
   trapezoid, with a fresh sample read at every boundary: method ``polled``. The rate follows
   the age of the current window: ``max_poll_hz`` (100 Hz) right after a boundary, slowing
   so that a window gets about ``SAMPLES_PER_WINDOW`` samples, down to ``poll_hz`` (10 Hz)
   once it is 10 s old. A sampled step costs at most half its size times the sampling
   interval, so short windows need short intervals; long ones (epochs) poll at 10 Hz.
3. ``TDP x (0.2 + 0.8 x utilisation)``: method ``model``. TDP is the enforced power limit, else
   the bundled table (``data/gpu_tdp.csv``); the 20% idle floor is our assumption (data-centre
   GPUs idle at a fraction of their limit), and the model's wide band covers it.

Which GPUs are measured, and the power ceiling a reading is judged by: ``nvml_devices.py``.

Every read while the meter runs is made on one worker thread and waited for at most
``BOUNDARY_DEADLINE_S`` (50 ms) from the call's start (``MAX_WAIT_S``, 250 ms, in all): a hanging
NVML costs a boundary that much at most, once (later reads fail at once while the call hangs),
and the interval is estimated until NVML answers.
NVML is initialised once per ``open()`` (the meter's ``start()``), where the devices are listed
without a deadline, and shut down at ``close()``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

from carbon_callbacks._checks import check_number, check_scope
from carbon_callbacks.energy.sensors.base import DeviceAbsent, Sensor, SensorError
from carbon_callbacks.energy.sensors.counters import MAX_REFUSED, CounterTrack
from carbon_callbacks.energy.sensors.deadline import (
    BOUNDARY_DEADLINE_S,
    CallTimedOut,
    DeadlineWorker,
)
from carbon_callbacks.energy.sensors.nvml_devices import (
    gpu_tdp_table,
    lookup_gpu_tdp,
    parse_visible,
    power_ceiling_w,
    select_devices,
)
from carbon_callbacks.energy.sensors.nvml_devices import text as _text
from carbon_callbacks.energy.sensors.ranges import NVML_REL, counter_range, model_range
from carbon_callbacks.records import Energy, Method

__all__ = ["NvmlSensor", "gpu_tdp_table", "lookup_gpu_tdp", "parse_visible"]

IDLE_FRACTION = 0.2
"""GPU model: power at 0% utilisation as a fraction of TDP (an assumption; see module doc)."""

DEFAULT_POLL_HZ = 10.0
MAX_POLL_HZ = 100.0
SAMPLES_PER_WINDOW = 100
"""Polled power: samples aimed at per window while the window is young (module doc)."""

SHUTDOWN_WAIT_S = 1.0
"""How long ``close()`` waits for ``nvmlShutdown`` on an idle worker (none when one hangs)."""


@dataclass
class _Gpu:
    handle: Any
    label: str
    fraction: float = 1.0
    mode: str = "counter"
    track: CounterTrack | None = None  # the energy counter, while it is (or was) read
    ceiling_w: float = 0.0
    late: bool = False  # the last read missed its deadline
    last_p: float = 0.0
    last_t: float = 0.0
    joules: float = 0.0  # polled, and gaps filled at a switch
    err: float = 0.0  # polled: accumulated sampling-error bound
    tdp_w: float = 0.0
    model_j: float = 0.0
    notes: list[str] = field(default_factory=list)


class NvmlSensor(Sensor):
    """Energy of the GPUs this process uses (or all, under ``scope="machine"``).

    Args:
        nvml: a pynvml-like module; None imports ``pynvml`` (from nvidia-ml-py) at ``open()``.
        gpu_ids: CUDA ordinals as this process sees them; None picks by scope (module doc).
        scope: "process" or "machine".
        poll_hz: power sampling rate where there is no energy counter, once a window is
            old (10 Hz or more).
        max_poll_hz: the rate right after a boundary (``poll_hz`` or more); equal to
            ``poll_hz`` for a fixed rate.
        env: the environment to read ``CUDA_VISIBLE_DEVICES``/``LOCAL_RANK`` from.
    """

    component = "gpu"

    def __init__(self, *, nvml: Any | None = None, gpu_ids: tuple[int, ...] | None = None,
                 scope: Literal["process", "machine"] = "process",
                 poll_hz: float = DEFAULT_POLL_HZ, max_poll_hz: float = MAX_POLL_HZ,
                 env: dict[str, str] | None = None) -> None:
        poll_hz = check_number(poll_hz, "poll_hz", low=DEFAULT_POLL_HZ, unit="Hz")
        check_scope(scope)
        if not max_poll_hz >= poll_hz:
            raise ValueError(f"max_poll_hz: expected poll_hz ({poll_hz:g} Hz) or more, got "
                             f"{max_poll_hz!r}; pass max_poll_hz=poll_hz for a fixed rate")
        self._given = nvml
        self._module = self._import_pynvml() if nvml is None else None
        self.nvml: Any = None
        self.gpu_ids = gpu_ids
        self.scope = scope
        self.poll_hz = float(poll_hz)
        self.max_poll_hz = float(max_poll_hz)
        self.env = env
        self._boundary = 0.0  # when totals() last read the GPUs: the current window's start
        self.gpus: list[_Gpu] = []
        self.selection = ""
        self._inited = False
        self._worker: DeadlineWorker | None = None
        self._opening = False

    # ---- set-up ------------------------------------------------------------------------

    def _is(self, exc: BaseException, code_name: str) -> bool:
        code = getattr(self.nvml, code_name, None)
        return code is not None and getattr(exc, "value", None) == code

    def _load(self) -> Any:
        if self._given is not None:
            return self._given
        if self._module is None:
            raise DeviceAbsent("no GPU measured: the pynvml module (nvidia-ml-py) is not "
                               "installed")
        return self._module

    @staticmethod
    def _import_pynvml() -> Any:
        try:
            # Imported when a meter is built, not with the package (import stays light) and
            # not in start(), whose latency counts.
            import pynvml
        except ImportError:
            return None
        return pynvml

    def open(self, now: float) -> None:
        self.nvml = self._load()
        nv = self.nvml
        try:
            nv.nvmlInit()
        except Exception as exc:  # NVMLError: no driver / library on this machine
            raise DeviceAbsent(f"no NVIDIA GPU: NVML could not start ({_text(exc)})") from exc
        self._inited = True
        try:
            devices, self.selection = select_devices(nv, scope=self.scope, gpu_ids=self.gpu_ids,
                                                     environ=self._environ)
        except Exception as exc:
            self.close()
            raise DeviceAbsent(f"no NVIDIA GPU: NVML could not list devices ({exc})") from exc
        self.gpus = [_Gpu(d.handle, d.label, d.fraction, notes=d.notes) for d in devices]
        if not self.gpus:
            self.close()
            raise DeviceAbsent(f"no NVIDIA GPU selected ({self.selection})")
        # One worker per NVML module in the process: meters share it, a hang never adds one.
        self._worker = DeadlineWorker.acquire(("nvml", id(nv)), "nvml-calls-carbon-callbacks")
        self._opening = True
        try:
            for g in self.gpus:
                self._start_gpu(g, now)
        finally:
            self._opening = False
        self._boundary = now
        self._replan(now)

    def _environ(self, key: str) -> str | None:
        return (self.env if self.env is not None else os.environ).get(key)

    def _call(self, fn: Any, *args: Any) -> Any:
        """An NVML call: direct while opening (start() may wait for a slow driver), else on
        the worker within the deadline (raises ``CallTimedOut`` past it)."""
        if self._opening or self._worker is None:
            return fn(*args)
        return self._worker.call(fn, *args, deadline=BOUNDARY_DEADLINE_S)

    def _start_gpu(self, g: _Gpu, now: float) -> None:
        nv = self.nvml
        g.ceiling_w, source = power_ceiling_w(nv, g.handle, g.label)
        try:
            raw = int(nv.nvmlDeviceGetTotalEnergyConsumption(g.handle))
            track = CounterTrack(f"gpu {g.label}", unit_j=1e-3, ceiling_w=g.ceiling_w)
            if not track.valid(raw):
                raise SensorError(f"it reads {raw}")
            track.open(raw, now)
            g.track, g.mode = track, "counter"
            g.notes.append(f"readings judged against {source}")
        except Exception as exc:
            if not self._is(exc, "NVML_ERROR_NOT_SUPPORTED"):
                g.notes.append(f"energy counter failed ({_text(exc)})")
            self._start_polled(g, now, first_reason="no energy counter (pre-Volta GPU or "
                               "vGPU): power polled")
        g.last_t = now

    def _start_polled(self, g: _Gpu, now: float, first_reason: str = "") -> None:
        try:
            g.last_p = int(self._call(self.nvml.nvmlDeviceGetPowerUsage, g.handle)) / 1000.0
            g.mode = "polled"
            if first_reason:
                g.notes.append(first_reason)
        except Exception as exc:
            why = ("power reading not supported" if self._is(exc, "NVML_ERROR_NOT_SUPPORTED")
                   else f"power reading failed ({_text(exc)})")
            g.notes.append(why)
            self._start_model(g)
        g.last_t = now

    def _start_model(self, g: _Gpu) -> None:
        nv = self.nvml
        try:
            g.tdp_w = int(self._call(nv.nvmlDeviceGetEnforcedPowerLimit, g.handle)) / 1000.0
            src = f"power limit {g.tdp_w:g} W"
        except Exception:
            match = lookup_gpu_tdp(g.label)
            g.tdp_w, src = (match[1], f"table TDP {match[1]:g} W") if match else (0.0, "")
        if g.tdp_w > 0:
            g.mode = "model"
            g.notes.append(f"estimate: {src} x (0.2 + 0.8 x utilisation)")
        else:
            g.mode = "unavailable"
            g.notes.append("no energy, power, power limit or known TDP: not measured")

    # ---- reading -----------------------------------------------------------------------

    def _fetch(self, gpus: list[_Gpu]) -> list[Any]:
        """Each GPU's reading for its mode, all in one call within the deadline: a
        ``(mode, value)`` pair, or the exception its read raised (``CallTimedOut`` for all
        when NVML did not answer in time)."""
        nv = self.nvml

        def read_all() -> list[Any]:
            out: list[Any] = []
            for g in gpus:
                try:
                    if g.mode == "counter":
                        out.append(("counter", int(nv.nvmlDeviceGetTotalEnergyConsumption(
                            g.handle))))
                    elif g.mode == "polled":
                        out.append(("polled", int(nv.nvmlDeviceGetPowerUsage(g.handle))))
                    elif g.mode == "model":
                        out.append(("model", float(nv.nvmlDeviceGetUtilizationRates(
                            g.handle).gpu)))
                    else:
                        out.append(None)
                except Exception as exc:  # this GPU's read failed; the others stand
                    out.append(exc)
            return out

        try:
            return list(self._call(read_all))
        except CallTimedOut as exc:
            return [exc] * len(gpus)

    def _draw_w(self, g: _Gpu) -> float | None:
        """The GPU's power now, to tell a stuck counter from an idle GPU (None: unknown)."""
        try:
            return int(self._call(self.nvml.nvmlDeviceGetPowerUsage, g.handle)) / 1000.0
        except Exception:
            return None

    def _step(self, g: _Gpu, now: float, got: Any) -> None:
        if isinstance(got, CallTimedOut):
            self._late(g, got, now)
            return
        if isinstance(got, BaseException):
            self._degrade(g, got, now)
            return
        if got is None or got[0] != g.mode:
            return
        if g.late:
            g.late = False
            if g.mode != "counter":  # a counter says so itself when it settles
                self.report(f"gpu {g.label}: NVML answers again", cause=f"nvml-back:{g.label}")
        value = got[1]
        dt = now - g.last_t
        if g.mode == "counter" and g.track is not None:
            verdict = g.track.read(value, now, draw_w=lambda: self._draw_w(g))
            if verdict.note:
                self.report(verdict.note, cause=f"nvml-{verdict.kind}:{g.label}")
            if g.track.refused >= MAX_REFUSED:
                self._degrade(g, SensorError(
                    f"{MAX_REFUSED} energy counter readings in a row refused as impossible "
                    "for the GPU"), now)
                return
        elif g.mode == "polled":
            if dt <= 0:
                return
            p = value / 1000.0
            g.joules += (g.last_p + p) / 2 * dt * g.fraction
            # Left and right Riemann sums bracket the truth for a monotone step.
            g.err += abs(p - g.last_p) / 2 * dt * g.fraction
            g.last_p = p
        elif g.mode == "model":
            if dt <= 0:
                return
            u = value / 100.0
            g.model_j += g.tdp_w * (IDLE_FRACTION + (1 - IDLE_FRACTION) * u) * dt * g.fraction
        g.last_t = now

    def _late(self, g: _Gpu, exc: CallTimedOut, now: float) -> None:
        """NVML did not answer in time: the counter's interval is estimated meanwhile; a
        polled or modelled sample is skipped (the next one spans the gap)."""
        first, g.late = not g.late, True
        note = g.track.late(now).note if g.mode == "counter" and g.track is not None else ""
        if first:
            note = note or f"gpu {g.label}: no {g.mode} reading in time; skipped until NVML answers"
            self.report(f"{note} ({exc})", cause=f"nvml-late:{g.label}")

    def _degrade(self, g: _Gpu, exc: BaseException, now: float) -> None:
        before, last_t = g.mode, g.last_t
        if g.track is not None:  # its estimate since its last good reading stays
            last_t = max(last_t, g.track.give_up())
        if before == "counter":
            self._start_polled(g, now)
            if g.mode == "polled":
                # The gap since the last good count is filled at the current power, with the
                # whole of it in the error bound.
                est = g.last_p * max(0.0, now - last_t) * g.fraction
                g.joules += est
                g.err += est
        elif before == "polled":
            self._start_model(g)
        else:
            g.mode = "unavailable"
        g.last_t = now
        self.report(f"gpu {g.label}: {before} failed ({_text(exc)}); now {g.mode}",
                    cause=f"nvml:{g.label}:{before}")
        self._replan(now)

    def _replan(self, now: float) -> None:
        """Set the thread's period: by window age for polled power, ``poll_hz`` for the model."""
        modes = {g.mode for g in self.gpus}
        if "polled" in modes:
            age = max(0.0, now - self._boundary)
            self.poll_interval = min(1.0 / self.poll_hz,
                                     max(1.0 / self.max_poll_hz, age / SAMPLES_PER_WINDOW))
        elif "model" in modes:
            self.poll_interval = 1.0 / self.poll_hz
        else:
            self.poll_interval = None

    def sample(self, now: float) -> None:
        gpus = [g for g in self.gpus if g.mode in ("polled", "model")]
        if gpus:
            for g, got in zip(gpus, self._fetch(gpus), strict=True):
                self._step(g, now, got)
        self._replan(now)

    # Read-only where Sensor has a plain attribute: the worst of the GPUs' modes.
    @property
    def method(self) -> str:  # type: ignore[override]
        return str(Method.worst(*(g.mode for g in self.gpus))) if self.gpus else "counter"

    def totals(self, now: float) -> Energy:
        if not self._inited:
            raise SensorError("NVML is not initialised")
        for g, got in zip(self.gpus, self._fetch(self.gpus), strict=True):
            self._step(g, now, got)
        self._boundary = now
        self._replan(now)
        # A counter interval that holds an estimate is reported as one.
        methods = [Method.MODEL if g.track is not None and g.track.take_estimated() else g.mode
                   for g in self.gpus]
        return self.last_good(Method.worst(*methods))

    def last_good(self, method: Method | None = None) -> Energy:
        j = low = high = 0.0
        for g in self.gpus:
            if g.track is not None:
                tj, tlo, thi = g.track.bounds(NVML_REL)
                j += tj * g.fraction
                low += tlo * g.fraction
                high += thi * g.fraction
            lo, hi = counter_range(g.joules, NVML_REL)
            mlo, mhi = model_range(g.model_j)
            j += g.joules + g.model_j
            low += max(0.0, lo - g.err) + mlo
            high += hi + g.err + mhi
        return Energy(j, low, high, method or Method(self.method), self.reason,
                      tuple(g.label for g in self.gpus))

    @property
    def reason(self) -> str:
        """Per GPU: how it is measured and why; then how the GPUs were chosen."""
        parts = []
        for g in self.gpus:
            how = {"counter": "NVML energy counter",
                   "polled": f"NVML power polled at {self.poll_hz:g}-{self.max_poll_hz:g} Hz "
                             "(faster while a window is young), trapezoid"}.get(
                       g.mode, g.mode)
            extra = "; ".join(g.notes)
            parts.append(f"{g.label}: {how}" + (f" ({extra})" if extra else ""))
        return "; ".join(parts) + (f"; selected by {self.selection}" if self.selection else "")

    def close(self) -> None:
        if not self._inited:
            return
        self._inited = False
        shutdown = self.nvml.nvmlShutdown

        def quietly() -> None:
            try:
                shutdown()
            except Exception:  # shutting down must never raise into stop()
                pass

        worker, self._worker = self._worker, None
        if worker is None:
            quietly()
        else:
            # After any call still hanging, on the worker: stop() never waits on a hang.
            worker.release(quietly, wait=0.0 if worker.hanging_s else SHUTDOWN_WAIT_S)

    def describe(self) -> str:
        return f"gpu: {self.method} - {self.reason}"
