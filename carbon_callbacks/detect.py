"""Which sensor measures each component on this machine, and why (``carbon-callbacks detect``).

``build_sensors`` is what ``EnergyMeter`` uses when it is not handed sensors: for each
component, the best source first, then the ones it degrades to.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

from carbon_callbacks.sensors.base import FallbackChain, Sensor
from carbon_callbacks.sensors.cpu_model import CpuModelSensor
from carbon_callbacks.sensors.nvml import NvmlSensor
from carbon_callbacks.sensors.process import CpuShare, ProcessTree
from carbon_callbacks.sensors.ram import RamModelSensor
from carbon_callbacks.sensors.rapl import RaplSensor


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


def detect_report(
    rapl_root: str | os.PathLike[str] = "/sys/class/powercap",
    *,
    nvml: Any | None = None,
    scope: Literal["process", "machine"] = "process",
) -> str:
    """A readable account of what each sensor finds here and which method each component uses.

    Opens the sensors the way ``EnergyMeter.start()`` does (so NVML is started and stopped
    once and unreadable counters are tried), then closes them.

    Args:
        rapl_root: the powercap folder.
        nvml: a pynvml-like module, or None to import ``pynvml``.
        scope: the scope to describe.

    Returns:
        Several lines of text, ending with one line per component.
    """
    from carbon_callbacks.meter import EnergyMeter
    from carbon_callbacks.sensors.base import SensorError
    from carbon_callbacks.sensors.cpu_model import lookup_tdp, read_cpu_info
    from carbon_callbacks.sensors.rapl import discover, read_energy_uj

    lines: list[str] = []
    info = read_cpu_info()
    tdp = lookup_tdp(info.model_name)
    lines.append(
        f"CPU: {info.model_name} ({info.logical} logical CPUs, {info.sockets} socket(s)); "
        + (f"TDP table: '{tdp[0]}' {tdp[1]:g} W" if tdp else "not in the TDP table")
    )
    d = discover(rapl_root)
    if d.problem:
        lines.append(f"RAPL: none - {d.problem}")
    else:
        zones = [*d.packages, *d.drams]
        if not zones:
            lines.append(f"RAPL: {d.root} holds no package or DRAM domain")
        for z in zones:
            try:
                read_energy_uj(z.path, rapl_root)
                state = "readable"
            except SensorError as exc:
                state = f"NOT readable: {exc}"
            lines.append(f"RAPL: {z.label} - {state}")
        lines.extend(f"RAPL: left out {s}" for s in d.skipped)

    meter = EnergyMeter(rapl_root=rapl_root, nvml=nvml, scope=scope)
    meter.start()
    try:
        described = meter.describe()
        methods = meter.methods
    finally:
        meter.stop()
    gpu = [line for line in described if line.startswith("gpu:")]
    if gpu and "not measured" in gpu[0]:
        lines.append("GPU: none - " + gpu[0].split(" - ", 1)[-1])
    elif gpu:
        lines.append("GPU: " + gpu[0].split(" - ", 1)[-1])

    lines.append(f"Components (scope={scope}):")
    for line in described:
        lines.append(f"  {line}")
    fallbacks = []
    if methods.get("cpu") == "model":
        fallbacks.append("cpu falls back to the load x TDP model (no readable RAPL counter)")
    if methods.get("ram") == "model":
        fallbacks.append("ram falls back to the W/GB model (no readable RAPL DRAM counter)")
    if "gpu" not in methods:
        fallbacks.append("no GPU energy is counted")
    if fallbacks:
        lines.append("Fallback: " + "; ".join(fallbacks) + ". Figures from models carry a wide "
                     "range (x0.5 to x1.5) and are labelled method=model.")
    return "\n".join(lines)
