"""The RAPL zones under a powercap folder that measure distinct energy, and how to read them.

Zones are found under a root folder (default ``/sys/class/powercap``): ``intel-rapl:N`` (also
used by the kernel for AMD Zen), ``amd-rapl:N`` and ``intel-rapl-mmio:N``. What is counted:
each socket's ``package-N`` domain once (for cpu), each ``dram`` domain (for ram); not ``psys``
(the whole platform, which already holds package and DRAM), not ``core`` or ``uncore`` (inside
the package), not an MMIO zone that mirrors a package counter already taken (same domain name).
Zones with different names that show one counter are told apart when the sensor opens
(``rapl.py``).

Since Linux 5.10 ``energy_uj`` is readable by root only (CVE-2020-8694); ``permission_fix``
says what to run, and the meter falls back to the CPU model meanwhile.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path

from carbon_callbacks.energy.sensors.base import SensorError

MAX_PLAUSIBLE_W = 1000.0
"""The power ceiling of a zone that states none (no ``constraint_*_max_power_uw``): above the
package power of any desktop or server CPU. Reads are timed against wraps at it, and readings
a zone cannot produce at it are refused (``counters.py``)."""

_ZONE = re.compile(r"^(intel-rapl|amd-rapl|intel-rapl-mmio)((?::\d+)+)$")
# MSR zones are preferred to MMIO ones that mirror them.
_PREFERENCE = {"intel-rapl": 0, "amd-rapl": 1, "intel-rapl-mmio": 2}


def _max_power_w(path: Path) -> float:
    """The highest ``constraint_N_max_power_uw`` of a zone (long- and short-term limits), in W;
    0 when it states none."""
    best = 0.0
    for limit in sorted(path.glob("constraint_*_max_power_uw")):
        try:
            best = max(best, int(_read_text(limit)) / 1e6)
        except (OSError, ValueError):
            continue
    return best


def permission_fix(root: str | os.PathLike[str]) -> str:
    """The exact commands that make ``energy_uj`` readable, for the warning."""
    root = os.fspath(root)
    return (
        f"make the counters readable: for this boot, `sudo chmod a+r {root}/*-rapl*:*/energy_uj`; "
        "to keep it across reboots, a udev rule in /etc/udev/rules.d/99-rapl.rules: "
        '`SUBSYSTEM=="powercap", ACTION=="add", RUN+="/bin/chmod a+r /sys%p/energy_uj"`; '
        "or, for one group only, "
        '`RUN+="/bin/chgrp power /sys%p/energy_uj", RUN+="/bin/chmod g+r /sys%p/energy_uj"` '
        "and `sudo usermod -aG power $USER` (energy_uj is root-only since Linux 5.10 because of "
        "the PLATYPUS side channel, CVE-2020-8694; give access only where that is acceptable)"
    )


@dataclass(frozen=True)
class Zone:
    """One RAPL domain the sensor counts."""

    path: Path
    name: str
    control: str
    max_range_uj: int
    max_power_w: float

    @property
    def kind(self) -> str:
        """"package" or "dram"."""
        return "dram" if self.name.startswith("dram") else "package"

    @property
    def wrap_seconds(self) -> float:
        """Shortest time the counter can take to wrap."""
        return self.max_range_uj * 1e-6 / self.max_power_w

    @property
    def label(self) -> str:
        """``name`` plus the folder, for reasons and ``detect``."""
        return f"{self.name} ({self.path.name})"


@dataclass(frozen=True)
class Discovery:
    """What a powercap root holds: zones to count and zones left out with why."""

    root: Path
    packages: tuple[Zone, ...]
    drams: tuple[Zone, ...]
    skipped: tuple[str, ...]
    problem: str = ""


def _read_text(path: Path) -> str:
    with open(path, encoding="ascii") as f:
        return f.read().strip()


def read_energy_uj(path: Path, root: str | os.PathLike[str]) -> int:
    """Read one ``energy_uj``; an unreadable one raises SensorError with the fix.

    Raises:
        SensorError: the file is missing, unreadable or holds no number.
    """
    try:
        return int(_read_text(path / "energy_uj"))
    except OSError as exc:
        if isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM):
            raise SensorError(
                f"cannot read {path / 'energy_uj'}: Permission denied; {permission_fix(root)}",
                cause=f"rapl-permission:{os.fspath(root)}",
            ) from exc
        raise SensorError(f"cannot read {path / 'energy_uj'}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise SensorError(f"{path / 'energy_uj'} holds no number") from exc


def discover(root: str | os.PathLike[str]) -> Discovery:
    """List the RAPL zones under ``root`` that measure distinct energy.

    Args:
        root: the powercap folder.

    Returns:
        The zones to count for cpu (packages) and ram (DRAM), and what was left out and why.
    """
    base = Path(root)
    if not base.is_dir():
        return Discovery(base, (), (), (), f"no powercap folder at {base} (no RAPL: usual in VMs, "
                                           "containers and non-x86 machines)")
    found: list[tuple[int, tuple[int, ...], Zone]] = []
    skipped: list[str] = []
    try:
        entries = sorted(os.listdir(base))
    except OSError as exc:
        return Discovery(base, (), (), (), f"cannot list {base}: {exc.strerror or exc}")
    for entry in entries:
        m = _ZONE.match(entry)
        if not m:
            continue
        path = base / entry
        numbers = tuple(int(n) for n in m.group(2).split(":")[1:])
        try:
            name = _read_text(path / "name")
            max_range = int(_read_text(path / "max_energy_range_uj"))
        except (OSError, ValueError) as exc:
            skipped.append(f"{entry}: unreadable name/max_energy_range_uj ({exc})")
            continue
        max_power = _max_power_w(path)
        if max_power <= 0:
            max_power = MAX_PLAUSIBLE_W
        zone = Zone(path, name, m.group(1), max_range, max_power)
        found.append((_PREFERENCE[m.group(1)], numbers, zone))

    packages: list[Zone] = []
    drams: list[Zone] = []
    seen: dict[str, Zone] = {}
    parents = {(z.control, n[0]): z.name for _, n, z in found if len(n) == 1}
    for _, numbers, zone in sorted(found, key=lambda x: (x[0], x[1])):
        name = zone.name
        if name == "psys":
            skipped.append(f"{zone.label}: psys is the whole platform (holds package and DRAM); "
                           "not counted, to count nothing twice")
            continue
        if name in ("core", "uncore"):
            skipped.append(f"{zone.label}: inside its package domain; not counted again")
            continue
        if not (name.startswith("package") or name.startswith("dram")):
            skipped.append(f"{zone.label}: unknown domain; not counted")
            continue
        # A subzone's name is just "dram": key it by its package so sockets stay apart, and
        # so an MMIO or mirrored zone of the same package and domain maps to the same key.
        if len(numbers) > 1:
            key = f"{parents.get((zone.control, numbers[0]), numbers[0])}/{name}"
        else:
            key = name
        if key in seen:
            skipped.append(f"{zone.label}: mirrors {seen[key].label}; counted once")
            continue
        seen[key] = zone
        (drams if zone.kind == "dram" else packages).append(zone)
    return Discovery(base, tuple(packages), tuple(drams), tuple(skipped))


def cpu_vendor(cpuinfo: str = "/proc/cpuinfo") -> str:
    """"amd", "intel" or "" from ``/proc/cpuinfo``."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    v = line.partition(":")[2].strip()
                    return "amd" if "AMD" in v else ("intel" if "Intel" in v else "")
    except OSError:
        pass
    return ""


def package_of(zone: Zone) -> str:
    """The package a zone belongs to: ``package-N`` from its name, else its socket number."""
    m = re.match(r"package-\d+", zone.name)
    if m:
        return m.group(0)
    n = re.search(r":(\d+)", zone.path.name)
    return f"socket-{n.group(1)}" if n else zone.path.name
