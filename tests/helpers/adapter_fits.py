"""Real tiny fits for each training adapter, driven the same way (the contract suite and the
endings fault tests use them, in process and from worker subprocesses).

Each driver builds its framework's smallest real training run (two-feature classifiers, a
one-layer BERT from a config: nothing downloaded) and can inject what the contract needs: an
exception, a signal or a sleep inside a training step, the framework's own early stopping, a
checkpoint to resume from. ``fit`` returns a ``Fit`` whose ``logged`` holds, per epoch, the
values the framework's own log channel received (Lightning's CSVLogger rows, Keras' History,
transformers' ``log_history``).
"""

from __future__ import annotations

import csv
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

INTENSITY = 56.0
BATCHES = 4
"""Training batches per epoch in every driver."""


@dataclass
class Fault:
    """What to do inside the training step of ``epoch``, batch ``batch`` (0-based)."""

    epoch: int
    batch: int
    action: str = "raise"
    """``raise`` (a RuntimeError), ``sigterm`` or ``sigint`` (sent to this process)."""
    fired_at: float | None = None
    """When it fired (wall time); it fires once (a resumed fit passes the same place again)."""

    def fire(self) -> None:
        if self.fired_at is not None:
            return
        self.fired_at = time.time()
        if self.action == "raise":
            raise RuntimeError(f"injected failure at epoch {self.epoch} batch {self.batch}")
        sig = {"sigterm": signal.SIGTERM, "sigint": signal.SIGINT}[self.action]
        os.kill(os.getpid(), sig)
        time.sleep(0.05)  # the handler runs at the next bytecode; give it that chance


@dataclass
class Step:
    """Called at every training step with (epoch, batch): sleeps and fires the fault."""

    fault: Fault | None = None
    sleep: float = 0.0
    seen: list[tuple[int, int]] = field(default_factory=list)

    def __call__(self, epoch: int, batch: int) -> None:
        self.seen.append((epoch, batch))
        if self.sleep:
            time.sleep(self.sleep)
        if self.fault is not None and (epoch, batch) == (self.fault.epoch, self.fault.batch):
            self.fault.fire()


@dataclass
class Fit:
    """What a fit left: per-epoch logged values, the callback, the framework's objects."""

    callback: Any
    logged: list[dict[str, float]]
    epochs_trained: int
    handle: Any = None  # the trainer or the model, for a continued fit


