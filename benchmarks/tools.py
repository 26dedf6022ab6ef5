"""Every tool the benchmarks compare, behind one small interface (imported by the workers).

The workers run in the tool's own environment (ours in ours, each peer in its venv from
``peers.py``), so this module imports nothing but the standard library at the top; each tool
is imported by its adapter's ``load()``.

A tool is driven the way its documentation shows a user driving it:

- ``make()`` builds its tracker (nothing for perun, which has none);
- ``begin()`` starts measuring (ours: ``start()`` and a ``mark()``; CodeCarbon and eco2AI:
  ``start()``; carbontracker: ``epoch_start()``; Zeus: ``begin_window()``; perun: calls a
  function decorated with ``@perun.perun`` whose body runs until ``end()``);
- ``end()`` stops and returns the joules the tool reports for the span, per component
  (``Joules``), taken from the tool's own results;
- ``close()`` releases what ``make()`` took.

Where a tool applies a PUE of its own (carbontracker: 1.58), it is divided out, since the
traces are the hardware's energy; every other tool here defaults to a PUE of 1.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

KWH = 3_600_000.0


@dataclass
class Joules:
    """What a tool reported for one span, in joules (None: the tool gave no such figure)."""

    cpu: float | None = None
    """CPU package energy (counter or model, as the tool measures it)."""
    dram: float | None = None
    """DRAM energy read from RAPL DRAM zones, where the tool reports it apart."""
    gpu: float | None = None
    ram: float | None = None
    """RAM energy from a model (W/GB), where the tool models memory instead of reading it."""
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


class Tool:
    """One tool. Subclasses fill in the steps; ``window`` and ``fit_callbacks`` are shared."""

    key = ""
    label = ""
    dist = ""
    cpu_has_dram = False
    """True when the tool counts RAPL DRAM zones inside its CPU figure."""
    one_shot = False
    """True when a tracker measures one span (a new one is built for the next)."""

    def __init__(self, **options: Any) -> None:
        self.options = options

    def load(self) -> None:
        """Import the tool."""

    def make(self) -> None:
        """Build the tracker."""

    def begin(self) -> None:
        raise NotImplementedError

    def end(self) -> Joules:
        raise NotImplementedError

    def close(self) -> None:
        """Release the tracker."""

    def describe(self) -> str:
        """What the tool used to measure, in words (after a span)."""
        return ""

    def fit_callbacks(self) -> list:
        """Lightning callbacks the tool needs during a fit (carbontracker: its epoch hooks)."""
        return []

    def window(self, body: Callable[[], None]) -> dict:
        """Measure ``body``: the window runs from ``begin()`` returning to ``end()`` called."""
        self.begin()
        a = time.monotonic()
        body()
        b = time.monotonic()
        j = self.end()
        return {"a": a, "b": b, **j.as_dict()}


# ---- ours ----------------------------------------------------------------------------------


class Ours(Tool):
    key, label, dist = "ours", "ours", "carbon-callbacks"

    def load(self) -> None:
        from carbon_callbacks import EnergyMeter

        self._cls = EnergyMeter

    def make(self) -> None:
        self.meter = self._cls(**self.options)

    def begin(self) -> None:
        self.meter.start()
        self.first = self.meter.mark()

    def end(self) -> Joules:
        w = self.meter.window(self.first, self.meter.mark())
        self.meter.stop()
        self.methods = dict(w.methods)
        return Joules(
            cpu=w.component_joules("cpu") if "cpu" in w.components else None,
            dram=w.component_joules("ram") if w.methods.get("ram") == "counter" else None,
            ram=w.component_joules("ram") if w.methods.get("ram") == "model" else None,
            gpu=w.component_joules("gpu") if "gpu" in w.components else None)

    def describe(self) -> str:
        return f"methods {getattr(self, 'methods', {})}"


# ---- CodeCarbon ----------------------------------------------------------------------------


class CodeCarbon(Tool):
    key, label, dist = "codecarbon", "CodeCarbon", "codecarbon"
    one_shot = True

    def load(self) -> None:
        from codecarbon import OfflineEmissionsTracker

        self._cls = OfflineEmissionsTracker

    def make(self) -> None:
        self.tracker = self._cls(country_iso_code="FRA", save_to_file=False, log_level="error",
                                 allow_multiple_runs=True, **self.options)

    def begin(self) -> None:
        self.tracker.start()

    def end(self) -> Joules:
        self.tracker.stop()
        d = self.tracker.final_emissions_data
        return Joules(cpu=d.cpu_energy * KWH, gpu=d.gpu_energy * KWH, ram=d.ram_energy * KWH)

    def describe(self) -> str:
        parts = []
        for h in getattr(self.tracker, "_hardware", []):
            name = type(h).__name__
            if name == "GPU":
                devices = getattr(getattr(h, "devices", None), "devices", [])
                how = ["power readings" if getattr(d, "_use_power_fallback", False)
                       else "energy counter" for d in devices]
                parts.append(f"GPU via {', '.join(how) or 'nothing'}")
            elif hasattr(h, "_tdp"):
                parts.append(f"{name} ({getattr(h, '_mode', '')}, TDP {h._tdp} W)")
            else:
                parts.append(name)
        return "; ".join(parts)


# ---- carbontracker -------------------------------------------------------------------------


class Carbontracker(Tool):
    """carbontracker measures epochs: a span is one ``epoch_start()`` ... ``epoch_end()``.

    Its tracker is built for ``spans`` epochs plus one never run, so that it does not delete
    itself (and its figures) at the last measured epoch; ``close()`` calls ``stop()``. With
    ``exact=True`` it is built for ``spans`` epochs, as a user sets it for a fit.
    """

    key, label, dist = "carbontracker", "carbontracker", "carbontracker"
    cpu_has_dram = True

    def load(self) -> None:
        from carbontracker import constants
        from carbontracker.tracker import CarbonTracker

        self._cls, self.pue = CarbonTracker, constants.PUE_2023
        logging.getLogger("carbontracker").setLevel(logging.ERROR)

    def make(self) -> None:
        spans = int(self.options.get("spans", 1))
        epochs = spans if self.options.get("exact") else spans + 1
        self.tracker = self._cls(epochs=epochs, monitor_epochs=epochs, verbose=0,
                                 log_dir=None, ignore_errors=True,
                                 update_interval=self.options.get("update_interval", 1))
        self.outputs: list[tuple[str, float, float]] = []
        original = self.tracker._output_energy

        def capture(description, seconds, energy, co2eq, conversions):
            # What carbontracker prints: kept as numbers (kWh, PUE included).
            self.outputs.append((description, seconds, energy))
            return original(description, seconds, energy, co2eq, conversions)

        self.tracker._output_energy = capture

    def begin(self) -> None:
        self.tracker.epoch_start()

    def end(self) -> Joules:
        self.tracker.epoch_end()
        return self.last_epoch()

    def last_epoch(self) -> Joules:
        """The last epoch's energy per component, as carbontracker computes it (kWh, no PUE)."""
        if self.tracker.deleted:
            return Joules(notes=["carbontracker stopped itself (an error, ignore_errors=True)"])
        thread = self.tracker.tracker
        out = Joules()
        for comp in thread.components:
            kwh = comp.energy_usage(thread.epoch_times)
            j = float(kwh[-1]) * KWH if len(kwh) else 0.0
            if comp.name == "cpu":
                out.cpu = j
            elif comp.name == "gpu":
                out.gpu = j
        return out

    def close(self) -> None:
        if not self.tracker.deleted:
            self.tracker.stop()

    def describe(self) -> str:
        if self.tracker.deleted:
            return "stopped itself after its last epoch (its components are gone)"
        return "; ".join(f"{c.name}: {type(c._handler).__name__} {c.devices()}"
                         for c in self.tracker.tracker.components)

    def fit_callbacks(self) -> list:
        import lightning as L

        tool = self

        class EpochHooks(L.Callback):
            def on_train_epoch_start(self, trainer, pl_module) -> None:
                tool.tracker.epoch_start()

            def on_train_epoch_end(self, trainer, pl_module) -> None:
                tool.tracker.epoch_end()

        return [EpochHooks()]


