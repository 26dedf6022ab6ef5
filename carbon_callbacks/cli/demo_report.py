"""What ``carbon-callbacks demo`` prints, and the result it prints from.

``demo.py`` runs the fits; this module holds what they measured (``DemoResult``) and turns it
into the lines the user reads: the header, the full run's per-epoch table, where and why each
run stopped, the energy each used and the accuracy each kept, and the benchmark quote.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from carbon_callbacks.records import EpochRecord
from carbon_callbacks.reports import format_energy, format_grams, text_table

if TYPE_CHECKING:
    from carbon_callbacks.intensity import IntensitySource

BENCHMARK = (
    "benchmark (benchmarks/RESULTS.md, 10 tasks x 5 seeds, vs EarlyStopping(val_loss, "
    "patience=5)): DiminishingReturns() at its default trained 16.2 epochs to EarlyStopping's "
    "17.6: 5% less energy (± 2%) for -0.09 pt test accuracy (± 0.04; worst task -0.35 pt). It "
    "never trains longer (its patience net is that EarlyStopping); the saving is its forecast "
    "stopping where accuracy has levelled off while val_loss still falls (digits CNN 19%, "
    "GRU 29%). Target 25%: not met; the best stop known in hindsight saves 21%"
)
"""What one demo run cannot show, quoted from the benchmark so the printout is not a lucky run."""


@dataclass(frozen=True)
class DemoResult:
    """What the demo measured, for the printout and for tests."""

    full_run_id: str
    early_run_id: str
    aware_run_id: str
    full: tuple[EpochRecord, ...]
    early: tuple[EpochRecord, ...]
    aware: tuple[EpochRecord, ...]
    stopped: bool
    stop_reason: str
    plot_path: Path
    ledger: str
    seconds: float

    @property
    def energy_saved(self) -> float | None:
        """Fraction of the full run's energy the carbon-aware run did not use; None (no claim)
        when both trained the same number of epochs."""
        return _saved(self.full, len(self.aware), len(self.full))

    @property
    def energy_saved_vs_early(self) -> float | None:
        """The same against the EarlyStopping(val_loss) run (negative: it used more)."""
        return _saved(self.full, len(self.aware), len(self.early))


def _saved(full: Sequence[EpochRecord], mine: int, theirs: int) -> float | None:
    """1 - energy of ``mine`` epochs / energy of ``theirs`` epochs, both read on the full run.

    The three runs follow one curve (same seed), so the full run's cumulative energy at each
    stop compares the stops without the run-to-run noise of separate measurements (two
    identical 30-epoch runs measured 13% apart here).
    """
    if mine == theirs or not (0 < mine <= len(full)) or not (0 < theirs <= len(full)):
        return None
    other = full[theirs - 1].energy_kwh_total
    return 1.0 - full[mine - 1].energy_kwh_total / other if other > 0 else None


def write_header(out: TextIO, epochs: int, source: IntensitySource) -> None:
    """The two lines printed before training: what is trained, and at which intensity."""
    out.write(
        f"carbon-callbacks demo: MLP on sklearn digits, Lightning, CPU, up to {epochs} epochs\n"
        f"intensity: {source} (choose yours with --intensity FR or CARBON_CALLBACKS_ZONE)\n"
    )


def write_report(
    out: TextIO, result: DemoResult, *, monitor: str, epochs: int, max_loss: float
) -> None:
    """The printout after the three fits: table, stops, energy, benchmark quote, where to look.

    Args:
        out: Where to print.
        result: What the demo measured.
        monitor: The accuracy metric the runs logged.
        epochs: ``max_epochs`` of the runs.
        max_loss: ``DiminishingReturns``' max_loss, named when the carbon-aware run did not stop.
    """
    full, early, aware = result.full, result.early, result.aware
    # Milli-units when an epoch is below 1 Wh (the usual case for this small demo on a CPU).
    small = _median([r.energy_kwh for r in full]) < 1e-3
    e_unit, e_scale = ("mWh", 1e6) if small else ("Wh", 1e3)
    g_unit, g_scale = ("mg CO2e", 1e3) if small else ("g CO2e", 1.0)
    ends = {"EarlyStopping(val_loss) stopped": early, "carbon-aware stopped": aware}
    rows = []
    for rec in full:
        notes = [f"<- {what} here" for what, rs in ends.items()
                 if len(rs) < len(full) and rs and rs[-1].epoch == rec.epoch]  # fmt: skip
        rows.append(
            [rec.epoch, rec.metric(monitor), rec.metric("val_loss"), rec.energy_kwh * e_scale,
             rec.co2_g * g_scale, " ".join(notes)]
        )  # fmt: skip
    out.write("\nrun to max_epochs, per epoch:\n")
    out.write(
        text_table(["epoch", "accuracy", "val_loss", e_unit, g_unit, ""], rows) + "\n\n"
    )
    for label, rs in (("to max_epochs", full), ("EarlyStopping", early), ("carbon-aware", aware)):
        best = max((r.metric(monitor) or 0.0 for r in rs), default=math.nan)
        total = format_grams(rs[-1].co2_g_total) if rs else "0 g"
        energy = format_energy(rs[-1].energy_kwh_total) if rs else "0 kWh"
        out.write(
            f"{label:<14}: {len(rs)} epochs, {energy}, {total} CO2e, best accuracy {best:.4f}\n"
        )
    if result.stopped:
        out.write(f"carbon-aware stopped at epoch {aware[-1].epoch}: {result.stop_reason}\n")
    else:
        out.write(
            f"the carbon-aware run did not stop before {epochs} epochs: the forecast could not "
            f"rule out a gain of {max_loss:g} accuracy in the epochs left\n"
        )
    for label, value, other in (
        ("vs max_epochs", result.energy_saved, full),
        ("vs EarlyStopping", result.energy_saved_vs_early, early),
    ):
        if value is None:
            out.write(f"energy {label}: no saving claimed (both trained {len(other)} epochs)\n")
        else:
            word = "saved" if value >= 0 else "more"
            out.write(
                f"energy {label}: {abs(value):.0%} {word} ({len(aware)} epochs vs {len(other)},"
                " read on the full run's epochs, after a discarded warm-up fit)\n"
            )
    out.write(
        f"{BENCHMARK}\n"
        f"plot          : {result.plot_path.resolve()}\n"
        f"ledger        : {result.ledger} (runs {result.full_run_id}, {result.early_run_id}, "
        f"{result.aware_run_id}); see `carbon-callbacks show {result.aware_run_id}`\n"
        f"took {result.seconds:.0f} s\n"
        f"in the browser: carbon-callbacks serve --ledger {shlex.quote(result.ledger)} "
        f"--compare {result.full_run_id} {result.early_run_id} {result.aware_run_id}\n"
    )
    out.flush()


def _median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    if not s:
        return 0.0
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2.0
