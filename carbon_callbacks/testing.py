"""Fakes of the hardware boundaries, for tests and benchmarks (no real RAPL or GPU needed).

``FakePowercap`` builds a ``/sys/class/powercap``-like folder whose counters a test advances by
known joules (wrapping like the kernel does); ``FakeNVML`` is a pynvml-like module object with
GPUs whose energy counter or power reading follow a known trace.

Example::

    tree = FakePowercap(tmp_path)
    pkg = tree.add_zone("intel-rapl:0", "package-0")
    meter = EnergyMeter(rapl_root=tmp_path, nvml=FakeNVML([]), scope="machine")
    meter.start(); a = meter.mark()
    tree.advance(pkg, 12.5)                 # 12.5 J used by socket 0
    assert meter.window(a, meter.mark()).component_joules("cpu") == 12.5
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

DEFAULT_MAX_RANGE_UJ = 262_143_328_850
"""``max_energy_range_uj`` of a typical Intel package domain (2^32 units of 61 uJ)."""


@dataclass(eq=False)  # identity semantics, so zones can key a dict of powers
class FakeZone:
    """One powercap zone of a ``FakePowercap`` tree."""

    path: Path
    name: str
    max_range_uj: int
    energy_uj: int = 0
    wraps: int = 0
    total_uj: int = 0


class FakePowercap:
    """A fake powercap folder: zones with ``name``, ``energy_uj`` and ``max_energy_range_uj``.

    Args:
        root: an empty or missing folder to build the tree in.
    """

    def __init__(self, root: str | os.PathLike[str], *, control_type: bool = True) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.zones: dict[str, FakeZone] = {}
        self._lock = threading.Lock()
        if control_type:
            # Real trees have the control-type folder with a ``subsystem`` link back to the
            # class folder; some tools (CodeCarbon) list zones through it.
            ct = self.root / "intel-rapl"
            ct.mkdir(exist_ok=True)
            (ct / "enabled").write_text("1\n")
            if not (ct / "subsystem").exists():
                os.symlink("..", ct / "subsystem")

    def add_zone(self, zone: str, name: str, *, max_range_uj: int = DEFAULT_MAX_RANGE_UJ,
                 energy_uj: int = 0, max_power_w: float | None = None) -> FakeZone:
        """Create a zone folder such as ``intel-rapl:0`` (or ``intel-rapl:0:2`` for a subzone).

        Args:
            zone: the folder name under root.
            name: the domain name the kernel gives (``package-0``, ``dram``, ``psys``, ``core``).
            max_range_uj: where the counter wraps.
            energy_uj: the counter's starting value.
            max_power_w: written as ``constraint_0_max_power_uw`` when given.

        Returns:
            The zone, to pass to ``advance``.
        """
        path = self.root / zone
        path.mkdir(parents=True, exist_ok=True)
        (path / "name").write_text(name + "\n")
        (path / "max_energy_range_uj").write_text(f"{max_range_uj}\n")
        if max_power_w is not None:
            (path / "constraint_0_max_power_uw").write_text(f"{int(max_power_w * 1e6)}\n")
        z = FakeZone(path, name, max_range_uj, energy_uj)
        self._write(z)
        self.zones[zone] = z
        return z

    @staticmethod
    def _write(z: FakeZone) -> None:
        # Write then rename so a reader never sees a half-written number.
        tmp = z.path / ".energy_uj.tmp"
        tmp.write_text(f"{z.energy_uj}\n")
        os.replace(tmp, z.path / "energy_uj")

    def advance(self, zone: FakeZone | str, joules: float) -> None:
        """Add energy to a zone's counter, wrapping at ``max_energy_range_uj`` like the kernel."""
        z = self.zones[zone] if isinstance(zone, str) else zone
        uj = int(round(joules * 1e6))
        with self._lock:
            z.total_uj += uj
            raw = z.energy_uj + uj
            z.wraps += raw // z.max_range_uj
            z.energy_uj = raw % z.max_range_uj
            self._write(z)

    def drive(self, powers: dict[FakeZone | str, float], step: float = 0.01) -> PowerDriver:
        """Advance zones at constant power from a background thread until ``stop()``.

        Args:
            powers: watts per zone.
            step: seconds between counter updates.

        Returns:
            The running driver; ``stop()`` returns the joules written per zone name.

        Example::

            with tree.drive({pkg: 65.0}) as driver:
                ...                     # code under measurement
            truth = driver.written["intel-rapl:0"]
        """
        return PowerDriver(self, powers, step).start()

    def remove_counter(self, zone: FakeZone | str) -> None:
        """Make a zone's ``energy_uj`` vanish, as when a driver is unloaded mid-run."""
        z = self.zones[zone] if isinstance(zone, str) else zone
        (z.path / "energy_uj").unlink()

    def mirror(self, zone: str, of: FakeZone | str) -> FakeZone:
        """Create a zone that reads the same counter as another (mirrored AMD die domains)."""
        src = self.zones[of] if isinstance(of, str) else of
        path = self.root / zone
        path.mkdir(parents=True, exist_ok=True)
        (path / "name").write_text(src.name + "\n")
        (path / "max_energy_range_uj").write_text(f"{src.max_range_uj}\n")
        os.symlink(src.path / "energy_uj", path / "energy_uj")
        z = FakeZone(path, src.name, src.max_range_uj, src.energy_uj)
        return z


