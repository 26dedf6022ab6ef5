"""Fakes of the hardware boundaries, for tests and benchmarks (no real RAPL or GPU needed).

``FakePowercap`` builds a ``/sys/class/powercap``-like folder whose counters a test advances by
known joules (wrapping like the kernel does, or reset, removed or made unreadable as faults);
``FakeNVML`` is a pynvml-like module object with GPUs whose energy counter or power reading
follow a known trace, and that can hang or read garbage (``FakeNVML.as_module()`` makes it
importable as ``pynvml``).

Example::

    tree = FakePowercap(tmp_path)
    pkg = tree.add_zone("intel-rapl:0", "package-0")
    meter = EnergyMeter(rapl_root=tmp_path, nvml=FakeNVML([]), scope="machine")
    meter.start(); a = meter.mark()
    tree.advance(pkg, 12.5)                 # 12.5 J used by socket 0
    assert meter.window(a, meter.mark()).component_joules("cpu") == 12.5
"""

from __future__ import annotations

from carbon_callbacks.testing.nvml import (
    NVML_ERROR_GPU_IS_LOST,
    NVML_ERROR_LIBRARY_NOT_FOUND,
    NVML_ERROR_NOT_SUPPORTED,
    NVML_ERROR_UNINITIALIZED,
    NVML_SUCCESS,
    FakeGPU,
    FakeNVML,
    FakeNVMLError,
    FakeNVMLNotSupported,
)
from carbon_callbacks.testing.powercap import (
    DEFAULT_MAX_RANGE_UJ,
    FakePowercap,
    FakeZone,
    PowerDriver,
)

__all__ = [
    "DEFAULT_MAX_RANGE_UJ",
    "NVML_ERROR_GPU_IS_LOST",
    "NVML_ERROR_LIBRARY_NOT_FOUND",
    "NVML_ERROR_NOT_SUPPORTED",
    "NVML_ERROR_UNINITIALIZED",
    "NVML_SUCCESS",
    "FakeGPU",
    "FakeNVML",
    "FakeNVMLError",
    "FakeNVMLNotSupported",
    "FakePowercap",
    "FakeZone",
    "PowerDriver",
]
