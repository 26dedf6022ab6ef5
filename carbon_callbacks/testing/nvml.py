"""A pynvml-like module object over fake GPUs whose energy counter and power follow a known trace,
with the faults real drivers show (calls that hang, counters that read garbage)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType, SimpleNamespace
from typing import Any

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_LIBRARY_NOT_FOUND = 12


NVML_TEMPERATURE_GPU = 0
NVML_COMPUTEMODE_DEFAULT = 0


class FakeNVMLError(Exception):
    """Stands for ``pynvml.NVMLError``: carries the NVML return code in ``value``."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return {3: "Not Supported", 1: "Uninitialized", 15: "GPU is lost",
                12: "NVML Shared Library Not Found"}.get(self.value, f"NVML error {self.value}")


class FakeNVMLNotSupported(FakeNVMLError):
    """Stands for ``pynvml.NVMLError_NotSupported`` (code ``NVML_ERROR_NOT_SUPPORTED``)."""

    def __init__(self, value: int = NVML_ERROR_NOT_SUPPORTED) -> None:
        super().__init__(NVML_ERROR_NOT_SUPPORTED)


@dataclass
class FakeGPU:
    """One fake GPU. Power is a function of time since the fake's clock zero (watts).

    Attributes:
        energy_counter: whether ``nvmlDeviceGetTotalEnergyConsumption`` is supported.
        power_supported: whether ``nvmlDeviceGetPowerUsage`` is supported.
        mig_instances: MIG device UUIDs on this GPU (MIG mode on when non-empty).
        fail_after: raise NVML_ERROR_GPU_IS_LOST once the clock passes this many seconds.
        power_limit_w: the enforced power limit; the highest settable one is the same.
        energy_j: the exact energy since clock zero at time t, when the trace has one (else
            ``power_w`` is integrated in 1 ms steps).
        energy_fault: what the energy counter reads, given its true value (mJ) and the
            clock: a test's garbage (negative, backwards, stuck), or None for the truth.
        hang_after: from this clock time on, each measurement call (energy, power,
            utilisation) blocks for ``hang_s`` seconds first, as a wedged driver does (until
            ``FakeNVML.release_hangs()``).
        hang_s: how long each such call blocks.
    """

    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    power_w: Callable[[float], float] = lambda t: 100.0
    energy_counter: bool = True
    power_supported: bool = True
    mig_instances: Sequence[str] = ()
    fail_after: float | None = None
    energy_offset_mj: int = 123_456_789
    power_limit_w: float = 700.0
    energy_j: Callable[[float], float] | None = None
    energy_fault: Callable[[int, float], int] | None = None
    hang_after: float | None = None
    hang_s: float = 0.0
    calls: dict[str, int] = field(default_factory=dict)