class PowerDriver:
    """A thread that advances ``FakePowercap`` zones at constant power (see ``drive``)."""

    def __init__(self, tree: FakePowercap, powers: dict[FakeZone | str, float],
                 step: float) -> None:
        self.tree = tree
        self.powers = {(tree.zones[z] if isinstance(z, str) else z): w for z, w in powers.items()}
        self.step = step
        self.written: dict[str, float] = {z.path.name: 0.0 for z in self.powers}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-powercap-driver",
                                        daemon=True)

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.step):
            now = time.monotonic()
            self._advance(now - last)
            last = now
        self._advance(time.monotonic() - last)

    def _advance(self, dt: float) -> None:
        for z, w in self.powers.items():
            self.tree.advance(z, w * dt)
            self.written[z.path.name] += int(round(w * dt * 1e6)) / 1e6

    def start(self) -> PowerDriver:
        """Start writing."""
        self._thread.start()
        return self

    def stop(self) -> dict[str, float]:
        """Stop writing; returns the joules written per zone folder name."""
        self._stop.set()
        self._thread.join()
        return dict(self.written)

    def __enter__(self) -> PowerDriver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---- NVML ---------------------------------------------------------------------------------

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_LIBRARY_NOT_FOUND = 12


class FakeNVMLError(Exception):
    """Stands for ``pynvml.NVMLError``: carries the NVML return code in ``value``."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return {3: "Not Supported", 1: "Uninitialized", 15: "GPU is lost",
                12: "NVML Shared Library Not Found"}.get(self.value, f"NVML error {self.value}")


@dataclass
class FakeGPU:
    """One fake GPU. Power is a function of time since the fake's clock zero (watts).

    Attributes:
        energy_counter: whether ``nvmlDeviceGetTotalEnergyConsumption`` is supported.
        power_supported: whether ``nvmlDeviceGetPowerUsage`` is supported.
        mig_instances: MIG device UUIDs on this GPU (MIG mode on when non-empty).
        fail_after: raise NVML_ERROR_GPU_IS_LOST once the clock passes this many seconds.
    """

    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    power_w: Callable[[float], float] = lambda t: 100.0
    energy_counter: bool = True
    power_supported: bool = True
    mig_instances: Sequence[str] = ()
    fail_after: float | None = None
    energy_offset_mj: int = 123_456_789
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

    # library lifetime
    def nvmlInit(self) -> None:  # noqa: N802 - pynvml's names
        self.init_calls += 1
        if self.init_error is not None:
            raise FakeNVMLError(self.init_error)
        self.initialised += 1

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
            raise FakeNVMLError(NVML_ERROR_NOT_SUPPORTED)
        return g.energy_offset_mj + int(self._energy_j(handle.index, self.clock()) * 1000)

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:  # noqa: N802
        g = self._check(handle, "power")
        if not g.power_supported:
            raise FakeNVMLError(NVML_ERROR_NOT_SUPPORTED)
        return int(round(g.power_w(self.clock()) * 1000))

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any) -> int:  # noqa: N802
        self._check(handle, "limit")
        return 700_000

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:  # noqa: N802
        self._check(handle, "util")
        return SimpleNamespace(gpu=50, memory=20)

    def energy_j(self, index: int, t0: float, t1: float) -> float:
        """The true energy of GPU ``index`` between two clock values, for assertions."""
        return self._energy_j(index, t1) - self._energy_j(index, t0)
