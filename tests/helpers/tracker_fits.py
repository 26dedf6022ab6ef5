"""Tiny real fits (CPU, a few seconds) shared by the tracker tests; each imports its framework."""

from __future__ import annotations

from pathlib import Path
from typing import Any

INTENSITY = 56.0
EPOCHS = 3


def lightning_fit(callbacks: list[Any], logger: Any, *, root: Path, max_epochs: int = EPOCHS,
                  namespace: str = "lightning.pytorch"):
    """A two-feature classifier with validation; logs ``train_loss`` (epoch mean), ``val_loss``."""
    import importlib

    import torch

    pl = importlib.import_module(namespace)

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(8, 2)

        def training_step(self, batch, _):
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self.layer(x), y)
            self.log("train_loss", loss, on_step=False, on_epoch=True)
            return loss

        def validation_step(self, batch, _):
            x, y = batch
            self.log("val_loss", torch.nn.functional.cross_entropy(self.layer(x), y))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    data = torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long())
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        callbacks=callbacks,
        logger=logger,
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        default_root_dir=root,
    )
    trainer.fit(
        Tiny(),
        torch.utils.data.DataLoader(data, batch_size=16),
        torch.utils.data.DataLoader(data, batch_size=32),
    )
    return trainer


def keras_fit(callbacks: list[Any], *, epochs: int = EPOCHS):
    """A one-layer softmax model on 96 generated points, validation on a quarter of them."""
    import keras
    import numpy as np

    rng = np.random.RandomState(0)
    x = rng.randn(96, 8).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model.fit(
        x, y, validation_split=0.25, epochs=epochs, batch_size=16, verbose=0, callbacks=callbacks
    )


def transformers_trainer(callbacks: list[Any], *, out: Path, report_to: list[str],
                         epochs: int = EPOCHS):
    """A one-layer BERT built from a config (no download), evaluated every epoch."""
    import torch
    import transformers

    class Tokens(torch.utils.data.Dataset):
        def __init__(self, n, seed):
            g = torch.Generator().manual_seed(seed)
            self.x = torch.randint(0, 32, (n, 8), generator=g)
            self.y = (self.x[:, 0] > 15).long()

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return {"input_ids": self.x[i], "labels": self.y[i]}

    config = transformers.BertConfig(
        vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=16, max_position_embeddings=16, num_labels=2,
    )
    torch.manual_seed(0)
    args = transformers.TrainingArguments(
        output_dir=str(out), num_train_epochs=epochs, per_device_train_batch_size=8,
        eval_strategy="epoch", logging_strategy="epoch", save_strategy="no",
        report_to=report_to, disable_tqdm=True, use_cpu=True, run_name="tiny-bert",
    )
    return transformers.Trainer(
        model=transformers.BertForSequenceClassification(config), args=args,
        train_dataset=Tokens(32, 0), eval_dataset=Tokens(16, 1), callbacks=callbacks,
    )
