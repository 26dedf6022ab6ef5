"""``carbon-callbacks demo``: the same small network trained twice, once carbon-aware.

A small MLP learns scikit-learn's bundled handwritten digits (no download) with Lightning: first
to ``max_epochs``, then, from the same seed, under the ``MarginalGain`` policy, which stops at
the shoulder of the accuracy-vs-CO2e curve. The demo prints the full run's per-epoch table,
where and why the carbon-aware run stopped, the energy saved and the accuracy kept; it writes
both runs to the ledger and draws the plot. Lightning, torch and scikit-learn are imported only
when the demo runs.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from carbon_callbacks.records import EpochRecord

PROJECT = "carbon-callbacks-demo"
MONITOR = "val_acc"

# The carbon-aware run stops when the last epochs bought less than this much accuracy (as a
# fraction, 0.002 = 0.2 points) for what one epoch costs here in CO2e. Stated per epoch so the
# rule reads the same on any machine; MarginalGain itself is told the gain per kg.
MIN_GAIN_PER_EPOCH = 0.002


@dataclass(frozen=True)
class DemoResult:
    """What the demo measured, for the printout and for tests."""

    full_run_id: str
    aware_run_id: str
    full: tuple[EpochRecord, ...]
    aware: tuple[EpochRecord, ...]
    stopped: bool
    stop_reason: str
    min_gain_per_kg: float
    plot_path: Path
    ledger: str
    seconds: float

    @property
    def full_energy_kwh(self) -> float:
        """Energy of the run to max_epochs."""
        return self.full[-1].energy_kwh_total if self.full else 0.0

    @property
    def aware_energy_kwh(self) -> float:
        """Energy of the carbon-aware run."""
        return self.aware[-1].energy_kwh_total if self.aware else 0.0

    @property
    def energy_saved(self) -> float:
        """Fraction of the full run's energy the carbon-aware run did not use."""
        full = self.full_energy_kwh
        return 1.0 - self.aware_energy_kwh / full if full > 0 else 0.0

    @property
    def full_accuracy(self) -> float:
        """Final validation accuracy of the full run."""
        return _last_metric(self.full)

    @property
    def aware_accuracy(self) -> float:
        """Final validation accuracy of the carbon-aware run."""
        return _last_metric(self.aware)


