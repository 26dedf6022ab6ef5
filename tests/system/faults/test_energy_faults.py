"""Energy faults injected at their boundary during real tiny Lightning fits (issue 12).

Each fault starts at the beginning of an epoch of a CPU fit, in the fake NVML module or the
powercap tree in a temp folder the meter reads. For each, the test checks: training finished;
the run's energy is plausible (inside its range, near the truth where the truth is known) with
the degraded method in the epoch records and the cause in the component's reason; a warning
names the cause; no meter thread is left after the fit; and the fit took less than
``STALL_FACTOR`` times the clean fit's time plus ``STALL_S`` (a loaded machine's noise; the
design bound is one 50 ms deadline per hanging call, see ``energy/sensors/deadline.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch")

from carbon_callbacks import EnergyMeter  # noqa: E402
from carbon_callbacks.integrations.lightning import CarbonCallback  # noqa: E402
from carbon_callbacks.testing import FakeGPU, FakeNVML, FakePowercap  # noqa: E402

EPOCHS = 8
FAULT_EPOCH = 1
STEP_S = 0.05  # a step takes at least this long: 1.4 s of epochs after the fault, more than a
# counter may stand still (counters.STUCK_S) before it is refused
WATTS = 100.0
STALL_FACTOR = 2.0
STALL_S = 2.0


class InjectAt(pl.Callback):
    """Starts a fault at the beginning of one epoch (before its first boundary read)."""

    def __init__(self, epoch: int, fault: Callable[[], None]) -> None:
        self.epoch = epoch
        self.fault = fault

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.current_epoch == self.epoch:
            self.fault()


def tiny_fit(root: Path, callbacks: list[Any]) -> tuple[Any, float]:
    """A real Lightning fit on CPU: a linear classifier, 4 steps and a validation per epoch."""

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(8, 2)

        def training_step(self, batch: Any, _: int) -> Any:
            time.sleep(STEP_S)
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self.layer(x), y)
            self.log("train_loss", loss, on_step=False, on_epoch=True)
            return loss

        def validation_step(self, batch: Any, _: int) -> None:
            x, y = batch
            self.log("val_loss", torch.nn.functional.cross_entropy(self.layer(x), y))

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    data = torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long())
    trainer = pl.Trainer(max_epochs=EPOCHS, callbacks=callbacks, logger=False,
                         accelerator="cpu", devices=1, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False,
                         num_sanity_val_steps=0, default_root_dir=root)
    t = time.perf_counter()
    trainer.fit(Tiny(), torch.utils.data.DataLoader(data, batch_size=16),
                torch.utils.data.DataLoader(data, batch_size=32))
    return trainer, time.perf_counter() - t


def our_threads(before: set[threading.Thread]) -> list[str]:
    return [t.name for t in threading.enumerate()
            if t not in before and t.name.startswith(("carbon-callbacks", "nvml-calls"))]


def threads_left(before: set[threading.Thread], timeout: float = 5.0) -> list[str]:
    """Our threads still alive, allowing the NVML worker a moment to see it is unused."""
    deadline = time.monotonic() + timeout
    while our_threads(before) and time.monotonic() < deadline:
        time.sleep(0.01)
    return our_threads(before)


@pytest.fixture(scope="module")
def clean_fit_s(tmp_path_factory) -> float:
    """The same fit with healthy fake hardware: the time a faulty fit is compared with.

    Warnings are once per cause in a process, so every fake device here has a name of its own.
    """
    root = tmp_path_factory.mktemp("clean")
    times = []
    for _ in range(2):  # the first fit in a process pays Lightning's one-off set-up
        nv = FakeNVML([FakeGPU(name="Clean GPU", power_w=lambda t: WATTS)])
        meter = EnergyMeter(nvml=nv, scope="machine", rapl_root=root / "no-powercap")
        times.append(tiny_fit(root, [CarbonCallback(intensity=100.0, meter=meter,
                                                    ledger=False)])[1])
    return times[-1]


# ---- NVML ---------------------------------------------------------------------------------


class GpuFault:
    """One fake GPU at a constant 100 W whose counter turns bad when ``start()`` is called."""

    def __init__(self, name: str, reading: Callable[[int, float, int], int] | None = None,
                 hang_s: float = 0.0, offset_mj: int = 123_456_789) -> None:
        self.reading = reading
        self.bad_reads = 0  # reads since the fault started
        self.on = False
        self.gpu = FakeGPU(name=name, power_w=lambda t: WATTS, energy_offset_mj=offset_mj,
                           energy_fault=self._read)
        self.hang_s = hang_s
        self.nvml = FakeNVML([self.gpu])

    def _read(self, true_mj: int, t: float) -> int:
        if not self.on or self.reading is None:
            return true_mj
        self.bad_reads += 1
        return self.reading(true_mj, t, self.bad_reads)

    def start(self) -> None:
        self.on = True
        if self.hang_s:
            self.gpu.hang_s = self.hang_s
            self.gpu.hang_after = 0.0


NVML_FAULTS = {
    # name: (fault, what the reason and the warning say)
    "negative": (lambda: GpuFault("Matrix GPU negative once",
                                  lambda true, t, n: -42 if n == 1 else true),
                 "read -42 (below 0)"),
    "backwards": (lambda: GpuFault("Matrix GPU backwards once",
                                   lambda true, t, n: true - 50_000 if n == 1 else true),
                  "went back by"),
    "1 MJ low": (lambda: GpuFault("Matrix GPU 1 MJ low once",
                                  lambda true, t, n: true - 1_000_000_000 if n == 1 else true,
                                  offset_mj=9_000_000_000),
                 "went back by 1e+06 J"),
    "stuck negative": (lambda: GpuFault("Matrix GPU stuck negative", lambda true, t, n: -1),
                       "refused as impossible"),
    "stuck": (lambda: GpuFault("Matrix GPU stuck", lambda true, t, n: 9_999_999),
              "has not moved"),
    "hanging": (lambda: GpuFault("Matrix GPU hanging", hang_s=30.0), "no answer within 50 ms"),
}


@pytest.mark.parametrize("case", list(NVML_FAULTS))
def test_nvml_fault_at_an_epoch_boundary(case, tmp_path, clean_fit_s, caplog):
    make, cause = NVML_FAULTS[case]
    fault = make()
    before = set(threading.enumerate())
    meter = EnergyMeter(nvml=fault.nvml, scope="machine", rapl_root=tmp_path / "no-powercap")
    carbon = CarbonCallback(intensity=100.0, meter=meter, ledger=False)
    with caplog.at_level(logging.WARNING):
        trainer, took = tiny_fit(tmp_path, [carbon, InjectAt(FAULT_EPOCH, fault.start)])

    assert trainer.state.finished and trainer.current_epoch == EPOCHS
    assert len(carbon.records) == EPOCHS
    assert took < STALL_FACTOR * clean_fit_s + STALL_S, (took, clean_fit_s)
    run = meter.last_window
    assert run is not None
    gpu = run.components["gpu"]
    truth = WATTS * run.seconds  # constant power: the truth over the run
    assert gpu.low <= truth <= gpu.high
    assert gpu.joules == pytest.approx(truth, rel=0.05)
    assert cause in gpu.reason
    # The epochs before the fault are counted off the counter; a later one is not.
    assert all(r.methods["gpu"] == "counter" for r in carbon.records[:FAULT_EPOCH])
    assert any(r.methods["gpu"] != "counter" for r in carbon.records[FAULT_EPOCH:])
    warned = [r.getMessage() for r in caplog.records if fault.gpu.name in r.getMessage()]
    assert any(cause.split(" (")[0] in w or "refused" in w or "in time" in w for w in warned)
    if case == "hanging":
        # The hanging call cannot be interrupted: its worker waits in the driver, alone.
        assert our_threads(before) in ([], ["nvml-calls-carbon-callbacks"])
        assert fault.nvml.hangs == 1
        fault.nvml.release_hangs()
    assert threads_left(before) == []


# ---- powercap -----------------------------------------------------------------------------


def powercap_fit(tmp_path: Path, fault: Callable[[FakePowercap, Any], None], caplog: Any
                 ) -> tuple[Any, float, Any, EnergyMeter, dict[str, float], list[str],
                            set[threading.Thread]]:
    root = tmp_path / "powercap"
    tree = FakePowercap(root)
    pkg = tree.add_zone("intel-rapl:0", "package-0", energy_uj=200_000_000_000,
                        max_power_w=150)
    tree.add_zone("intel-rapl:0:0", "dram", max_range_uj=65_532_610_987)
    before = set(threading.enumerate())
    meter = EnergyMeter(rapl_root=root, nvml=FakeNVML([]), scope="machine", interval=0.1)
    carbon = CarbonCallback(intensity=100.0, meter=meter, ledger=False)
    with tree.drive({pkg: 40.0, "intel-rapl:0:0": 5.0}) as driver, \
            caplog.at_level(logging.WARNING):
        trainer, took = tiny_fit(tmp_path, [carbon, InjectAt(FAULT_EPOCH,
                                                             lambda: fault(tree, pkg))])
    warnings = [r.getMessage() for r in caplog.records]
    return trainer, took, carbon, meter, driver.written, warnings, before


def test_powercap_counter_reset_by_a_driver_reload(tmp_path, clean_fit_s, caplog):
    trainer, took, carbon, meter, written, warnings, before = powercap_fit(
        tmp_path, lambda tree, pkg: tree.reset(pkg, 0), caplog)
    assert trainer.state.finished and len(carbon.records) == EPOCHS
    assert took < STALL_FACTOR * clean_fit_s + STALL_S
    cpu = meter.last_window.components["cpu"]
    # Not +262 kJ: the interval of the reset is estimated at the neighbouring 40 W, the rest
    # counted off the counter from its new base. The truth is what the fake driver wrote
    # between start() and stop(), which the window's 40 W x seconds approximates.
    truth = 40.0 * meter.last_window.seconds
    assert cpu.joules == pytest.approx(truth, rel=0.1)
    assert cpu.low <= truth <= cpu.high
    assert cpu.joules < written["intel-rapl:0"] * 1.1
    assert "a reset, not a wrap" in cpu.reason
    assert any(r.methods["cpu"] == "model" for r in carbon.records[FAULT_EPOCH:])
    assert all(r.methods["cpu"] == "counter" for r in carbon.records[:FAULT_EPOCH])
    assert any("a reset, not a wrap" in w for w in warnings)
    assert threads_left(before) == []


@pytest.mark.parametrize("case", ["deleted", "unreadable"])
def test_powercap_tree_lost_mid_run_falls_back_to_the_model(case, tmp_path, clean_fit_s,
                                                            caplog):
    def fault(tree: FakePowercap, pkg: Any) -> None:
        if case == "deleted":
            tree.remove_tree()
        else:
            tree.make_unreadable(pkg)
            tree.make_unreadable("intel-rapl:0:0")

    trainer, took, carbon, meter, written, warnings, before = powercap_fit(tmp_path, fault,
                                                                           caplog)
    assert trainer.state.finished and len(carbon.records) == EPOCHS
    assert took < STALL_FACTOR * clean_fit_s + STALL_S
    cpu = meter.last_window.components["cpu"]
    counted = sum(r.cpu_energy_kwh for r in carbon.records[:FAULT_EPOCH]) * 3.6e6
    assert counted == pytest.approx(40.0 * sum(r.seconds for r in carbon.records[:FAULT_EPOCH]),
                                    rel=0.2)
    assert cpu.joules >= counted  # what the counter measured before the fault is kept
    assert carbon.records[-1].methods == {"cpu": "model", "ram": "model"}
    assert "counter source failed" in cpu.reason
    why = "No such file" if case == "deleted" else ("Is a directory", "Permission denied")
    assert any(any(w in x for w in ((why,) if isinstance(why, str) else why))
               for x in warnings)
    assert threads_left(before) == []
