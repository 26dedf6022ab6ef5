"""Small learning tasks of different shapes, trained with Lightning and our CarbonCallback.

Shared by ``bench_stopping.py`` (stopping rules) and ``bench_pruning.py`` (Optuna pruners).
Every task is built from scikit-learn's bundled data or generated data, small enough to train
on a CPU core in a few seconds, and logs per epoch: ``val_acc``, ``val_loss`` and ``test_acc``
(the test accuracy of that epoch's weights, so any stop epoch's best-validation checkpoint can be
scored afterwards). ``fit_task`` returns the CarbonCallback's records (energy, CO2e, metrics and
the LR-schedule horizon).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

INTENSITY = 400.0  # g CO2e per kWh, fixed so runs compare on energy alone
MONITOR = "val_acc"


@dataclass(frozen=True)
class Config:
    """A task's hyperparameters (the Optuna benchmark samples them)."""

    hidden: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.0
    batch_size: int = 32


@dataclass(frozen=True)
class Task:
    """A learning problem: data, model, optimiser and schedule."""

    name: str
    shape: str
    data: Callable[[int], tuple[Any, ...]]
    model: Callable[[Config, int, int], Any]
    optimizer: str = "adam"
    schedule: str = ""
    max_epochs: int = 40
    config: Config = Config()
    held_out: bool = False
    """Added after the rules were designed and never looked at while choosing their defaults."""


def _split(x: np.ndarray, y: np.ndarray, n_train: int, n_val: int, seed: int) -> tuple[Any, ...]:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    x, y = x[order], y[order]
    tr, va = slice(0, n_train), slice(n_train, n_train + n_val)
    te = slice(n_train + n_val, None)
    mean, std = x[tr].mean(axis=0), x[tr].std(axis=0) + 1e-6
    x = (x - mean) / std
    return x[tr], y[tr], x[va], y[va], x[te], y[te]


# Generated test sets are large so that one test sample is 0.02 points, not the noise the
# comparisons are about; validation sets are 1000 samples except in ``tiny_val``.
N_TRAIN, N_VAL, N_TEST = 500, 1000, 5000


def tabular(
    seed: int, *, noise: float = 0.0, n_val: int = N_VAL, weights: list[float] | None = None
) -> tuple[Any, ...]:
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=N_TRAIN + n_val + N_TEST, n_features=20, n_informative=10, n_redundant=4,
        n_classes=3, n_clusters_per_class=2, class_sep=1.0, flip_y=0.02, weights=weights,
        random_state=1000 + seed,
    )  # fmt: skip
    parts = list(_split(x.astype(np.float32), y, N_TRAIN, n_val, seed))
    if noise:
        # Label noise in the training and validation labels; the test labels stay clean.
        rng = np.random.default_rng(seed + 7)
        for i in (1, 3):
            flip = rng.random(len(parts[i])) < noise
            parts[i] = np.where(flip, rng.integers(0, 3, len(parts[i])), parts[i])
    return tuple(parts)


def digits(seed: int) -> tuple[Any, ...]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    x, y = x[order], y[order]
    # 1797 images in all: 500 to train, 500 to validate, 797 to test.
    return x[:500], y[:500], x[500:1000], y[500:1000], x[1000:], y[1000:]


def binned_regression(seed: int) -> tuple[Any, ...]:
    """Friedman's regression problem #1 with its target cut into 5 quantile classes."""
    from sklearn.datasets import make_friedman1

    x, t = make_friedman1(n_samples=N_TRAIN + N_VAL + N_TEST, noise=1.0, random_state=3000 + seed)
    y = np.searchsorted(np.quantile(t, [0.2, 0.4, 0.6, 0.8]), t)
    return _split(x.astype(np.float32), y, N_TRAIN, N_VAL, seed)


def tokens(seed: int, *, length: int = 12, vocab: int = 6) -> tuple[Any, ...]:
    """Token sequences labelled by how often the first token recurs: 0-1, 2, or 3+ times."""
    rng = np.random.default_rng(4000 + seed)
    n = N_TRAIN + N_VAL + N_TEST
    x = rng.integers(0, vocab, (n, length))
    y = np.digitize((x[:, 1:] == x[:, :1]).sum(1), [2, 3])
    tr, va = slice(0, N_TRAIN), slice(N_TRAIN, N_TRAIN + N_VAL)
    te = slice(N_TRAIN + N_VAL, None)
    return x[tr], y[tr], x[va], y[va], x[te], y[te]


