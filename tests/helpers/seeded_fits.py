"""Seeded tiny fits (CPU, seconds) whose schedule each test sets: what the adapters log per epoch.

The same call twice gives the same metrics, so a fit with the callback can be compared with one
without it. Each builder imports its framework; the tests skip when it is missing.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

INTENSITY = 56.0


def lightning_fit(
    root: Path,
    callbacks: list[Any],
    *,
    logger: bool = True,
    on_step: bool = False,
    max_epochs: int = 3,
    **trainer_options: Any,
) -> Any:
    """A two-feature classifier, 4 training batches an epoch, validation of 2 batches.

    Logs ``train_loss`` (each step too when ``on_step``), ``val_loss`` and ``val_acc``; a
    ``CSVLogger`` under ``root`` unless ``logger`` is False. Returns the trainer after ``fit``.
    """
    import lightning.pytorch as pl
    import torch

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(8, 2)

        def training_step(self, batch: Any, _: int) -> Any:
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self.layer(x), y)
            self.log("train_loss", loss, on_step=on_step, on_epoch=True)
            return loss

        def validation_step(self, batch: Any, _: int) -> None:
            x, y = batch
            logits = self.layer(x)
            self.log("val_loss", torch.nn.functional.cross_entropy(logits, y))
            self.log("val_acc", (logits.argmax(1) == y).float().mean())

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    data = torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long())
    torch.manual_seed(0)
    module = Tiny()
    options: dict[str, Any] = {
        "max_epochs": max_epochs,
        "callbacks": callbacks,
        "logger": pl.loggers.CSVLogger(root, name="run") if logger else False,
        "accelerator": "cpu",
        "devices": 1,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "default_root_dir": root,
        **trainer_options,
    }
    trainer = pl.Trainer(**options)
    trainer.fit(
        module,
        torch.utils.data.DataLoader(data, batch_size=16),
        torch.utils.data.DataLoader(data, batch_size=32),
    )
    return trainer


def lightning_csv_rows(trainer: Any) -> list[dict[str, float]]:
    """Each row of Lightning's metrics.csv, without its empty cells (other rows' columns)."""
    with open(f"{trainer.logger.log_dir}/metrics.csv") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def keras_fit(
    root: Path,
    callbacks: list[Any],
    *,
    epochs: int = 3,
    metrics: tuple[Any, ...] = (),
    **fit_options: Any,
) -> tuple[dict[str, list[float]], list[str], list[dict[str, str]]]:
    """A dense softmax classifier, 96 samples in batches of 16, a ``CSVLogger`` listed first.

    The model is compiled with ``accuracy`` and ``metrics``. Returns ``History.history``, the
    CSV's columns and its rows.
    """
    import keras
    import numpy as np

    rng = np.random.RandomState(0)
    x = rng.randn(96, 8).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy", *metrics])
    root.mkdir(parents=True, exist_ok=True)
    csv_path = root / "log.csv"
    history = model.fit(
        x,
        y,
        epochs=epochs,
        batch_size=16,
        verbose=0,
        callbacks=[keras.callbacks.CSVLogger(str(csv_path)), *callbacks],
        **fit_options,
    )
    with open(csv_path) as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    return history.history, list(reader.fieldnames or []), rows


def bert_trainer(root: Path, callbacks: list[Any], **arguments: Any) -> Any:
    """A one-layer BERT built from a config (no download); 4 training steps an epoch.

    ``arguments`` override the ``TrainingArguments`` (3 epochs, no saving, no reporting).
    """
    import torch
    import transformers

    class Tokens(torch.utils.data.Dataset):
        def __init__(self, n: int, seed: int) -> None:
            g = torch.Generator().manual_seed(seed)
            self.x = torch.randint(0, 32, (n, 8), generator=g)
            self.y = (self.x[:, 0] > 15).long()

        def __len__(self) -> int:
            return len(self.x)

        def __getitem__(self, i: int) -> dict[str, Any]:
            return {"input_ids": self.x[i], "labels": self.y[i]}

    config = transformers.BertConfig(
        vocab_size=32,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=16,
        num_labels=2,
    )
    torch.manual_seed(0)
    options: dict[str, Any] = {
        "output_dir": str(root / "out"),
        "num_train_epochs": 3,
        "per_device_train_batch_size": 8,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "use_cpu": True,
        **arguments,
    }
    return transformers.Trainer(
        model=transformers.BertForSequenceClassification(config),
        args=transformers.TrainingArguments(**options),
        train_dataset=Tokens(32, 0),
        eval_dataset=Tokens(16, 1),
        callbacks=callbacks,
    )
