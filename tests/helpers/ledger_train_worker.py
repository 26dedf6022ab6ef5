"""A real Lightning training run that writes to a ledger, for the SIGKILL test.

Usage: python ledger_train_worker.py LEDGER

Trains a tiny MLP on random data for up to 1000 epochs with ``CarbonCallback(ledger=LEDGER)``,
printing each finished epoch number (after the callback has written it) so the test knows when
to kill it.
"""

from __future__ import annotations

import sys
import time

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from carbon_callbacks.integrations.lightning import CarbonCallback


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(8, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, on_epoch=True, on_step=False)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Announce(pl.Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        print(trainer.current_epoch, flush=True)
        time.sleep(0.05)


def main() -> None:
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(64, 8), torch.randint(0, 2, (64,)))
    trainer = pl.Trainer(
        max_epochs=1000,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        # The carbon callback comes first, so an epoch is in the ledger before it is announced.
        callbacks=[
            CarbonCallback(intensity=300.0, ledger=sys.argv[1], metadata={"project": "killed"}),
            Announce(),
        ],
    )
    trainer.fit(Tiny(), DataLoader(data, batch_size=16))


if __name__ == "__main__":
    main()