def sequences(seed: int, *, length: int = 24, kind: str = "order") -> tuple[Any, ...]:
    """Generated sequences: 'order' (which half sums higher, for a GRU) or 'waves' (1-D CNN)."""
    rng = np.random.default_rng(2000 + seed)
    n = N_TRAIN + N_VAL + N_TEST
    if kind == "order":
        x = rng.normal(size=(n, length, 1)).astype(np.float32)
        score = x[:, : length // 2, 0].sum(1) - x[:, length // 2 :, 0].sum(1)
        y = (score > 0).astype(np.int64)
    else:
        y = rng.integers(0, 4, n)
        t = np.arange(length)
        freq = np.array([1.0, 1.5, 2.0, 2.5])[y][:, None]
        phase = rng.uniform(0, 2 * np.pi, (n, 1))
        x = np.sin(2 * np.pi * freq * t / length + phase) + rng.normal(0, 1.2, (n, length))
        x = x[:, None, :].astype(np.float32)
    tr, va = slice(0, N_TRAIN), slice(N_TRAIN, N_TRAIN + N_VAL)
    te = slice(N_TRAIN + N_VAL, None)
    return x[tr], y[tr], x[va], y[va], x[te], y[te]


def mlp(config: Config, n_in: int, n_out: int) -> Any:
    from torch import nn

    return nn.Sequential(
        nn.Flatten(), nn.Linear(n_in, config.hidden), nn.ReLU(),
        nn.Linear(config.hidden, config.hidden), nn.ReLU(), nn.Linear(config.hidden, n_out),
    )  # fmt: skip


def cnn2d(config: Config, n_in: int, n_out: int) -> Any:
    from torch import nn

    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Flatten(),
        nn.Linear(16 * 16, config.hidden), nn.ReLU(), nn.Linear(config.hidden, n_out),
    )  # fmt: skip