class FakeNVML:
    """A pynvml-like module object over a list of ``FakeGPU``.

    Energy counters integrate each GPU's ``power_w(t)`` exactly (fine steps), so a test knows
    the truth; ``clock`` is injectable so a test can drive time by hand.

    Args:
        gpus: the GPUs, in NVML (PCI bus) order.
        clock: seconds; default ``time.monotonic`` relative to construction.
    """

    NVMLError = FakeNVMLError
    NVML_ERROR_NOT_SUPPORTED = NVML_ERROR_NOT_SUPPORTED
    NVML_ERROR_UNINITIALIZED = NVML_ERROR_UNINITIALIZED
    NVML_ERROR_GPU_IS_LOST = NVML_ERROR_GPU_IS_LOST
    NVML_ERROR_LIBRARY_NOT_FOUND = NVML_ERROR_LIBRARY_NOT_FOUND
    NVML_DEVICE_MIG_ENABLE = 1
    NVML_DEVICE_MIG_DISABLE = 0

    def __init__(self, gpus: Sequence[FakeGPU], clock: Callable[[], float] | None = None,
                 *, init_error: int | None = None) -> None:
        self.gpus = list(gpus)
        t0 = time.monotonic()
        self.clock = clock or (lambda: time.monotonic() - t0)
        self.init_error = init_error
        self.init_calls = 0
        self.shutdown_calls = 0
        self.initialised = 0
        self._lock = threading.Lock()
        self._energy_cache: dict[int, tuple[float, float]] = {}
        self._released = threading.Event()
        self.hangs = 0
        """Calls that blocked (see ``FakeGPU.hang_after``)."""

    def release_hangs(self) -> None:
        """End every hanging call now and let later ones through (a test's teardown)."""
        self._released.set()

    # library lifetime
    def nvmlInit(self) -> None:  # noqa: N802 - pynvml's names
        self.init_calls += 1
        if self.init_error is not None:
            raise FakeNVMLError(self.init_error)
        self.initialised += 1

    def nvmlInitWithFlags(self, flags: int = 0) -> None:  # noqa: N802
        self.nvmlInit()

    def nvmlSystemGetDriverVersion(self) -> str:  # noqa: N802
        return "550.00"

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.shutdown_calls += 1
        self.initialised = max(0, self.initialised - 1)

    def _check(self, handle: Any, what: str) -> FakeGPU:
        if not self.initialised:
            raise FakeNVMLError(NVML_ERROR_UNINITIALIZED)
        gpu = self.gpus[handle.index]
        gpu.calls[what] = gpu.calls.get(what, 0) + 1
        if gpu.fail_after is not None and self.clock() >= gpu.fail_after:
            raise FakeNVMLError(NVML_ERROR_GPU_IS_LOST)
        if (what in ("energy", "power", "util") and gpu.hang_after is not None
                and self.clock() >= gpu.hang_after and not self._released.is_set()):
            with self._lock:
                self.hangs += 1
            self._released.wait(gpu.hang_s)
        return gpu

    # devices
    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        if not self.initialised:
            raise FakeNVMLError(NVML_ERROR_UNINITIALIZED)
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:  # noqa: N802
        if not self.initialised:
            raise FakeNVMLError(NVML_ERROR_UNINITIALIZED)
        if not 0 <= index < len(self.gpus):
            raise FakeNVMLError(2)  # NVML_ERROR_INVALID_ARGUMENT
        return SimpleNamespace(index=index, mig=None)

    def nvmlDeviceGetHandleByUUID(self, uuid: str | bytes) -> Any:  # noqa: N802
        if isinstance(uuid, bytes):
            uuid = uuid.decode()
        for i, g in enumerate(self.gpus):
            if g.uuid == uuid:
                return SimpleNamespace(index=i, mig=None)
            if uuid in g.mig_instances:
                return SimpleNamespace(index=i, mig=uuid)
        raise FakeNVMLError(6)  # NVML_ERROR_NOT_FOUND

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle: Any) -> Any:  # noqa: N802
        return SimpleNamespace(index=handle.index, mig=None)

    def nvmlDeviceIsMigDeviceHandle(self, handle: Any) -> bool:  # noqa: N802
        return handle.mig is not None

    def nvmlDeviceGetMigMode(self, handle: Any) -> list[int]:  # noqa: N802
        g = self._check(handle, "mig_mode")
        on = 1 if g.mig_instances else 0
        return [on, on]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: Any) -> int:  # noqa: N802
        return 7 if self._check(handle, "max_mig").mig_instances else 0

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: Any, index: int) -> Any:  # noqa: N802
        g = self._check(handle, "mig_by_index")
        if index >= len(g.mig_instances):
            raise FakeNVMLError(6)
        return SimpleNamespace(index=handle.index, mig=g.mig_instances[index])

    def nvmlDeviceGetName(self, handle: Any) -> str:  # noqa: N802
        return self._check(handle, "name").name

    def nvmlDeviceGetUUID(self, handle: Any) -> str:  # noqa: N802
        g = self._check(handle, "uuid")
        return handle.mig or g.uuid

    # measurements
    def _energy_j(self, index: int, t: float) -> float:
        """Exact integral of power_w from 0 to t (cached, extended in 1 ms steps)."""
        exact = self.gpus[index].energy_j
        if exact is not None:
            return exact(t)
        with self._lock:
            t_done, e = self._energy_cache.get(index, (0.0, 0.0))
            if t < t_done:
                t_done, e = 0.0, 0.0
            p = self.gpus[index].power_w
            step = 1e-3
            while t_done + step <= t:
                e += (p(t_done) + p(t_done + step)) / 2 * step
                t_done += step
            self._energy_cache[index] = (t_done, e)
            return e + (p(t_done) + p(t)) / 2 * (t - t_done)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:  # noqa: N802
        g = self._check(handle, "energy")
        if not g.energy_counter:
            raise FakeNVMLNotSupported()
        now = self.clock()
        true_mj = g.energy_offset_mj + int(self._energy_j(handle.index, now) * 1000)
        return true_mj if g.energy_fault is None else int(g.energy_fault(true_mj, now))

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:  # noqa: N802
        g = self._check(handle, "power")
        if not g.power_supported:
            raise FakeNVMLNotSupported()
        return int(round(g.power_w(self.clock()) * 1000))

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any) -> int:  # noqa: N802
        return int(self._check(handle, "limit").power_limit_w * 1000)

    nvmlDeviceGetPowerManagementLimit = nvmlDeviceGetEnforcedPowerLimit

    def nvmlDeviceGetPowerManagementLimitConstraints(self, handle: Any) -> list[int]:  # noqa: N802
        return [100_000, int(self._check(handle, "limit").power_limit_w * 1000)]

    def nvmlDeviceGetIndex(self, handle: Any) -> int:  # noqa: N802
        return int(handle.index)

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any:  # noqa: N802
        self._check(handle, "memory")
        return SimpleNamespace(total=80 << 30, free=79 << 30, used=1 << 30)

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:  # noqa: N802
        self._check(handle, "temperature")
        return 40

    def nvmlDeviceGetComputeMode(self, handle: Any) -> int:  # noqa: N802
        self._check(handle, "compute_mode")
        return NVML_COMPUTEMODE_DEFAULT

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[Any]:  # noqa: N802
        self._check(handle, "processes")
        return []

    nvmlDeviceGetGraphicsRunningProcesses = nvmlDeviceGetComputeRunningProcesses

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:  # noqa: N802
        self._check(handle, "util")
        return SimpleNamespace(gpu=50, memory=20)

    def energy_j(self, index: int, t0: float, t1: float) -> float:
        """The true energy of GPU ``index`` between two clock values, for assertions."""
        return self._energy_j(index, t1) - self._energy_j(index, t0)

    def as_module(self, name: str = "pynvml") -> ModuleType:
        """This fake as an importable module, for code that imports ``pynvml`` itself.

        Every NVML function and error code of the fake becomes a module attribute; any other
        ``nvml...`` function raises NOT_SUPPORTED, as a real driver does for a feature the
        board lacks. Put it in ``sys.modules[name]`` (or return it from a ``pynvml.py`` on
        ``PYTHONPATH``) before the code under test imports it.
        """
        module = ModuleType(name, "A fake pynvml (carbon_callbacks.testing.FakeNVML).")
        for attr in dir(self):
            if attr.startswith(("nvml", "NVML")):
                setattr(module, attr, getattr(self, attr))
        extras = {"NVMLError": FakeNVMLError, "NVMLError_NotSupported": FakeNVMLNotSupported,
                  "NVML_SUCCESS": NVML_SUCCESS, "NVML_TEMPERATURE_GPU": NVML_TEMPERATURE_GPU,
                  "NVML_COMPUTEMODE_DEFAULT": NVML_COMPUTEMODE_DEFAULT}
        for attr, value in extras.items():
            setattr(module, attr, value)

        def not_supported(*args: Any, **kwargs: Any) -> Any:
            raise FakeNVMLNotSupported()

        def missing(attr: str) -> Any:
            if attr.startswith("nvml"):
                return not_supported
            raise AttributeError(f"module {name!r} has no attribute {attr!r}")

        setattr(module, "__getattr__", missing)  # noqa: B010 - a module's own __getattr__
        return module
