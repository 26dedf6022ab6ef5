"""GPU energy through NVML: the total-energy counter, else polled power, else a labelled model.

Per GPU, the best source that answers is used:

1. ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since the driver loaded; Volta and newer):
   method ``counter``, read at each boundary.
2. ``nvmlDeviceGetPowerUsage`` (mW) sampled by the meter's thread at 10 Hz or faster and
   integrated by trapezoid: method ``polled``.
3. ``TDP x (0.2 + 0.8 x utilisation)``: method ``model``. TDP is the enforced power limit, else
   the bundled table (``data/gpu_tdp.csv``); the 20% idle floor is our assumption (data-centre
   GPUs idle at a fraction of their limit), and the model's wide band covers it.

Which GPUs: explicit ``gpu_ids`` (CUDA ordinals as this process sees them), else under
``scope="process"`` the device of ``LOCAL_RANK`` when set (one DDP rank, one GPU), else every
device in ``CUDA_VISIBLE_DEVICES``; ``scope="machine"`` takes every GPU. Integer entries of
``CUDA_VISIBLE_DEVICES`` are taken as NVML indices, which match CUDA's only with
``CUDA_DEVICE_ORDER=PCI_BUS_ID``; UUIDs (``GPU-...``, ``MIG-...``) are exact. A MIG instance is
charged the parent GPU's energy divided among its instances, since NVML measures whole GPUs.

NVML is initialised once per ``open()`` (the meter's ``start()``) and shut down at ``close()``.
"""

from __future__ import annotations

import csv
import functools
import io
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

from carbon_callbacks._checks import check_number, check_scope
from carbon_callbacks.energy.sensors.base import DeviceAbsent, Sensor, SensorError
from carbon_callbacks.energy.sensors.ranges import NVML_REL, counter_range, model_range
from carbon_callbacks.records import Energy, Method

IDLE_FRACTION = 0.2
"""GPU model: power at 0% utilisation as a fraction of TDP (an assumption; see module doc)."""

DEFAULT_POLL_HZ = 10.0


@functools.lru_cache(maxsize=1)
def gpu_tdp_table() -> dict[str, float]:
    """The bundled GPU table: name -> TDP in watts."""
    path = resources.files("carbon_callbacks.energy.sensors").joinpath("data/gpu_tdp.csv")
    rows = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"), newline=""))
    return {row["name"]: float(row["tdp_w"]) for row in rows}


def _toks(name: str) -> set[str]:
    # "80 GB" and "80GB" must read alike.
    text = re.sub(r"(\d)\s*gb\b", r"\1gb", name.lower().replace("-", " "))
    return set(re.findall(r"[a-z]+\d*|\d+[a-z]*", text))


def lookup_gpu_tdp(name: str) -> tuple[str, float] | None:
    """The table row whose words all appear in an NVML device name (most words wins)."""
    have = _toks(name)
    best = None
    for row, tdp in gpu_tdp_table().items():
        need = _toks(row)
        if need <= have and (best is None or len(need) > len(_toks(best[0]))):
            best = (row, tdp)
    return best


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class _Gpu:
    handle: Any
    label: str
    fraction: float = 1.0
    mode: str = "counter"
    last_mj: int = 0
    last_p: float = 0.0
    last_t: float = 0.0
    joules: float = 0.0
    err: float = 0.0  # polled: accumulated sampling-error bound
    tdp_w: float = 0.0
    model_j: float = 0.0
    notes: list[str] = field(default_factory=list)


def parse_visible(value: str | None) -> list[str] | None:
    """``CUDA_VISIBLE_DEVICES`` as a list of entries, or None when unset.

    Like CUDA, entries after the first invalid one are ignored, and "" hides every GPU.
    """
    if value is None:
        return None
    out: list[str] = []
    for raw in value.split(","):
        entry = raw.strip()
        if not (entry.isdigit() or entry.startswith(("GPU-", "MIG-"))):
            break
        out.append(entry)
    return out


