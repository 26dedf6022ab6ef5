"""One Lightning fit watched by our CarbonCallback and by carbontracker at once, on a fake tree.

Usage: ``python forecast_worker.py SPEC_FILE`` (run by bench_forecast.py inside a mount
namespace whose /sys/class/powercap is a fake tree, under our interpreter with carbontracker's
venv appended to the path). The spec: ``shape`` ("steady", "warm-up" or "growing"),
``epochs``, ``samples`` (per epoch, before growth), ``t0`` (the traces' origin), ``ct_site``
(carbontracker's site folder), ``out``.

Records, as numbers: carbontracker's epoch-1 prediction and its final actual figure (captured
from what it prints, kWh, its PUE divided out), our per-epoch records (from which
``Forecast.predict`` gives our prediction after any epoch), and the instants that bound the
epochs (carbontracker's) and the run (ours: from its first record's start to its last's end), so
the scorer can integrate the true energy of what each tool predicts.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
import warnings


def main() -> int:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    sys.path.append(spec["ct_site"])  # after ours: carbontracker's own deps only fill gaps
    os.environ["CARBON_CALLBACKS_LEDGER"] = os.path.join(tempfile.mkdtemp(), "ledger.sqlite")
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.ERROR)
    import lightning as L
    import torch
    from carbontracker import constants
    from carbontracker.tracker import CarbonTracker
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from carbon_callbacks import EnergyMeter
    from carbon_callbacks.energy.sensors.rapl import RaplSensor
    from carbon_callbacks.integrations.lightning import CarbonCallback
    from carbon_callbacks.policies import Forecast

    logging.getLogger("carbontracker").setLevel(logging.ERROR)
    epochs, shape, t0 = spec["epochs"], spec["shape"], spec["t0"]
    torch.set_num_threads(1)
    torch.manual_seed(0)
    base = spec["samples"]
    x = torch.randn(base * 3, 32)
    y = x[:, :1] * 0.5 + 0.1 * torch.randn(base * 3, 1)
    printed: list[tuple[str, float, float]] = []
    epochs_at: list[list[float]] = []  # carbontracker's epoch spans, seconds since t0

    class Run(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 1))

        def train_dataloader(self):
            # "growing": a curriculum adding a quarter of the first epoch's data each epoch.
            e = self.current_epoch if shape == "growing" else 0
            n = int(base * (1 + 0.25 * e))
            return DataLoader(TensorDataset(x[:n], y[:n]), batch_size=64, shuffle=True)

        def training_step(self, batch, _):
            return nn.functional.mse_loss(self.net(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    tracker = CarbonTracker(epochs=epochs, verbose=0, log_dir=None, ignore_errors=True)
    original = tracker._output_energy

    def capture(description, seconds, energy, co2eq, conversions):
        printed.append((description, seconds, energy / constants.PUE_2023))
        return original(description, seconds, energy, co2eq, conversions)

    tracker._output_energy = capture

    class CarbontrackerHooks(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module) -> None:
            if trainer.current_epoch == 0:
                if shape == "warm-up":
                    # A first epoch that pays for something later ones do not (compilation,
                    # caches, workers starting): 1.5 s of extra work.
                    end = time.monotonic() + 1.5
                    while time.monotonic() < end:
                        torch.randn(64, 64) @ torch.randn(64, 64)
            tracker.epoch_start()
            epochs_at.append([time.monotonic() - t0])

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            epochs_at[-1].append(time.monotonic() - t0)
            tracker.epoch_end()

    # The CPU counter alone, as the trace (and carbontracker here) covers: with its defaults
    # ours would add a RAM model (W/GB) that no trace holds.
    meter = EnergyMeter(sensors=[RaplSensor("cpu", scope="machine")])
    ours = CarbonCallback(intensity="FR", meter=meter)
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, reload_dataloaders_every_n_epochs=1,
                        callbacks=[CarbontrackerHooks(), ours])
    trainer.fit(Run())
    tracker.stop()
    train = [r for r in ours.records if r.stage == "train"]
    predictions = {}
    for warmup in (0, 1):
        # What the policy logs live: its first forecast, from the first epoch past warm-up
        # (predict() is the pure function the policy calls).
        p = Forecast(max_epochs=epochs, warmup=warmup).predict(train[:warmup + 1])
        if p is not None:
            predictions[str(warmup)] = {"after": warmup + 1, "kwh": p.energy_kwh,
                                        "low": p.energy_kwh_low, "high": p.energy_kwh_high}
    # Our records carry wall-clock times; the traces run on the monotonic clock.
    offset = time.monotonic() - time.time() - t0
    out = {"shape": shape, "tree": spec["tree"], "ct_epochs": epochs_at, "printed": printed,
           "ours_span": [train[0].start_wall + offset, train[-1].end_wall + offset]
           if train else None,
           "ours_total_kwh": train[-1].energy_kwh_total if train else None,
           "ours_methods": dict(train[-1].methods) if train else {},
           "epoch_seconds": [r.seconds for r in train], "ours": predictions}
    with open(spec["out"], "w") as f:
        json.dump(out, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
