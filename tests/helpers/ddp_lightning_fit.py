"""A 2-process CPU DDP fit (gloo) with CarbonCallback; run by tests/test_lightning_ddp.py.

Usage: python ddp_lightning_fit.py OUT_DIR. Lightning re-runs this script for rank 1. Each rank
writes OUT_DIR/rank<N>.json with its own measurement and what it logged; rank 0's CSVLogger
writes OUT_DIR/logs/.../metrics.csv.
"""

from __future__ import annotations

import json
import os
import sys

import lightning.pytorch as pl
import torch
import torch.distributed as dist

from carbon_callbacks.energy.sensors.process import ProcessTree
from carbon_callbacks.integrations.lightning import CarbonCallback
from carbon_callbacks.policies import CONTINUE, Decision


class TreeProbe(pl.Callback):
    """Records which processes this rank's meter would attribute CPU time to, mid-fit."""

    pids: list[int] = []

    def on_train_epoch_end(self, trainer, pl_module):
        tree = ProcessTree()
        tree.open()
        TreeProbe.pids = sorted(tree._procs)


class StopOnRankOne:
    """A policy that says stop only on rank 1, after epoch 1: all ranks must still agree."""

    def decide(self, records):
        if dist.is_initialized() and dist.get_rank() == 1 and records[-1].epoch >= 1:
            return Decision(True, "rank 1 says stop")
        return CONTINUE


class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(8, 2)

    def training_step(self, batch, _):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.layer(x), y)
        self.log("train_loss", loss, sync_dist=True)
        return loss

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val_loss", torch.nn.functional.cross_entropy(self.layer(x), y), sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def main(out: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(256, 8)
    data = torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long())
    carbon = CarbonCallback(intensity=100.0, policy=StopOnRankOne())
    trainer = pl.Trainer(
        strategy="ddp",
        accelerator="cpu",
        devices=2,
        max_epochs=5,
        callbacks=[carbon, TreeProbe()],
        logger=pl.loggers.CSVLogger(os.path.join(out, "logs"), name="ddp"),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(
        Tiny(),
        torch.utils.data.DataLoader(data, batch_size=32),
        torch.utils.data.DataLoader(data, batch_size=64),
    )
    report = {
        "rank": trainer.global_rank,
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "tree_pids": TreeProbe.pids,
        "local_energy_kwh_total": carbon.tracker.totals.local_energy_kwh,
        "energy_kwh_total": carbon.tracker.totals.energy_kwh,
        "epochs": [r.epoch for r in carbon.records],
        "energy_kwh": [r.energy_kwh for r in carbon.records],
        "stop_reason": carbon.tracker.stop_decision.reason if carbon.tracker.stop_decision else "",
        "run_id": carbon.tracker.run_id,
        "log_dir": trainer.logger.log_dir if trainer.global_rank == 0 else "",
    }
    with open(os.path.join(out, f"rank{trainer.global_rank}.json"), "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main(sys.argv[1])
