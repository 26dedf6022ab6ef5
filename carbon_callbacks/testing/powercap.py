"""A fake ``/sys/class/powercap`` folder whose RAPL counters a test advances by known joules.

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
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

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
    readable: bool = True


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
        """Add energy to a zone's counter, wrapping at ``max_energy_range_uj`` like the kernel.

        A zone made unreadable or a tree removed keeps counting, unseen.
        """
        z = self.zones[zone] if isinstance(zone, str) else zone
        uj = int(round(joules * 1e6))
        with self._lock:
            z.total_uj += uj
            raw = z.energy_uj + uj
            z.wraps += raw // z.max_range_uj
            z.energy_uj = raw % z.max_range_uj
            if z.readable and z.path.is_dir():
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

    def reset(self, zone: FakeZone | str, energy_uj: int = 0) -> None:
        """Set a zone's counter to ``energy_uj`` without counting energy, as when the RAPL
        driver is reloaded mid-run (the counter starts again from 0)."""
        z = self.zones[zone] if isinstance(zone, str) else zone
        with self._lock:
            z.energy_uj = energy_uj
            self._write(z)

    def make_unreadable(self, zone: FakeZone | str) -> None:
        """Make a zone's ``energy_uj`` fail to read mid-run.

        For a user, the file loses its read permission (EACCES, as on Linux 5.10 and later);
        root reads any file whatever its mode, so there the file is replaced by a folder of
        the same name, which fails to read as a file (EISDIR).
        """
        z = self.zones[zone] if isinstance(zone, str) else zone
        path = z.path / "energy_uj"
        with self._lock:
            z.readable = False
            if os.geteuid() != 0:
                os.chmod(path, 0)
            else:
                path.unlink()
                path.mkdir()

    def remove_tree(self) -> None:
        """Delete the whole powercap folder, as when the ``intel_rapl`` module is unloaded."""
        with self._lock:
            shutil.rmtree(self.root)

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