# ---- Zeus ----------------------------------------------------------------------------------


class Zeus(Tool):
    key, label, dist = "zeus", "Zeus", "zeus"

    def load(self) -> None:
        from zeus.monitor import ZeusMonitor

        self._cls = ZeusMonitor
        warnings.filterwarnings("ignore", module="zeus")

    def make(self) -> None:
        # No torch.cuda here: Zeus would otherwise synchronise a CUDA device at each window.
        self.monitor = self._cls(**self.options)
        self._n = 0

    def begin(self) -> None:
        self._n += 1
        self.monitor.begin_window(f"w{self._n}", sync_execution=False)

    def end(self) -> Joules:
        m = self.monitor.end_window(f"w{self._n}", sync_execution=False)
        return Joules(cpu=sum(m.cpu_energy.values()) if m.cpu_energy else None,
                      dram=sum(m.dram_energy.values()) if m.dram_energy else None,
                      gpu=sum(m.gpu_energy.values()) if m.gpu_energy else None)

    def close(self) -> None:
        pm = getattr(self.monitor, "power_monitor", None)
        if pm is not None and hasattr(pm, "stop"):
            pm.stop()

    def describe(self) -> str:
        m = self.monitor
        gpu = ("power polled in a helper process" if getattr(m, "power_monitor", None)
               else "energy counter") if m.gpu_indices else "none"
        return f"CPU packages {m.cpu_indices} (RAPL), GPUs {m.gpu_indices} ({gpu})"


