"""The Overview page's figures: ``report``'s totals per team, project, user and month.

The sums are ``report.summarize``'s, over the runs ``Ledger.runs`` returns for the same
filters, so the page and ``carbon-callbacks report --by KEY`` show the same numbers. Added
here: the ranges, the share of ended runs that stopped early, and the energy their early stop
saved where the run says how many epochs it was set up for.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from carbon_callbacks.ledger import Ledger, RunInfo
from carbon_callbacks.reports import ReportRow, group_value, summarize

GROUPINGS = ("team", "project", "user", "month")
"""The tables the Overview shows, in order."""


def planned_epochs(run: RunInfo) -> int | None:
    """The epochs a run was set up for, where its adapter recorded them, else None.

    Lightning records the trainer's ``max_epochs``, Keras ``fit(epochs=)`` and transformers
    ``num_train_epochs`` (a whole number of epochs only).
    """
    for value in (
        run.metadata.get("max_epochs"),
        run.hyperparameters.get("epochs"),
        run.hyperparameters.get("num_train_epochs"),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if value >= 1 and float(value).is_integer():
            return int(value)
    return None


def energy_saved_kwh(run: RunInfo) -> float | None:
    """Energy an early stop saved: the epochs not trained at the run's mean epoch energy.

    None unless the run stopped early and says how many epochs it was set up for: an
    estimate that assumes the untrained epochs would have cost what the trained ones did.
    """
    planned = planned_epochs(run)
    if not run.stopped_early or planned is None or run.epochs <= 0:
        return None
    return max(planned - run.epochs, 0) * run.energy_kwh / run.epochs


@dataclass(frozen=True)
class GroupRow:
    """One row of an Overview table: ``report``'s totals and what the Overview adds."""

    report: ReportRow
    saved_kwh: float
    """Energy saved by early stops (estimated), over the runs where it is known."""
    saved_runs: int
    """Stopped runs whose saving is known."""

    @property
    def name(self) -> str:
        return " / ".join(self.report.group) if self.report.group else "all runs"

    @property
    def stopped_share(self) -> float | None:
        """Of the runs that ended, the share that stopped early (None when none ended)."""
        ended = self.report.finished
        return self.report.stopped_early / ended if ended else None


@dataclass(frozen=True)
class Overview:
    """Totals for every run that matches the filters, and the same per grouping."""

    total: GroupRow | None
    tables: Mapping[str, Sequence[GroupRow]]
    runs: int


def _rows(
    runs: Sequence[RunInfo], by: Sequence[str], saved: Mapping[str, float]
) -> list[GroupRow]:
    found: dict[tuple[str, ...], list[float]] = {}
    for run in runs:
        if run.run_id in saved:
            found.setdefault(tuple(group_value(run, k) for k in by), []).append(saved[run.run_id])
    out = []
    for row in summarize(runs, by):
        kwh = found.get(row.group, [])
        out.append(GroupRow(row, math.fsum(kwh), len(kwh)))
    return out


def overview(ledger: Ledger, ledger_args: Mapping[str, Any]) -> Overview:
    """The Overview of the runs ``Ledger.runs(**ledger_args)`` returns.

    Args:
        ledger: the ledger.
        ledger_args: ``Ledger.runs`` filters (``RunFilters.ledger_args()``).

    Returns:
        The totals, and one table per grouping in ``GROUPINGS``.
    """
    runs = ledger.runs(**ledger_args)
    saved = {r.run_id: kwh for r in runs if (kwh := energy_saved_kwh(r)) is not None}
    if not runs:
        return Overview(total=None, tables={k: [] for k in GROUPINGS}, runs=0)
    [total] = _rows(runs, (), saved)
    return Overview(
        total=total,
        tables={key: _rows(runs, (key,), saved) for key in GROUPINGS},
        runs=len(runs),
    )
