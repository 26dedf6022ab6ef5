"""One small Lightning fit in a fresh process, with or without a tracker (run by bench_overhead.py).

Usage: ``python fit_worker.py CONFIG OUT`` with CONFIG ``none``, ``ours`` (our
``CarbonCallback(intensity="FR")`` with its defaults, ledger included), ``cc1``
(CodeCarbon ``OfflineEmissionsTracker(measure_power_secs=1)`` started before ``fit()`` and
stopped after) or ``ccdefault`` (the same with CodeCarbon's default interval). Every config
imports the same modules before the clock starts; the timed span runs from constructing the
tracker or callback to its stop, so each tool's whole cost to a job is inside it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
import warnings

EPOCHS = 10
SAMPLES = 25600
BATCH = 64


def timed(callback: object, into: dict[str, list[float]]) -> None:
    """Time every Lightning hook our callback defines, in the training thread (per call)."""
    for name in dir(type(callback)):
        if not name.startswith(("on_", "setup", "teardown", "state_dict", "load_state_dict")):
            continue
        owner = next((k for k in type(callback).__mro__ if name in vars(k)), None)
        if owner is None or not owner.__module__.startswith("carbon_callbacks"):
            continue
        method = getattr(callback, name)

        def wrapper(*args, _method=method, _name=name, **kwargs):
            t = time.perf_counter()
            try:
                return _method(*args, **kwargs)
            finally:
                into.setdefault(_name, []).append(time.perf_counter() - t)

        setattr(callback, name, wrapper)


def main() -> int:
    config, out = sys.argv[1], sys.argv[2]
    tmp = tempfile.mkdtemp(prefix="ccb_fit_")
    os.environ["CARBON_CALLBACKS_LEDGER"] = os.path.join(tmp, "ledger.sqlite")
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.ERROR)
    for name in ("lightning", "lightning.pytorch", "codecarbon", "carbon_callbacks"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import lightning as L
    import torch
    from codecarbon import OfflineEmissionsTracker
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from carbon_callbacks.integrations.lightning import CarbonCallback

    torch.manual_seed(0)
    torch.set_num_threads(1)
    x = torch.randn(SAMPLES, 32)
    y = x[:, :1] * 0.5 + 0.1 * torch.randn(SAMPLES, 1)
    train = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True)
    val = DataLoader(TensorDataset(x[:512], y[:512]), batch_size=256)

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 1))

        def training_step(self, batch, _):
            loss = nn.functional.mse_loss(self.net(batch[0]), batch[1])
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, _):
            self.log("val_loss", nn.functional.mse_loss(self.net(batch[0]), batch[1]))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    model = Tiny()
    hook_s: dict[str, list[float]] = {}
    t0 = time.perf_counter()
    callbacks, tracker = [], None
    if config == "ours":
        callback = CarbonCallback(intensity="FR")
        hook_s["__init__"] = [time.perf_counter() - t0]
        timed(callback, hook_s)
        callbacks.append(callback)
    elif config in ("cc1", "ccdefault"):
        kwargs = {"measure_power_secs": 1} if config == "cc1" else {}
        tracker = OfflineEmissionsTracker(country_iso_code="FRA", output_dir=tmp,
                                          log_level="error", allow_multiple_runs=True,
                                          **kwargs)
        tracker.start()
    trainer = L.Trainer(max_epochs=EPOCHS, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=callbacks)
    t_fit = time.perf_counter()
    trainer.fit(model, train, val)
    fit_s = time.perf_counter() - t_fit
    if tracker is not None:
        tracker.stop()
    total_s = time.perf_counter() - t0
    logged = sorted(k for k in trainer.callback_metrics if "energy" in k or "co2" in k)
    with open(out, "w") as f:
        json.dump({"config": config, "total_s": total_s, "fit_s": fit_s, "logged": logged,
                   "epochs": trainer.current_epoch, "hook_s": hook_s}, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
