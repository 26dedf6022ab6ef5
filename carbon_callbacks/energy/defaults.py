"""The sensors an ``EnergyMeter`` uses when it is not handed any: for each component, the best
source first, then the ones it degrades to."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

from carbon_callbacks.energy.sensors.base import FallbackChain, Sensor
from carbon_callbacks.energy.sensors.cpu_model import CpuModelSensor
from carbon_callbacks.energy.sensors.nvml import NvmlSensor
from carbon_callbacks.energy.sensors.process import CpuShare, ProcessTree
from carbon_callbacks.energy.sensors.ram import RamModelSensor
from carbon_callbacks.energy.sensors.rapl import RaplSensor


def build_sensors(
    *,
    scope: Literal["process", "machine"] = "process",
    gpu_ids: Sequence[int] | None = None,
    rapl_root: str | os.PathLike[str] = "/sys/class/powercap",
    nvml: Any | None = None,
    interval: float = 1.0,
) -> list[FallbackChain]:
    """The sensor chains for cpu, ram and gpu, best method first in each.

    Args:
        scope: "process" or "machine" (see ``EnergyMeter``).
        gpu_ids: CUDA device ordinals to measure, or None to choose by scope.
        rapl_root: the powercap folder.
        nvml: a pynvml-like module, or None to import ``pynvml`` when opened.
        interval: seconds between the thread's reads for the models.

    Returns:
        One ``FallbackChain`` per component.
    """
    # One process tree for every sensor that attributes by it: one scan for children and
    # one cpu_times per process per read, not one per sensor (each sensor keeps its own
    # baseline in its CpuShare).
    tree = ProcessTree() if scope == "process" else None
    cpu: list[Sensor] = [
        RaplSensor("cpu", root=rapl_root, scope=scope, interval=interval,
                   share=CpuShare(tree) if tree else None),
        CpuModelSensor(scope=scope, interval=interval, share=CpuShare(tree) if tree else None),
    ]
    ram: list[Sensor] = [
        RaplSensor("ram", root=rapl_root, scope=scope, interval=interval,
                   share=CpuShare(tree) if tree else None),
        RamModelSensor(scope=scope, interval=interval, tree=tree),
    ]
    gpu: list[Sensor] = [NvmlSensor(nvml=nvml, gpu_ids=tuple(gpu_ids) if gpu_ids else None,
                                     scope=scope)]
    return [FallbackChain(cpu), FallbackChain(gpu), FallbackChain(ram)]
