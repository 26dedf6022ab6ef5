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
# nvml.h's return codes: Zeus maps each one to an exception class when it is imported.
_ERRORS = ("UNINITIALIZED", "INVALID_ARGUMENT", "NOT_SUPPORTED", "NO_PERMISSION",
           "ALREADY_INITIALIZED", "NOT_FOUND", "INSUFFICIENT_SIZE", "INSUFFICIENT_POWER",
           "DRIVER_NOT_LOADED", "TIMEOUT", "IRQ_ISSUE", "LIBRARY_NOT_FOUND", "FUNCTION_NOT_FOUND",
           "CORRUPTED_INFOROM", "GPU_IS_LOST", "RESET_REQUIRED", "OPERATING_SYSTEM",
           "LIB_RM_VERSION_MISMATCH", "IN_USE", "MEMORY", "NO_DATA")
globals().update({f"NVML_ERROR_{name}": code for code, name in enumerate(_ERRORS, 1)})
NVML_ERROR_UNKNOWN = 999
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_TEMPERATURE_GPU = 0
NVML_COMPUTEMODE_DEFAULT = 0
NVML_CLOCK_GRAPHICS = 0
NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
NVML_FEATURE_DISABLED = 0
NVML_FEATURE_ENABLED = 1
NVML_DEVICE_ARCH_PASCAL = 4
NVML_DEVICE_ARCH_VOLTA = 5
NVML_DEVICE_ARCH_AMPERE = 7
NVML_FI_DEV_POWER_AVERAGE = 185
NVML_FI_DEV_POWER_INSTANT = 186
NVML_POWER_SCOPE_GPU = 0
NVML_POWER_SCOPE_MODULE = 1
NVML_POWER_SCOPE_MEMORY = 2

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


class NVMLError_Uninitialized(NVMLError):  # noqa: N801
    def __init__(self, value: int = NVML_ERROR_UNINITIALIZED) -> None:
        super().__init__(NVML_ERROR_UNINITIALIZED)


class NVMLError_FunctionNotFound(NVMLError):  # noqa: N801
    def __init__(self, value: int = NVML_ERROR_FUNCTION_NOT_FOUND) -> None:
        super().__init__(NVML_ERROR_FUNCTION_NOT_FOUND)


def _nvmlGetFunctionPointer(name: str) -> None:  # noqa: N802
    """Present in NVIDIA's own bindings (nvidia-ml-py); Zeus refuses a pynvml without it."""
    raise NVMLError_FunctionNotFound()


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


def nvmlSystemGetCudaDriverVersion() -> int:  # noqa: N802
    return 12040


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
    return int(_watts() * 1000)


def _watts() -> float:
    t = _now() % GPU_TRACE.period
    return GPU_TRACE.high if t < GPU_TRACE.on else GPU_TRACE.low


def nvmlDeviceGetArchitecture(handle) -> int:  # noqa: N802
    # Boards without the energy counter are the pre-Volta ones: tools that check the
    # architecture (Zeus) and tools that try the counter (ours, CodeCarbon) choose alike.
    return NVML_DEVICE_ARCH_AMPERE if _COUNTER else NVML_DEVICE_ARCH_PASCAL


def nvmlDeviceGetFieldValues(handle, fields) -> list:  # noqa: N802
    """Only the instantaneous GPU power field; any other field answers NOT_SUPPORTED."""
    out = []
    for field in fields:
        fid, scope = field if isinstance(field, tuple) else (field, NVML_POWER_SCOPE_GPU)
        ok = fid == NVML_FI_DEV_POWER_INSTANT and scope == NVML_POWER_SCOPE_GPU
        out.append(SimpleNamespace(
            fieldId=fid, scopeId=scope, timestamp=int(time.time() * 1e6), latencyUsec=0,
            valueType=4, nvmlReturn=NVML_SUCCESS if ok else NVML_ERROR_NOT_SUPPORTED,
            value=SimpleNamespace(uiVal=int(_watts() * 1000) if ok else 0)))
    return out


def nvmlDeviceGetEnforcedPowerLimit(handle) -> int:  # noqa: N802
    return 400_000


nvmlDeviceGetPowerManagementLimit = nvmlDeviceGetEnforcedPowerLimit
nvmlDeviceGetPowerManagementDefaultLimit = nvmlDeviceGetEnforcedPowerLimit


def nvmlDeviceGetClockInfo(handle, clock: int) -> int:  # noqa: N802
    return 1410


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