def _last_metric(records: Sequence[EpochRecord]) -> float:
    for r in reversed(records):
        v = r.metric(MONITOR)
        if v is not None:
            return v
    return math.nan


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
            acc = (self(x).argmax(dim=1) == y).float().mean()
            self.log(MONITOR, acc, on_epoch=True, prog_bar=False)

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)

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
    policy: Any,
    intensity: Any,
    ledger: Any,
    samples: int,
    seed: int,
    out: TextIO,
    progress: bool,
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
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        callbacks=[carbon, _progress_callback(label, epochs, out, progress)],
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
    window: int = 3,
    patience: int = 2,
    out: TextIO | None = None,
) -> DemoResult:
    """Train the digits MLP to ``epochs``, then carbon-aware, and print the comparison.

    Args:
        epochs: ``max_epochs`` of both runs.
        output_dir: where the PNG is written.
        ledger: the ledger for both runs (default: ``$CARBON_CALLBACKS_LEDGER`` or per-user).
        intensity: gCO2e/kWh or a zone code; default the configured one, else the world mean.
        samples: use only the first N digits (0: all 1,797), for quick checks.
        seed: the seed of both runs.
        progress: print a progress line while training.
        window: ``MarginalGain``'s window (epochs the gain is measured over).
        patience: ``MarginalGain``'s patience (low-gain checks in a row before stopping).
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
    from carbon_callbacks.policies import MarginalGain
    from carbon_callbacks.reports import format_energy, format_grams, gains_per_kg, text_table
    from carbon_callbacks.reports.plot import plot_run

    if intensity is None and not any(os.environ.get(v) for v in ENV_VARS):
        intensity = "WORLD"  # the demo says so below instead of warning
    source = resolve(intensity)
    # Closed however the demo ends (an interrupted fit included).
    with Ledger.open(ledger) as ledger_obj:
        out.write(
            f"carbon-callbacks demo: MLP on sklearn digits, Lightning, CPU, up to {epochs} epochs\n"
            f"intensity: {source} (choose yours with --intensity FR or CARBON_CALLBACKS_ZONE)\n"
        )
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
                full_cb = _fit(
                    "to max_epochs", epochs=epochs, policy=None, intensity=source,
                    ledger=ledger_obj, samples=samples, seed=seed, out=out, progress=progress,
                )  # fmt: skip
                full = tuple(full_cb.records)
                # The threshold: MIN_GAIN_PER_EPOCH of accuracy for the typical epoch's CO2e here.
                per_epoch_kg = _median([r.co2_g for r in full[1:]] or [r.co2_g for r in full]) / 1e3
                min_gain_per_kg = MIN_GAIN_PER_EPOCH / per_epoch_kg if per_epoch_kg > 0 else 0.0
                policy = MarginalGain(
                    MONITOR, mode="max", min_gain_per_kg=min_gain_per_kg, window=window,
                    patience=patience,
                )  # fmt: skip
                aware_cb = _fit(
                    "carbon-aware", epochs=epochs, policy=policy, intensity=source,
                    ledger=ledger_obj, samples=samples, seed=seed, out=out, progress=progress,
                )  # fmt: skip
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)
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
            stop_reason=reason,
            baseline=full,
            label="carbon-aware run",
            title=f"carbon-callbacks demo: digits MLP, {source}",
        )
        result = DemoResult(
            full_run_id=full_cb.tracker.run_id,
            aware_run_id=aware_cb.tracker.run_id,
            full=full,
            aware=aware,
            stopped=stopped,
            stop_reason=reason,
            min_gain_per_kg=min_gain_per_kg,
            plot_path=plot_path,
            ledger=ledger_obj.label,
            seconds=time.perf_counter() - t0,
        )

    # ------------------------------------------------------------------ the printout
    gains = gains_per_kg(list(full), MONITOR, "max")
    # Milli-units when an epoch is below 1 Wh (the usual case for this small demo on a CPU).
    small = _median([r.energy_kwh for r in full]) < 1e-3
    e_unit, e_scale = ("mWh", 1e6) if small else ("Wh", 1e3)
    g_unit, g_scale = ("mg CO2e", 1e3) if small else ("g CO2e", 1.0)
    stop_epoch = aware[-1].epoch if stopped and aware else None
    rows = []
    for rec, gain in zip(full, gains, strict=True):
        note = ""
        if stop_epoch is not None and rec.epoch == stop_epoch:
            note = "<- carbon-aware run stopped here"
        elif stop_epoch is not None and rec.epoch > stop_epoch:
            note = "(saved)"
        rows.append(
            [rec.epoch, rec.metric(MONITOR), rec.energy_kwh * e_scale, rec.co2_g * g_scale,
             "-" if gain is None else f"{gain:,.0f}", note]
        )  # fmt: skip
    out.write("\nrun to max_epochs, per epoch:\n")
    out.write(text_table(["epoch", "accuracy", e_unit, g_unit, "gain per kg", ""], rows) + "\n\n")
    full_total = format_grams(full[-1].co2_g_total) if full else "0 g"
    aware_total = format_grams(aware[-1].co2_g_total) if aware else "0 g"
    out.write(
        f"to max_epochs : {len(full)} epochs, {format_energy(result.full_energy_kwh)}, "
        f"{full_total} CO2e, accuracy {result.full_accuracy:.4f}\n"
        f"carbon-aware  : {len(aware)} epochs, {format_energy(result.aware_energy_kwh)}, "
        f"{aware_total} CO2e, accuracy {result.aware_accuracy:.4f}\n"
    )
    if stopped:
        out.write(f"stopped at epoch {stop_epoch}: {reason}\n")
    else:
        out.write(
            f"the carbon-aware run did not stop before {epochs} epochs (the accuracy still "
            f"gained more than {MIN_GAIN_PER_EPOCH:g} per epoch's CO2e)\n"
        )
    kept = result.aware_accuracy / result.full_accuracy if result.full_accuracy else math.nan
    saved = f"energy saved  : {result.energy_saved:.0%} (carbon-aware run vs full run)"
    if stop_epoch is not None and result.full_energy_kwh > 0:
        # The same question asked inside the full run alone, free of run-to-run noise from
        # other work on the machine: what did the epochs after the stop cost there?
        at_stop = full[min(stop_epoch, len(full) - 1)].energy_kwh_total
        after = 1.0 - at_stop / result.full_energy_kwh
        saved += f"; {after:.0%} of the full run's energy went to epochs after {stop_epoch}"
    out.write(
        f"{saved}\n"
        f"accuracy kept : {kept:.1%} ({result.aware_accuracy:.4f} of {result.full_accuracy:.4f})\n"
        f"rule          : MarginalGain(min_gain_per_kg={min_gain_per_kg:,.0f}), i.e. "
        f"{MIN_GAIN_PER_EPOCH:g} accuracy per epoch's {per_epoch_kg * 1e6:.3g} mg CO2e\n"
        f"plot          : {plot_path.resolve()}\n"
        f"ledger        : {result.ledger} (runs {result.full_run_id}, {result.aware_run_id}); "
        f"see `carbon-callbacks show {result.aware_run_id}`\n"
        f"took {result.seconds:.0f} s\n"
    )
    out.flush()
    return result


def _median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    if not s:
        return 0.0
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2.0
