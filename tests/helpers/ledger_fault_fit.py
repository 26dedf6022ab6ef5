"""A real tiny Lightning fit writing to a ledger, with a fault injected at one epoch's end.

For the ledger fault matrix (``tests/system/faults/test_ledger_faults.py``). ``fit()`` runs in
the test's process and reports what a user would notice: how many epochs trained, the longest
time the carbon callback held each hook, and the threads and sockets it left behind.

As a script, for a fault that needs a process of its own (a file-size limit)::

    python ledger_fault_fit.py LEDGER EPOCHS FSIZE_LIMIT_BYTES

runs the fit under ``RLIMIT_FSIZE`` and prints the report as JSON.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import psutil
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from carbon_callbacks.integrations.lightning import CarbonCallback

HOOKS = ("on_fit_start", "on_train_epoch_end", "on_fit_end")


@dataclasses.dataclass
class FitReport:
    """What a fit left: epochs trained, the callback's longest stall per hook, leftovers."""

    epochs_trained: int
    run_id: str
    stalls: dict[str, float]
    new_threads: list[str]
    open_sockets: list[tuple[int, int]]
    """(local port, remote port) of each TCP connection opened during the fit and still open."""


class _Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(8, 2)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, on_epoch=True, on_step=False)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _Clock(pl.Callback):
    """Placed just before (``start``) and just after the carbon callback, to time its hooks."""

    def __init__(self, starts: dict[str, float], stalls: dict[str, float] | None) -> None:
        self.starts = starts
        self.stalls = stalls

    def _tick(self, hook: str) -> None:
        now = time.perf_counter()
        if self.stalls is None:
            self.starts[hook] = now
        else:
            self.stalls[hook] = max(self.stalls.get(hook, 0.0), now - self.starts[hook])

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self._tick("on_fit_start")

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._tick("on_train_epoch_end")

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self._tick("on_fit_end")


class _Inject(pl.Callback):
    """Calls ``fault(epoch)`` after the carbon callback has written that epoch."""

    def __init__(self, fault: Callable[[int], None] | None) -> None:
        self.fault = fault

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self.fault is not None:
            self.fault(trainer.current_epoch)


def _sockets() -> set[tuple[int, int]]:
    return {
        (c.laddr.port, c.raddr.port)
        for c in psutil.Process().net_connections(kind="inet")
        if c.raddr and c.status != psutil.CONN_LISTEN
    }


def fit(
    ledger: Any,
    epochs: int,
    fault: Callable[[int], None] | None = None,
    *,
    project: str = "faults",
) -> FitReport:
    """Train a tiny MLP for ``epochs`` epochs with ``CarbonCallback(ledger=ledger)``.

    Args:
        ledger: what the callback's ``ledger=`` gets (a path or URL: the callback opens and
            closes the ledger itself).
        epochs: ``max_epochs``.
        fault: called with the epoch number at the end of every epoch, after the callback.
        project: the run's project.
    """
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(64, 8), torch.randint(0, 2, (64,)))
    starts: dict[str, float] = {}
    stalls: dict[str, float] = {}
    carbon = CarbonCallback(intensity=300.0, ledger=ledger, metadata={"project": project})
    threads = set(threading.enumerate())
    sockets = _sockets()
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[_Clock(starts, None), carbon, _Clock(starts, stalls), _Inject(fault)],
    )
    trainer.fit(_Tiny(), DataLoader(data, batch_size=16))
    # A thread that is ending may need a moment to be gone; one that stays is a leak.
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and set(threading.enumerate()) - threads:
        time.sleep(0.05)
    return FitReport(
        epochs_trained=trainer.current_epoch,
        run_id=carbon.tracker.run_id,
        stalls=stalls,
        new_threads=sorted(t.name for t in set(threading.enumerate()) - threads),
        open_sockets=sorted(_sockets() - sockets),
    )


def main() -> None:
    import resource

    ledger, epochs, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG, as on a full disk.
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    report = fit(ledger, epochs, project="full")
    print(json.dumps(dataclasses.asdict(report)), flush=True)


if __name__ == "__main__":
    main()