# ---- perun ---------------------------------------------------------------------------------


class Perun(Tool):
    """perun measures a call of a function decorated with ``@perun.perun``.

    ``begin()`` starts that call in a thread whose body waits for ``end()``; perun samples
    in its own subprocess, so the thread the body runs in does not change what it sees.
    """

    key, label, dist = "perun", "perun", "perun"

    def load(self) -> None:
        import perun

        self._perun = perun
        logging.getLogger("perun").setLevel(logging.ERROR)
        # perun keeps the first callback registered under a name for the process's life, so
        # the list it appends to is made once.
        self._nodes: list = []

    def make(self) -> None:
        self._out = tempfile.mkdtemp(prefix="ccb_perun_")
        self._nodes.clear()

    def begin(self) -> None:
        self._started, self._release = threading.Event(), threading.Event()
        perun, nodes = self._perun, self._nodes

        @perun.perun(data_out=self._out, format="json",
                     sampling_period=self.options.get("sampling_period", 1))
        def span() -> None:
            perun.register_callback(nodes.append)
            self._started.set()
            self._release.wait()

        self._thread = threading.Thread(target=span, name="perun-span", daemon=True)
        self._thread.start()
        if not self._started.wait(120):
            raise RuntimeError("perun did not start the monitored function within 120 s")

    def end(self) -> Joules:
        self._release.set()
        self._thread.join(300)
        if not self._nodes:
            return Joules(notes=["perun returned no data"])
        j = perun_joules(self._nodes[-1])
        found = [k for k in ("cpu", "dram", "gpu") if getattr(j, k) is not None]
        self._described = (f"energy of {', '.join(found) or 'nothing'} from samples every "
                           f"{self.options.get('sampling_period', 1)} s in its own process")
        return j

    def describe(self) -> str:
        return getattr(self, "_described", "")


def perun_joules(node: Any) -> Joules:
    """CPU, DRAM and GPU joules from a perun result tree (device groups ``cpu``/``ram``/``gpu``)."""
    out = Joules()
    want = {"cpu": "cpu", "ram": "dram", "gpu": "gpu"}

    def energy(n: Any) -> float | None:
        for key, metric in n.metrics.items():
            if str(getattr(key, "value", key)).lower() == "energy":
                return float(metric.value)
        return None

    def walk(n: Any) -> None:
        for child_id, child in n.nodes.items():
            kind = want.get(str(child_id).lower())
            if kind and str(getattr(child.type, "name", child.type)) == "DEVICE_GROUP":
                j = energy(child)
                if j is not None:
                    setattr(out, kind, (getattr(out, kind) or 0.0) + j)
            else:
                walk(child)

    walk(node)
    return out


# ---- eco2AI --------------------------------------------------------------------------------


class Eco2AI(Tool):
    """eco2AI's ``Tracker``: ``start()``/``stop()``; the per-component split is summed from
    its own ``calculate_consumption()`` results (kWh), which make its reported total."""

    key, label, dist = "eco2ai", "eco2AI", "eco2ai"
    one_shot = True

    def load(self) -> None:
        import eco2ai

        self._cls = eco2ai.Tracker
        warnings.filterwarnings("ignore")

    def make(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="ccb_eco2ai_")
        self.tracker = self._cls(project_name="bench", experiment_description="bench",
                                 file_name=os.path.join(self._dir, "emission.csv"),
                                 alpha_2_code="FR", ignore_warnings=True, **self.options)

    def begin(self) -> None:
        self.tracker.start()
        self._kwh = {"cpu": 0.0, "gpu": 0.0, "ram": 0.0}
        for part in ("cpu", "gpu", "ram"):
            device = getattr(self.tracker, f"_{part}")
            original = device.calculate_consumption

            def counted(_original=original, _part=part):
                kwh = _original()
                self._kwh[_part] += kwh
                return kwh

            device.calculate_consumption = counted

    def end(self) -> Joules:
        self.tracker.stop()
        gpu_on = self.tracker._gpu.is_gpu_available
        return Joules(cpu=self._kwh["cpu"] * KWH, ram=self._kwh["ram"] * KWH,
                      gpu=self._kwh["gpu"] * KWH if gpu_on else None)

    def describe(self) -> str:
        t = self.tracker
        cpu = t._cpu
        return (f"CPU {getattr(cpu, '_name', '?')} TDP {getattr(cpu, '_tdp', '?')} W x load; "
                f"GPU {'power readings' if t._gpu.is_gpu_available else 'none'}")


TOOLS: dict[str, type[Tool]] = {t.key: t for t in (Ours, CodeCarbon, Carbontracker, Zeus, Perun,
                                                   Eco2AI)}


def get(key: str, **options: Any) -> Tool:
    """The adapter for ``key`` with its options."""
    return TOOLS[key](**options)