def cnn1d(config: Config, n_in: int, n_out: int) -> Any:
    from torch import nn

    return nn.Sequential(
        nn.Conv1d(1, 8, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(8, 16, 5, padding=2), nn.ReLU(), nn.AdaptiveAvgPool1d(4), nn.Flatten(),
        nn.Linear(64, config.hidden), nn.ReLU(), nn.Linear(config.hidden, n_out),
    )  # fmt: skip


def gru(config: Config, n_in: int, n_out: int) -> Any:
    import torch
    from torch import nn

    class GRUClassifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.GRU(1, max(config.hidden // 4, 8), batch_first=True)
            self.head = nn.Linear(max(config.hidden // 4, 8), n_out)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out, _ = self.rnn(x)
            return self.head(out[:, -1])

    return GRUClassifier()


def attention(config: Config, n_in: int, n_out: int) -> Any:
    import torch
    from torch import nn

    width = 16

    class TinyTransformer(nn.Module):
        """Token embedding, one self-attention encoder layer, mean pooling, a linear head."""

        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(8, width)
            self.position = nn.Parameter(torch.randn(1, 16, width) * 0.1)
            layer = nn.TransformerEncoderLayer(
                width, nhead=2, dim_feedforward=config.hidden, dropout=0.0, batch_first=True
            )
            self.encoder = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
            self.head = nn.Linear(width, n_out)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.embed(x.long()) + self.position[:, : x.shape[1]]
            return self.head(self.encoder(h).mean(1))

    return TinyTransformer()


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("tabular_mlp", "MLP, 3-class tabular (make_classification)", tabular, mlp),
        Task(
            "label_noise", "MLP, 25% noisy train/val labels", lambda s: tabular(s, noise=0.25),
            mlp,
        ),
        Task("digits_cnn", "small CNN, sklearn digits 8x8", digits, cnn2d, optimizer="sgd",
             config=Config(lr=0.02)),
        Task("gru_order", "GRU, generated sequences", sequences, gru, config=Config(lr=5e-3)),
        Task("steplr_mlp", "MLP, SGD, StepLR drop at epoch 20", tabular, mlp, optimizer="sgd",
             schedule="step", config=Config(lr=0.05)),
        Task("cosine_cnn1d", "1-D CNN, generated waves, cosine schedule",
             lambda s: sequences(s, length=32, kind="waves"), cnn1d, schedule="cosine"),
        Task("tiny_val", "MLP, 100-sample validation set", lambda s: tabular(s, n_val=100), mlp),
        Task("attention_tokens", "tiny transformer (1 attention layer), token counting",
             tokens, attention, held_out=True),
        Task("binned_regression", "MLP, Friedman #1 regression cut into 5 classes",
             binned_regression, mlp, held_out=True),
        Task("imbalanced", "MLP, 3 classes at 80/15/5%",
             lambda s: tabular(s, weights=[0.8, 0.15, 0.05]), mlp, held_out=True),
    )
}


def _quiet() -> None:
    for name in list(logging.root.manager.loggerDict):
        if name.split(".")[0] in ("lightning", "lightning_fabric", "pytorch_lightning"):
            logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*deterministic.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")


def fit_task(
    task: Task,
    seed: int,
    *,
    config: Config | None = None,
    policy: Any = None,
    early_stopping: str | None = None,
    max_epochs: int | None = None,
    data: tuple[Any, ...] | None = None,
) -> tuple[list[Any], int]:
    """Train ``task`` with Lightning and a CarbonCallback; return (records, epochs trained).

    ``policy`` goes to the CarbonCallback (None: a never-stopping ``Forecast``, so the
    callback still reads the LR-schedule horizon); ``early_stopping`` adds Lightning's
    ``EarlyStopping(monitor=early_stopping, patience=5)``.
    """
    import lightning.pytorch as pl
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from carbon_callbacks.integrations.lightning import CarbonCallback
    from carbon_callbacks.policies import Forecast

    _quiet()
    config = config or task.config
    epochs = max_epochs or task.max_epochs
    torch.set_num_threads(1)
    pl.seed_everything(seed, verbose=False)
    x_tr, y_tr, x_va, y_va, x_te, y_te = data if data is not None else task.data(seed)
    n_out = int(max(y_tr.max(), y_va.max(), y_te.max())) + 1
    n_in = int(np.prod(x_tr.shape[1:]))
    test_x = torch.tensor(x_te)
    test_y = torch.tensor(y_te, dtype=torch.long)

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = task.model(config, n_in, n_out)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return nn.functional.cross_entropy(self(x), y)

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            logits = self(x)
            self.log("val_loss", nn.functional.cross_entropy(logits, y), on_epoch=True)
            self.log(MONITOR, (logits.argmax(1) == y).float().mean(), on_epoch=True)

        def on_validation_epoch_end(self) -> None:
            # The test accuracy of this epoch's weights: scores any checkpoint a rule keeps.
            with torch.no_grad():
                acc = (self(test_x).argmax(1) == test_y).float().mean()
            self.log("test_acc", acc)

        def configure_optimizers(self) -> Any:
            if task.optimizer == "sgd":
                opt = torch.optim.SGD(
                    self.parameters(), lr=config.lr, momentum=0.9,
                    weight_decay=config.weight_decay,
                )  # fmt: skip
            else:
                opt = torch.optim.Adam(
                    self.parameters(), lr=config.lr, weight_decay=config.weight_decay
                )
            if task.schedule == "step":
                return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=20, gamma=0.1)]
            if task.schedule == "cosine":
                return [opt], [torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)]
            return opt

    def loader(x: Any, y: Any, shuffle: bool) -> DataLoader:
        ds = TensorDataset(torch.tensor(x), torch.tensor(y, dtype=torch.long))
        return DataLoader(ds, batch_size=config.batch_size if shuffle else 512, shuffle=shuffle)

    carbon = CarbonCallback(
        intensity=INTENSITY,
        policy=policy if policy is not None else Forecast(max_epochs=epochs),
        monitor=MONITOR,
        ledger=False,
    )
    callbacks: list[Any] = [carbon]
    if early_stopping:
        callbacks.append(
            pl.callbacks.EarlyStopping(monitor=early_stopping, patience=5, mode="min"
                                       if "loss" in early_stopping else "max")
        )
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, callbacks=callbacks, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, deterministic=True,
    )  # fmt: skip
    trainer.fit(Module(), loader(x_tr, y_tr, True), loader(x_va, y_va, False))
    records = list(carbon.records)
    return records, len(records)


def early_stopping_epoch(values: list[float], mode: str, patience: int = 5) -> int | None:
    """Where Lightning's ``EarlyStopping(patience)`` stops (0-based), None if it never does.

    Its semantics: an epoch improves when it beats the best by more than ``min_delta`` (0),
    otherwise the wait count grows; training stops after the epoch where it reaches
    ``patience``.
    """
    best = math.inf if mode == "min" else -math.inf
    wait = 0
    for epoch, v in enumerate(values):
        if (v < best) if mode == "min" else (v > best):
            best, wait = v, 0
        else:
            wait += 1
            if wait >= patience:
                return epoch
    return None
