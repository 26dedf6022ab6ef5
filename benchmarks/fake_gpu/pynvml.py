"""A fake ``pynvml`` whose one GPU follows ``traces.GPU_TRACE`` exactly.

The accuracy benchmark puts this folder first on ``PYTHONPATH`` (and ``bin/`` with a fake
``nvidia-smi`` first on ``PATH``, which CodeCarbon checks before using NVML), so both tools
read the same known GPU: its total-energy counter is the trace's exact integral in mJ since
the origin ``$CCB_T0`` (a ``time.monotonic()`` value), and its power reading is the trace's
instantaneous power. With ``CCB_GPU_COUNTER=0`` the energy counter answers NOT_SUPPORTED,
as on boards older than Volta, so a tool must integrate the power itself. Any NVML call not
modelled here answers NOT_SUPPORTED, as a real driver does for features a board lacks.
"""

from __future__ import annotations

import os
import sys
import time
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from traces import GPU_TRACE  # noqa: E402

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_TEMPERATURE_GPU = 0
NVML_COMPUTEMODE_DEFAULT = 0

_T0 = float(os.environ.get("CCB_T0", "0"))
_COUNTER = os.environ.get("CCB_GPU_COUNTER", "1") != "0"
_HANDLE = SimpleNamespace(index=0)


class NVMLError(Exception):
    """Mirror of pynvml's error: ``value`` is the NVML return code."""

    def __init__(self, value: int = NVML_ERROR_NOT_SUPPORTED) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return f"NVML error {self.value}"


class NVMLError_NotSupported(NVMLError):  # noqa: N801 - pynvml's own name
    def __init__(self, value: int = NVML_ERROR_NOT_SUPPORTED) -> None:
        super().__init__(NVML_ERROR_NOT_SUPPORTED)


class NVMLError_FunctionNotFound(NVMLError):  # noqa: N801
    def __init__(self, value: int = NVML_ERROR_FUNCTION_NOT_FOUND) -> None:
        super().__init__(NVML_ERROR_FUNCTION_NOT_FOUND)


def _now() -> float:
    return time.monotonic() - _T0


def nvmlInit() -> None:  # noqa: N802
    pass


def nvmlInitWithFlags(flags: int = 0) -> None:  # noqa: N802
    pass


def nvmlShutdown() -> None:  # noqa: N802
    pass


def nvmlSystemGetDriverVersion() -> str:  # noqa: N802
    return "550.00"


def nvmlDeviceGetCount() -> int:  # noqa: N802
    return 1


def nvmlDeviceGetHandleByIndex(index: int) -> SimpleNamespace:  # noqa: N802
    if index != 0:
        raise NVMLError(2)
    return _HANDLE


def nvmlDeviceGetIndex(handle) -> int:  # noqa: N802
    return 0


def nvmlDeviceGetName(handle) -> str:  # noqa: N802
    return "NVIDIA A100-SXM4-40GB"


def nvmlDeviceGetUUID(handle) -> str:  # noqa: N802
    return "GPU-00000000-0000-0000-0000-000000000000"


def nvmlDeviceGetTotalEnergyConsumption(handle) -> int:  # noqa: N802
    if not _COUNTER:
        raise NVMLError_NotSupported()
    return int(GPU_TRACE.energy(_now()) * 1000)


def nvmlDeviceGetPowerUsage(handle) -> int:  # noqa: N802
    t = _now() % GPU_TRACE.period
    watts = GPU_TRACE.high if t < GPU_TRACE.on else GPU_TRACE.low
    return int(watts * 1000)


def nvmlDeviceGetEnforcedPowerLimit(handle) -> int:  # noqa: N802
    return 400_000


nvmlDeviceGetPowerManagementLimit = nvmlDeviceGetEnforcedPowerLimit


def nvmlDeviceGetMemoryInfo(handle) -> SimpleNamespace:  # noqa: N802
    return SimpleNamespace(total=40 << 30, free=39 << 30, used=1 << 30)


def c_nvmlMemory_t(total: int, free: int, used: int) -> SimpleNamespace:  # noqa: N802
    return SimpleNamespace(total=total, free=free, used=used)


def nvmlDeviceGetTemperature(handle, sensor: int) -> int:  # noqa: N802
    return 40


def nvmlDeviceGetUtilizationRates(handle) -> SimpleNamespace:  # noqa: N802
    return SimpleNamespace(gpu=50, memory=10)


def nvmlDeviceGetComputeMode(handle) -> int:  # noqa: N802
    return NVML_COMPUTEMODE_DEFAULT


def nvmlDeviceGetComputeRunningProcesses(handle) -> list:  # noqa: N802
    return []


nvmlDeviceGetGraphicsRunningProcesses = nvmlDeviceGetComputeRunningProcesses


def nvmlDeviceGetMigMode(handle) -> tuple[int, int]:  # noqa: N802
    return (0, 0)


def __getattr__(name: str):
    if name.startswith("nvml"):
        def not_supported(*args, **kwargs):
            raise NVMLError_NotSupported()
        return not_supported
    raise AttributeError(name)
