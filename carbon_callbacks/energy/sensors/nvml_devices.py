"""Which GPUs NVML measures for this process, and what each can draw at most.

Which GPUs: explicit ``gpu_ids`` (CUDA ordinals as this process sees them), else under
``scope="process"`` the device of ``LOCAL_RANK`` when set (one DDP rank, one GPU), else every
device in ``CUDA_VISIBLE_DEVICES``; ``scope="machine"`` takes every GPU. Integer entries of
``CUDA_VISIBLE_DEVICES`` are taken as NVML indices, which match CUDA's only with
``CUDA_DEVICE_ORDER=PCI_BUS_ID``; UUIDs (``GPU-...``, ``MIG-...``) are exact. A MIG instance is
charged the parent GPU's energy divided among its instances, since NVML measures whole GPUs.
"""

from __future__ import annotations

import csv
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

MAX_GPU_W = 1200.0
"""Ceiling for a GPU whose power limits NVML does not report and that the table lacks: above
the board power of any GPU in the bundled table (the largest data-centre boards are 1000-1200 W)."""


@functools.lru_cache(maxsize=1)
def gpu_tdp_table() -> dict[str, float]:
    """The bundled GPU table: name -> TDP in watts."""
    path = resources.files("carbon_callbacks.energy.sensors").joinpath("data/gpu_tdp.csv")
    rows = csv.DictReader(path.read_text(encoding="utf-8").splitlines())
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


def text(value: Any) -> str:
    """An NVML string (bytes in older pynvml) or error, as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


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


@dataclass
class Device:
    """One selected GPU: its handle, a label for reasons, and the share of it charged."""

    handle: Any
    label: str
    fraction: float = 1.0
    notes: list[str] = field(default_factory=list)


def _resolve(nv: Any, entry: str) -> tuple[Any, bool]:
    if entry.isdigit():
        return nv.nvmlDeviceGetHandleByIndex(int(entry)), False
    h = nv.nvmlDeviceGetHandleByUUID(entry)
    is_mig = entry.startswith("MIG-")
    if is_mig:
        h = nv.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(h)
    return h, is_mig


def _mig_count(nv: Any, handle: Any) -> int:
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


def select_devices(nv: Any, *, scope: str, gpu_ids: tuple[int, ...] | None,
                   environ: Callable[[str], str | None]) -> tuple[list[Device], str]:
    """The GPUs to measure (see the module doc) and a line saying how they were chosen.

    Raises:
        Exception: NVML could not count the devices (the sensor treats the GPU as absent).
    """
    count = int(nv.nvmlDeviceGetCount())
    visible = parse_visible(environ("CUDA_VISIBLE_DEVICES"))
    if scope == "machine" and gpu_ids is None:
        entries = [str(i) for i in range(count)]
        selection = f"scope=machine: all {count} GPU(s)"
    else:
        pool = visible if visible is not None else [str(i) for i in range(count)]
        src = "CUDA_VISIBLE_DEVICES" if visible is not None else "all GPUs"
        if gpu_ids is not None:
            entries = [pool[i] for i in gpu_ids if i < len(pool)]
            missing = [i for i in gpu_ids if i >= len(pool)]
            selection = f"gpu_ids={list(gpu_ids)} of {src} {pool}"
            if missing:
                selection += f" (ids {missing} not visible, ignored)"
        elif (environ("LOCAL_RANK") or "").isdigit() and len(pool) > 1:
            rank = int(environ("LOCAL_RANK") or 0)
            entries = [pool[rank % len(pool)]]
            selection = f"LOCAL_RANK={rank}: device {entries[0]} of {src} {pool}"
        else:
            entries = list(pool)
            selection = f"{src}: {pool}"
    devices: dict[str, Device] = {}
    migs: dict[str, int] = {}
    for entry in entries:
        try:
            handle, is_mig = _resolve(nv, entry)
            uuid = text(nv.nvmlDeviceGetUUID(handle))
            name = text(nv.nvmlDeviceGetName(handle))
        except Exception as exc:
            selection += f"; {entry} not found ({text(exc)})"
            continue
        if uuid not in devices:
            devices[uuid] = Device(handle, f"{name} [{entry}]")
        if is_mig:
            migs[uuid] = migs.get(uuid, 0) + 1
    for uuid, k in migs.items():
        d = devices[uuid]
        if scope == "process":
            n = _mig_count(nv, d.handle)
            d.fraction = min(1.0, k / n)
            d.notes.append(f"MIG: {k} of {n} instances, charged {d.fraction:.2f} of the GPU")
    return list(devices.values()), selection


_LIMITS = (
    "nvmlDeviceGetPowerManagementLimitConstraints",  # (min, max) settable: the board's most
    "nvmlDeviceGetEnforcedPowerLimit",
    "nvmlDeviceGetPowerManagementLimit",
)


def power_ceiling_w(nv: Any, handle: Any, label: str) -> tuple[float, str]:
    """The most power a GPU can draw, and where that figure comes from.

    The highest power limit the board accepts, else its enforced or set limit, else the
    bundled table's TDP, else ``MAX_GPU_W``.
    """
    for name in _LIMITS:
        fn = getattr(nv, name, None)
        if fn is None:
            continue
        try:
            value = fn(handle)
            mw = max(value) if isinstance(value, (list, tuple)) else value
            watts = float(mw) / 1000.0
        except Exception:  # not supported on this board, or not by this pynvml
            continue
        if watts > 0:
            return watts, f"{name.removeprefix('nvmlDeviceGet')} {watts:g} W"
    match = lookup_gpu_tdp(label)
    if match is not None:
        return match[1], f"table TDP {match[1]:g} W"
    return MAX_GPU_W, f"no power limit known: {MAX_GPU_W:g} W assumed"
