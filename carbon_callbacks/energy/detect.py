"""Which sensor measures each component on this machine, and why (``carbon-callbacks detect``)."""

from __future__ import annotations

import os
from typing import Any, Literal

from carbon_callbacks.energy.meter import EnergyMeter
from carbon_callbacks.energy.sensors.base import SensorError
from carbon_callbacks.energy.sensors.cpu_model import lookup_tdp, read_cpu_info
from carbon_callbacks.energy.sensors.rapl_zones import discover, read_energy_uj


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
        chains = meter.status()
        described = meter.describe()
        methods = meter.methods
    finally:
        meter.stop()
    for chain in chains:
        if chain.component != "gpu":
            continue
        if chain.absent:
            lines.append(f"GPU: none - {chain.absent}")
        else:
            passed_over = f" [passed over: {'; '.join(chain.skipped)}]" if chain.skipped else ""
            detail = f"{chain.reason}{passed_over}" if chain.reason else chain.line
            lines.append(f"GPU: {detail}")
        break

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