class NvmlSensor(Sensor):
    """Energy of the GPUs this process uses (or all, under ``scope="machine"``).

    Args:
        nvml: a pynvml-like module; None imports ``pynvml`` (from nvidia-ml-py) at ``open()``.
        gpu_ids: CUDA ordinals as this process sees them; None picks by scope (module doc).
        scope: "process" or "machine".
        poll_hz: power sampling rate where there is no energy counter (10 Hz or more).
        env: the environment to read ``CUDA_VISIBLE_DEVICES``/``LOCAL_RANK`` from.
    """

    component = "gpu"

    def __init__(self, *, nvml: Any | None = None, gpu_ids: tuple[int, ...] | None = None,
                 scope: Literal["process", "machine"] = "process",
                 poll_hz: float = DEFAULT_POLL_HZ,
                 env: dict[str, str] | None = None) -> None:
        poll_hz = check_number(poll_hz, "poll_hz", low=DEFAULT_POLL_HZ, unit="Hz")
        check_scope(scope)
        self._given = nvml
        self._module = self._import_pynvml() if nvml is None else None
        self.nvml: Any = None
        self.gpu_ids = gpu_ids
        self.scope = scope
        self.poll_hz = float(poll_hz)
        self.env = env
        self.gpus: list[_Gpu] = []
        self.selection = ""
        self._inited = False

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
            self.gpus = self._select()
        except Exception as exc:
            self.close()
            raise DeviceAbsent(f"no NVIDIA GPU: NVML could not list devices ({exc})") from exc
        if not self.gpus:
            self.close()
            raise DeviceAbsent(f"no NVIDIA GPU selected ({self.selection})")
        for g in self.gpus:
            self._start_gpu(g, now)
        polled = any(g.mode in ("polled", "model") for g in self.gpus)
        self.poll_interval = 1.0 / self.poll_hz if polled else None

    def _environ(self, key: str) -> str | None:
        return (self.env if self.env is not None else os.environ).get(key)

    def _resolve(self, entry: str) -> tuple[Any, str, bool]:
        nv = self.nvml
        if entry.isdigit():
            return nv.nvmlDeviceGetHandleByIndex(int(entry)), entry, False
        h = nv.nvmlDeviceGetHandleByUUID(entry)
        is_mig = entry.startswith("MIG-")
        if is_mig:
            h = nv.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(h)
        return h, entry, is_mig

    def _mig_count(self, handle: Any) -> int:
        nv = self.nvml
        n = 0
        try:
            for i in range(int(nv.nvmlDeviceGetMaxMigDeviceCount(handle))):
                try:
                    nv.nvmlDeviceGetMigDeviceHandleByIndex(handle, i)
                    n += 1
                except Exception:  # NVML_ERROR_NOT_FOUND: that slot is empty
                    continue
        except Exception:
            return 1
        return max(1, n)

    def _select(self) -> list[_Gpu]:
        nv = self.nvml
        count = int(nv.nvmlDeviceGetCount())
        visible = parse_visible(self._environ("CUDA_VISIBLE_DEVICES"))
        if self.scope == "machine" and self.gpu_ids is None:
            entries = [str(i) for i in range(count)]
            self.selection = f"scope=machine: all {count} GPU(s)"
        else:
            pool = visible if visible is not None else [str(i) for i in range(count)]
            src = "CUDA_VISIBLE_DEVICES" if visible is not None else "all GPUs"
            if self.gpu_ids is not None:
                entries = [pool[i] for i in self.gpu_ids if i < len(pool)]
                missing = [i for i in self.gpu_ids if i >= len(pool)]
                self.selection = f"gpu_ids={list(self.gpu_ids)} of {src} {pool}"
                if missing:
                    self.selection += f" (ids {missing} not visible, ignored)"
            elif (self._environ("LOCAL_RANK") or "").isdigit() and len(pool) > 1:
                rank = int(self._environ("LOCAL_RANK") or 0)
                entries = [pool[rank % len(pool)]]
                self.selection = f"LOCAL_RANK={rank}: device {entries[0]} of {src} {pool}"
            else:
                entries = list(pool)
                self.selection = f"{src}: {pool}"
        gpus: dict[str, _Gpu] = {}
        migs: dict[str, int] = {}
        for entry in entries:
            try:
                handle, label, is_mig = self._resolve(entry)
                uuid = _text(nv.nvmlDeviceGetUUID(handle))
                name = _text(nv.nvmlDeviceGetName(handle))
            except Exception as exc:
                self.selection += f"; {entry} not found ({_text(exc)})"
                continue
            key = uuid
            if key not in gpus:
                gpus[key] = _Gpu(handle, f"{name} [{label}]")
            if is_mig:
                migs[key] = migs.get(key, 0) + 1
        for key, k in migs.items():
            g = gpus[key]
            if self.scope == "process":
                n = self._mig_count(g.handle)
                g.fraction = min(1.0, k / n)
                g.notes.append(f"MIG: {k} of {n} instances, charged {g.fraction:.2f} of the GPU")
        return list(gpus.values())

    def _start_gpu(self, g: _Gpu, now: float) -> None:
        nv = self.nvml
        try:
            g.last_mj = int(nv.nvmlDeviceGetTotalEnergyConsumption(g.handle))
            g.mode = "counter"
        except Exception as exc:
            if not self._is(exc, "NVML_ERROR_NOT_SUPPORTED"):
                g.notes.append(f"energy counter failed ({_text(exc)})")
            self._start_polled(g, now, first_reason="no energy counter (pre-Volta GPU or "
                               "vGPU): power polled")
        g.last_t = now

    def _start_polled(self, g: _Gpu, now: float, first_reason: str = "") -> None:
        try:
            g.last_p = int(self.nvml.nvmlDeviceGetPowerUsage(g.handle)) / 1000.0
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
            g.tdp_w = int(nv.nvmlDeviceGetEnforcedPowerLimit(g.handle)) / 1000.0
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

    def _step(self, g: _Gpu, now: float) -> None:
        nv = self.nvml
        dt = now - g.last_t
        try:
            if g.mode == "counter":
                mj = int(nv.nvmlDeviceGetTotalEnergyConsumption(g.handle))
                g.joules += max(0, mj - g.last_mj) / 1000.0 * g.fraction
                g.last_mj = mj
            elif g.mode == "polled":
                if dt <= 0:
                    return
                p = int(nv.nvmlDeviceGetPowerUsage(g.handle)) / 1000.0
                g.joules += (g.last_p + p) / 2 * dt * g.fraction
                # Left and right Riemann sums bracket the truth for a monotone step.
                g.err += abs(p - g.last_p) / 2 * dt * g.fraction
                g.last_p = p
            elif g.mode == "model":
                if dt <= 0:
                    return
                u = float(nv.nvmlDeviceGetUtilizationRates(g.handle).gpu) / 100.0
                g.model_j += g.tdp_w * (IDLE_FRACTION + (1 - IDLE_FRACTION) * u) * dt * g.fraction
        except Exception as exc:
            self._degrade(g, exc, now)
            return
        g.last_t = now

    def _degrade(self, g: _Gpu, exc: BaseException, now: float) -> None:
        before, last_t = g.mode, g.last_t
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
        if any(x.mode in ("polled", "model") for x in self.gpus):
            self.poll_interval = 1.0 / self.poll_hz

    def sample(self, now: float) -> None:
        for g in self.gpus:
            if g.mode in ("polled", "model"):
                self._step(g, now)

    # Read-only where Sensor has a plain attribute: the worst of the GPUs' modes.
    @property
    def method(self) -> str:  # type: ignore[override]
        return Method.worst(*(g.mode for g in self.gpus)) if self.gpus else Method.COUNTER

    def totals(self, now: float) -> Energy:
        if not self._inited:
            raise SensorError("NVML is not initialised")
        for g in self.gpus:
            self._step(g, now)
        return self.last_good()

    def last_good(self) -> Energy:
        j = low = high = 0.0
        for g in self.gpus:
            lo, hi = counter_range(g.joules, NVML_REL)
            mlo, mhi = model_range(g.model_j)
            j += g.joules + g.model_j
            low += max(0.0, lo - g.err) + mlo
            high += hi + g.err + mhi
        return Energy(j, low, high, self.method, self.reason,
                      tuple(g.label for g in self.gpus))

    @property
    def reason(self) -> str:
        """Per GPU: how it is measured and why; then how the GPUs were chosen."""
        parts = []
        for g in self.gpus:
            how = {"counter": "NVML energy counter",
                   "polled": f"NVML power polled at {self.poll_hz:g} Hz, trapezoid"}.get(
                       g.mode, g.mode)
            extra = "; ".join(g.notes)
            parts.append(f"{g.label}: {how}" + (f" ({extra})" if extra else ""))
        return "; ".join(parts) + (f"; selected by {self.selection}" if self.selection else "")

    def close(self) -> None:
        if self._inited:
            self._inited = False
            try:
                self.nvml.nvmlShutdown()
            except Exception:  # shutting down must never raise into stop()
                pass

    def describe(self) -> str:
        return f"gpu: {self.method} - {self.reason}"