class LightningFits:
    name = "lightning"
    monitor = "val_acc"

    def callback(self, **kwargs: Any) -> Any:
        from carbon_callbacks.integrations.lightning import CarbonCallback

        kwargs.setdefault("intensity", INTENSITY)
        return CarbonCallback(**kwargs)

    def _module(self, step: Step) -> Any:
        import lightning.pytorch as pl
        import torch

        class Tiny(pl.LightningModule):
            def __init__(self) -> None:
                super().__init__()
                self.layer = torch.nn.Linear(8, 2)

            def training_step(self, batch: Any, index: int) -> Any:
                step(self.current_epoch, index)
                x, y = batch
                loss = torch.nn.functional.cross_entropy(self.layer(x), y)
                self.log("train_loss", loss)
                return loss

            def validation_step(self, batch: Any, index: int) -> None:
                x, y = batch
                logits = self.layer(x)
                self.log("val_loss", torch.nn.functional.cross_entropy(logits, y))
                self.log("val_acc", (logits.argmax(1) == y).float().mean())

            def test_step(self, batch: Any, index: int) -> None:
                x, y = batch
                self.log("test_loss", torch.nn.functional.cross_entropy(self.layer(x), y))

            def configure_optimizers(self) -> Any:
                return torch.optim.SGD(self.parameters(), lr=0.1)

        return Tiny()

    def _loaders(self) -> tuple[Any, Any]:
        import torch

        g = torch.Generator().manual_seed(0)
        x = torch.randn(16 * BATCHES, 8, generator=g)
        data = torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long())
        return (torch.utils.data.DataLoader(data, batch_size=16),
                torch.utils.data.DataLoader(data, batch_size=32))

    def fit(
        self,
        tmp: Path,
        carbon: Any,
        *,
        epochs: int = 3,
        step: Step | None = None,
        early_stopping: bool = False,
        checkpoint: bool = False,
        resume: bool = False,
        handle: Any = None,
        extra: Sequence[Any] = (),
    ) -> Fit:
        import lightning.pytorch as pl

        callbacks: list[Any] = [carbon] if carbon is not None else []
        callbacks.extend(extra)
        if early_stopping:
            callbacks.append(pl.callbacks.EarlyStopping(monitor="co2_g_total", mode="min",
                                                        patience=1))
        if checkpoint:
            callbacks.append(pl.callbacks.ModelCheckpoint(dirpath=tmp / "ckpt", save_last=True))
        if handle is None:  # a new trainer and module; else fit the same ones again
            trainer = pl.Trainer(
                max_epochs=epochs, callbacks=callbacks, accelerator="cpu", devices=1,
                logger=pl.loggers.CSVLogger(tmp / "logs", name="run"),
                enable_progress_bar=False, enable_model_summary=False,
                enable_checkpointing=checkpoint, default_root_dir=tmp, num_sanity_val_steps=0,
            )
            module = self._module(step or Step())
        else:
            trainer, module = handle
            trainer.fit_loop.max_epochs = epochs
        train, val = self._loaders()
        ckpt = str(tmp / "ckpt" / "last.ckpt") if resume else None
        try:
            trainer.fit(module, train, val, ckpt_path=ckpt)
        finally:
            self.last = (trainer, module)
        return Fit(carbon, self._rows(trainer), trainer.current_epoch, (trainer, module))

    def evaluate(self, fit: Fit) -> None:
        trainer, module = fit.handle
        trainer.test(module, self._loaders()[1], verbose=False)

    @staticmethod
    def _rows(trainer: Any) -> list[dict[str, float]]:
        path = Path(trainer.logger.log_dir) / "metrics.csv"
        if not path.exists():
            return []
        with open(path) as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("co2_g")]
        return [{k: float(v) for k, v in r.items() if v != ""} for r in rows]


