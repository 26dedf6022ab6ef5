"""``carbon-callbacks demo``: the same small network trained three ways, compared fairly.

A small MLP learns scikit-learn's bundled handwritten digits (no download) with Lightning, from
the same seed three times: to ``max_epochs``; with Lightning's ``EarlyStopping(val_loss,
patience=5)``, the rule users already have; and carbon-aware, under ``DiminishingReturns`` at its
default, which stops when the rest of the run is forecast to add less than 0.002 accuracy, and
never later than that EarlyStopping. A discarded one-epoch fit comes first, so no compared run
pays the process's warm-up (imports, allocator, caches), and no saving is claimed between runs
that trained the same number of epochs. The demo prints
the full run's per-epoch table, where and why each run stopped, the energy each used and the
accuracy each kept, and quotes the benchmark (ten tasks, five seeds) for what one run cannot
show; it writes the three runs to the ledger and draws the plot. Lightning, torch and
scikit-learn are imported only when the demo runs.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from carbon_callbacks.cli.demo_report import DemoResult, write_header, write_report

if TYPE_CHECKING:
    from carbon_callbacks.intensity import IntensitySpec
    from carbon_callbacks.policies import Policy
    from carbon_callbacks.tracking import LedgerSpec

PROJECT = "carbon-callbacks-demo"
MONITOR = "val_acc"


def _data(samples: int, seed: int) -> tuple[Any, Any]:
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from torch.utils.data import DataLoader, TensorDataset

    x, y = load_digits(return_X_y=True)
    if samples:
        x, y = x[:samples], y[:samples]
    x_train, x_val, y_train, y_val = train_test_split(
        x / 16.0, y, test_size=0.3, random_state=seed, stratify=y
    )

    def loader(xs: Any, ys: Any, shuffle: bool) -> Any:
        ds = TensorDataset(
            torch.tensor(xs, dtype=torch.float32), torch.tensor(ys, dtype=torch.long)
        )
        return DataLoader(ds, batch_size=64, shuffle=shuffle, num_workers=0)

    return loader(x_train, y_train, True), loader(x_val, y_val, False)


def _model() -> Any:
    import lightning.pytorch as pl
    import torch
    from torch import nn

    class DigitsMLP(pl.LightningModule):
        """64 pixels -> 32 hidden units -> 10 digits."""

        def __init__(self, hidden: int = 32, lr: float = 0.01) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.net = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))

        def forward(self, x: Any) -> Any:
            return self.net(x)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            return nn.functional.cross_entropy(self(x), y)

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            logits = self(x)
            acc = (logits.argmax(dim=1) == y).float().mean()
            self.log(MONITOR, acc, on_epoch=True, prog_bar=False)
            self.log("val_loss", nn.functional.cross_entropy(logits, y), on_epoch=True)

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=self.hparams["lr"], momentum=0.9)

    return DigitsMLP()


def _progress_callback(label: str, max_epochs: int, out: TextIO, enabled: bool) -> Any:
    import lightning.pytorch as pl

    tty = enabled and hasattr(out, "isatty") and out.isatty()

    class Progress(pl.Callback):
        """One line per run, redrawn each epoch on a terminal."""

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            if not enabled:
                return
            acc = trainer.callback_metrics.get(MONITOR)
            co2 = trainer.callback_metrics.get("co2_g_total")
            done = trainer.current_epoch + 1
            bar = "#" * round(20 * done / max_epochs)
            text = (
                f"  {label:<13} [{bar:<20}] epoch {done:>3}/{max_epochs}"
                f"  val_acc {float(acc) if acc is not None else math.nan:.3f}"
                f"  {float(co2) * 1000 if co2 is not None else 0.0:8.3f} mg CO2e"
            )
            if tty:
                out.write("\r" + text)
            elif done == 1 or done % 5 == 0 or done == max_epochs:
                out.write(text + "\n")
            out.flush()

        def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
            if tty:
                out.write("\n")
                out.flush()

    return Progress()


def _fit(
    label: str,
    *,
    epochs: int,
    policy: Policy | None,
    intensity: IntensitySpec,
    ledger: LedgerSpec,
    samples: int,
    seed: int,
    out: TextIO,
    progress: bool,
    early_stopping: bool = False,
) -> Any:
    import lightning.pytorch as pl
    import torch

    from carbon_callbacks.integrations.lightning import CarbonCallback

    # Same seed, same data order, same initial weights: the two runs follow one curve until
    # the carbon-aware one stops, so "accuracy kept" compares like with like.
    pl.seed_everything(seed, verbose=False)
    # One thread: faster for a 64-32-10 MLP than two contending ones on a small shared machine.
    torch.set_num_threads(1)
    train, val = _data(samples, seed)
    carbon = CarbonCallback(
        intensity=intensity,
        policy=policy,
        monitor=MONITOR,
        ledger=ledger,
        metadata={"project": PROJECT, "variant": label, "dataset": "sklearn digits"},
    )
    callbacks = [carbon, _progress_callback(label, epochs, out, progress)]
    if early_stopping:
        callbacks.append(pl.callbacks.EarlyStopping(monitor="val_loss", patience=5, mode="min"))
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=True,
    )
    trainer.fit(_model(), train, val)
    return carbon


def run_demo(
    *,
    epochs: int = 30,
    output_dir: str | os.PathLike[str] = ".",
    ledger: str | os.PathLike[str] | None = None,
    intensity: float | str | None = None,
    samples: int = 0,
    seed: int = 0,
    progress: bool = True,
    max_loss: float = 0.002,
    out: TextIO | None = None,
) -> DemoResult:
    """Train the digits MLP to ``epochs``, with EarlyStopping, and carbon-aware; compare.

    Args:
        epochs: ``max_epochs`` of both runs.
        output_dir: where the PNG is written.
        ledger: the ledger for both runs (default: ``$CARBON_CALLBACKS_LEDGER`` or per-user).
        intensity: gCO2e/kWh or a zone code; default the configured one, else the world mean.
        samples: use only the first N digits (0: all 1,797), for quick checks.
        seed: the seed of both runs.
        progress: print a progress line while training.
        max_loss: ``DiminishingReturns``' max_loss (accuracy the carbon-aware run may give up).
        out: where to print (default stdout).

    Returns:
        The measurements.

    Raises:
        ValueError: for ``epochs`` < 2 or a negative ``samples``.
        ImportError: if Lightning, torch or scikit-learn are missing.
    """
    if epochs < 2:
        raise ValueError(f"epochs must be >= 2 so there is something to stop early, got {epochs}")
    if samples < 0 or samples == 1:
        raise ValueError(f"samples must be 0 (all) or >= 2, got {samples}")
    out = out or sys.stdout
    t0 = time.perf_counter()

    from carbon_callbacks.intensity import ENV_VARS, resolve
    from carbon_callbacks.ledger import Ledger
    from carbon_callbacks.policies import DiminishingReturns
    from carbon_callbacks.reports.plot import plot_run

    if intensity is None and not any(os.environ.get(v) for v in ENV_VARS):
        intensity = "WORLD"  # the demo says so below instead of warning
    source = resolve(intensity)
    # Closed however the demo ends (an interrupted fit included).
    with Ledger.open(ledger) as ledger_obj:
        write_header(out, epochs, source)
        import lightning.pytorch  # noqa: F401 - creates its loggers, so they can be quietened

        # Lightning's banner lines (GPU available, tips, "fit stopped") would bury the
        # demo's output.
        quiet = [
            name
            for name in list(logging.root.manager.loggerDict)
            if name.split(".")[0] in ("lightning", "lightning_fabric", "pytorch_lightning")
        ]
        levels = {name: logging.getLogger(name).level for name in quiet}
        try:
            for name in quiet:
                logging.getLogger(name).setLevel(logging.WARNING)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*does not have many workers.*")
                warnings.filterwarnings("ignore", message=".*deterministic.*")
                warnings.filterwarnings("ignore", message=".*LeafSpec.*")
                # Discarded: the first fit of a process pays for imports, the allocator and
                # caches, which would otherwise count against whichever run goes first.
                _fit(
                    "warm-up", epochs=1, policy=None, intensity=source, ledger=False,
                    samples=samples, seed=seed, out=out, progress=False,
                )  # fmt: skip
                common: dict[str, Any] = {"intensity": source, "ledger": ledger_obj,
                    "samples": samples, "seed": seed, "out": out, "progress": progress}  # fmt: skip
                full_cb = _fit("to max_epochs", epochs=epochs, policy=None, **common)
                early_cb = _fit(
                    "EarlyStopping", epochs=epochs, policy=None, early_stopping=True, **common
                )
                policy = DiminishingReturns(MONITOR, max_loss=max_loss)
                aware_cb = _fit("carbon-aware", epochs=epochs, policy=policy, **common)
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)
        full = tuple(full_cb.records)
        early = tuple(early_cb.records)
        aware = tuple(aware_cb.records)
        decision = aware_cb.tracker.stop_decision
        stopped = bool(decision and decision.stop)
        reason = decision.reason if stopped else ""

        out_dir = Path(output_dir)
        plot_path = plot_run(
            aware,
            out_dir / "carbon-demo.png",
            monitor=MONITOR,
            stopped_early=stopped,
            stop_details=decision.details if stopped and decision else None,
            baseline=full,
            label="carbon-aware run",
            title=f"carbon-callbacks demo: digits MLP, {source}",
        )
        result = DemoResult(
            full_run_id=full_cb.tracker.run_id,
            early_run_id=early_cb.tracker.run_id,
            aware_run_id=aware_cb.tracker.run_id,
            full=full,
            early=early,
            aware=aware,
            stopped=stopped,
            stop_reason=reason,
            plot_path=plot_path,
            ledger=ledger_obj.label,
            seconds=time.perf_counter() - t0,
        )
    write_report(out, result, monitor=MONITOR, epochs=epochs, max_loss=max_loss)
    return result


__all__ = ["MONITOR", "PROJECT", "DemoResult", "run_demo"]