class KerasFits:
    name = "keras"
    monitor = "val_accuracy"

    def callback(self, **kwargs: Any) -> Any:
        from carbon_callbacks.integrations.keras import CarbonCallback

        kwargs.setdefault("intensity", INTENSITY)
        return CarbonCallback(**kwargs)

    def _data(self) -> tuple[Any, Any]:
        import numpy as np

        rng = np.random.RandomState(0)
        x = rng.randn(16 * BATCHES, 8).astype("float32")
        return x, (x[:, 0] > 0).astype("int32")

    def _model(self, step: Step) -> Any:
        import keras

        class Stepped(keras.Sequential):
            """Runs ``step`` inside the training step itself (so inside ``train_function``)."""

            position = (0, 0)

            def train_step(self, data: Any) -> Any:
                step(*self.position)
                return super().train_step(data)

        class Position(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.epoch = 0

            def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
                self.epoch = epoch

            def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
                self.model.position = (self.epoch, batch)

        keras.utils.set_random_seed(0)
        model = Stepped([keras.Input((8,)), keras.layers.Dense(2, activation="softmax")])
        model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
        model._carbon_position = Position()
        return model

    def fit(
        self,
        tmp: Path,
        carbon: Any,
        *,
        epochs: int = 3,
        step: Step | None = None,
        early_stopping: bool = False,
        checkpoint: bool = False,
        resume: bool = False,
        handle: Any = None,
        initial_epoch: int = 0,
    ) -> Fit:
        import keras

        model = handle if handle is not None else self._model(step or Step())
        callbacks: list[Any] = [carbon] if carbon is not None else []
        callbacks.append(model._carbon_position)
        if early_stopping:
            callbacks.append(keras.callbacks.EarlyStopping(monitor="co2_g_total", mode="min",
                                                           patience=1))
        if checkpoint or resume:
            callbacks.append(keras.callbacks.BackupAndRestore(str(tmp / "backup")))
        x, y = self._data()
        try:
            history = model.fit(x, y, validation_split=0.25, epochs=epochs, batch_size=12,
                                verbose=0, callbacks=callbacks, initial_epoch=initial_epoch)
        finally:
            self.last = model
        logged = [dict(zip(history.history, values, strict=True))
                  for values in zip(*history.history.values(), strict=True)]
        return Fit(carbon, logged, len(logged), model)

    def evaluate(self, fit: Fit) -> None:
        x, y = self._data()
        fit.handle.evaluate(x, y, verbose=0, callbacks=[fit.callback])


class TransformersFits:
    name = "transformers"
    monitor = "eval_loss"

    def callback(self, **kwargs: Any) -> Any:
        from carbon_callbacks.integrations.transformers import CarbonCallback

        kwargs.setdefault("intensity", INTENSITY)
        return CarbonCallback(**kwargs)

    def _trainer(self, tmp: Path, callbacks: Sequence[Any], step: Step, epochs: int,
                 **overrides: Any) -> Any:
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

        class SteppedTrainer(transformers.Trainer):
            def compute_loss(self, model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
                if model.training:
                    per_epoch = BATCHES
                    done = self.state.global_step
                    step(done // per_epoch, done % per_epoch)
                return super().compute_loss(model, inputs, *args, **kwargs)

        config = transformers.BertConfig(
            vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=16, max_position_embeddings=16, num_labels=2,
        )
        torch.manual_seed(0)
        options = {
            "output_dir": str(tmp / "out"), "num_train_epochs": epochs,
            "per_device_train_batch_size": 8, "eval_strategy": "epoch",
            "logging_strategy": "epoch", "save_strategy": "no", "report_to": "none",
            "disable_tqdm": True, "use_cpu": True,
        }
        options.update(overrides)
        return SteppedTrainer(
            model=transformers.BertForSequenceClassification(config),
            args=transformers.TrainingArguments(**options),
            train_dataset=Tokens(8 * BATCHES, 0), eval_dataset=Tokens(16, 1),
            callbacks=list(callbacks),
        )

    def fit(
        self,
        tmp: Path,
        carbon: Any,
        *,
        epochs: int = 3,
        step: Step | None = None,
        early_stopping: bool = False,
        checkpoint: bool = False,
        resume: bool = False,
        handle: Any = None,
    ) -> Fit:
        import transformers

        callbacks: list[Any] = [carbon] if carbon is not None else []
        overrides: dict[str, Any] = {}
        if early_stopping:
            # Improving by more than 1e9 is impossible: patience runs out at the 2nd evaluation.
            callbacks.append(transformers.EarlyStoppingCallback(
                early_stopping_patience=1, early_stopping_threshold=1e9))
            overrides.update(metric_for_best_model="eval_loss")
        if checkpoint or resume:
            overrides.update(save_strategy="epoch")
        trainer = self._trainer(tmp, callbacks, step or Step(), epochs, **overrides)
        ckpt = str(tmp / "out" / f"checkpoint-{2 * BATCHES}") if resume else None
        try:
            trainer.train(resume_from_checkpoint=ckpt)
        finally:
            self.last = trainer
        logged = [e for e in trainer.state.log_history if "co2_g" in e]
        epochs_trained = round(trainer.state.global_step / BATCHES)
        return Fit(carbon, logged, epochs_trained, trainer)

    def evaluate(self, fit: Fit) -> None:
        fit.handle.evaluate()


DRIVERS: dict[str, Callable[[], Any]] = {
    "lightning": LightningFits,
    "keras": KerasFits,
    "transformers": TransformersFits,
}
