"""Team reports over the ledger: totals by project/team/user/month/framework, per-run and
per-epoch rows.

Everything here is plain computation on ``RunInfo``/``EpochRecord`` values, so the CLI, the demo
and users' notebooks share one set of sums. Totals are the sums of the ledger's epoch rows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from carbon_callbacks.ledger import RunInfo
from carbon_callbacks.policies import metric_direction
from carbon_callbacks.records import EpochRecord
from carbon_callbacks.reports.format import (
    Equivalents,
    equivalents,
    format_energy,
    format_grams,
    format_time,
)

# --------------------------------------------------------------------------- totals

GROUP_KEYS = ("project", "team", "user", "month", "framework", "host", "source")
"""What ``summarize`` can group by (``month`` is the run's start month, UTC)."""


def group_value(run: RunInfo, key: str) -> str:
    """The value of one grouping key for a run ("(none)" when the run does not say)."""
    if key not in GROUP_KEYS:
        raise ValueError(f"cannot group by {key!r}; choose from {', '.join(GROUP_KEYS)}")
    if key == "month":
        value = time.strftime("%Y-%m", time.gmtime(run.start_wall)) if run.start_wall else ""
    else:
        value = getattr(run, key)
    return value or "(none)"


@dataclass(frozen=True)
class ReportRow:
    """Totals of one group of runs."""

    group: tuple[str, ...]
    runs: int
    epochs: int
    energy_kwh: float
    co2_g: float
    hours: float
    energy_kwh_low: float = 0.0
    energy_kwh_high: float = 0.0
    co2_g_low: float = 0.0
    co2_g_high: float = 0.0
    stopped_early: int = 0
    """Runs a rule, a pruner or the user ended early."""
    finished: int = 0
    """Runs whose end is recorded (the rest are running, or were killed)."""

    @property
    def equivalents(self) -> Equivalents:
        """Car-km and phone-charge equivalents of the totals."""
        return equivalents(self.co2_g, self.energy_kwh)


def summarize(runs: Iterable[RunInfo], by: Sequence[str] = ("project",)) -> list[ReportRow]:
    """Totals per group, largest CO2e first.

    Args:
        runs: the runs (``Ledger.runs()``); their totals are sums over their epoch rows.
        by: grouping keys from ``GROUP_KEYS``; empty for one grand total.

    Returns:
        One row per group.

    Raises:
        ValueError: for an unknown grouping key.
    """
    for key in by:
        if key not in GROUP_KEYS:
            raise ValueError(f"cannot group by {key!r}; choose from {', '.join(GROUP_KEYS)}")
    groups: dict[tuple[str, ...], list[RunInfo]] = {}
    for run in runs:
        groups.setdefault(tuple(group_value(run, k) for k in by), []).append(run)
    rows = [
        ReportRow(
            group=g,
            runs=len(rs),
            epochs=sum(r.epochs for r in rs),
            energy_kwh=math.fsum(r.energy_kwh for r in rs),
            co2_g=math.fsum(r.co2_g for r in rs),
            hours=math.fsum(r.seconds for r in rs) / 3600.0,
            energy_kwh_low=math.fsum(r.energy_kwh_low for r in rs),
            energy_kwh_high=math.fsum(r.energy_kwh_high for r in rs),
            co2_g_low=math.fsum(r.co2_g_low for r in rs),
            co2_g_high=math.fsum(r.co2_g_high for r in rs),
            stopped_early=sum(1 for r in rs if r.stopped_early),
            finished=sum(1 for r in rs if r.finished),
        )
        for g, rs in groups.items()
    ]
    return sorted(rows, key=lambda r: (-r.co2_g, r.group))


def report_rows(
    rows: Sequence[ReportRow], by: Sequence[str], *, total: bool = True
) -> tuple[list[str], list[list[Any]]]:
    """Headers and cells for a report (numbers in base units, so CSV/JSON stay exact)."""
    headers = [*by, "runs", "epochs", "hours", "energy_kwh", "co2_g", "car_km", "phone_charges"]
    cells = []
    for r in rows:
        eq = r.equivalents
        cells.append(
            [
                *r.group,
                r.runs,
                r.epochs,
                r.hours,
                r.energy_kwh,
                r.co2_g,
                eq.car_km,
                eq.phone_charges,
            ]
        )
    if total and len(rows) > 1:
        t = ReportRow(
            group=("TOTAL",) + ("",) * (len(by) - 1) if by else (),
            runs=sum(r.runs for r in rows),
            epochs=sum(r.epochs for r in rows),
            energy_kwh=math.fsum(r.energy_kwh for r in rows),
            co2_g=math.fsum(r.co2_g for r in rows),
            hours=math.fsum(r.hours for r in rows),
        )
        eq = t.equivalents
        cells.append(
            [
                *t.group,
                t.runs,
                t.epochs,
                t.hours,
                t.energy_kwh,
                t.co2_g,
                eq.car_km,
                eq.phone_charges,
            ]
        )
    return headers, cells


def runs_rows(
    runs: Sequence[RunInfo], *, readable: bool = True
) -> tuple[list[str], list[list[Any]]]:
    """Headers and cells for the list of runs.

    Args:
        runs: the runs.
        readable: energy and CO2e in readable units for a table (``1.2 mWh``); False for
            numbers in base units (``energy_kwh``, ``co2_g``) and an ISO start time, as CSV
            and JSON give them, so a spreadsheet can add them up.
    """
    headers = [
        "run_id",
        "started (UTC)" if readable else "started_utc",
        "project",
        "team",
        "user",
        "framework",
        "epochs",
        "energy" if readable else "energy_kwh",
        "co2e" if readable else "co2_g",
        "status",
    ]
    cells = []
    for r in runs:
        status = run_status(r)
        energy: Any
        co2: Any
        if readable:
            started, energy, co2 = (
                format_time(r.start_wall),
                format_energy(r.energy_kwh),
                format_grams(r.co2_g),
            )
        else:
            started = (
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r.start_wall))
                if r.start_wall
                else ""
            )
            energy, co2 = r.energy_kwh, r.co2_g
        cells.append(
            [
                r.run_id,
                started,
                r.project or "-",
                r.team or "-",
                r.user or "-",
                r.framework or "-",
                r.epochs,
                energy,
                co2,
                status,
            ]
        )
    return headers, cells


# --------------------------------------------------------------------------- per epoch


class LoggedEpoch(Protocol):
    """An epoch's logged metrics: an ``EpochRecord``, or the lighter ``EpochMetrics`` a page of
    runs reads from the ledger."""

    @property
    def epoch(self) -> int: ...

    @property
    def stage(self) -> str: ...

    @property
    def metrics(self) -> Mapping[str, float]: ...

    def metric(self, name: str) -> float | None: ...


_Epoch = TypeVar("_Epoch", bound=LoggedEpoch)


def pick_monitor(records: Sequence[LoggedEpoch], preferred: str | None = None) -> str | None:
    """The metric to show: ``preferred`` if logged, else a validation metric, else any."""
    names: dict[str, None] = {}
    for rec in records:
        names.update(dict.fromkeys(rec.metrics))
    return choose_monitor(list(names), preferred)


def choose_monitor(names: Sequence[str], preferred: str | None = None) -> str | None:
    """``pick_monitor`` over the metric names a run logged, in the order they first appear."""
    if preferred and preferred in names:
        return preferred
    for want in ("val_acc", "val_accuracy", "val_loss", "eval_loss"):
        if want in names:
            return want
    for name in names:
        if name.startswith(("val", "eval")):
            return name
    return names[0] if names else None


def train_records(records: Sequence[_Epoch]) -> list[_Epoch]:
    """The training-epoch records (not evaluation or imported totals), or all if none."""
    train = [r for r in records if r.stage == "train"]
    return train or list(records)


def _gain_step(monitor: str, mode: str | None) -> Callable[[EpochRecord], float | None]:
    """A function giving each record's gain per kg over the one before it was given."""
    if mode not in (None, "min", "max"):
        raise ValueError(
            f"mode must be 'min', 'max' or None (read from the metric's name), got {mode!r}"
        )
    sign = 1.0 if (mode or metric_direction(monitor) or "min") == "max" else -1.0
    prev: float | None = None

    def step(rec: EpochRecord) -> float | None:
        nonlocal prev
        value = rec.metric(monitor)
        gain = None
        if prev is not None and value is not None and rec.co2_g > 0:
            gain = sign * (value - prev) / (rec.co2_g / 1000.0)
        if value is not None:
            prev = value
        return gain

    return step


def gains_per_kg(
    records: Sequence[EpochRecord], monitor: str, mode: str | None = None
) -> list[float | None]:
    """Metric improvement per kg CO2e of each epoch over the one before (None for the first).

    Positive means better whatever the metric's direction (a loss going down is a gain).

    Args:
        records: The run's training records, oldest first.
        monitor: The metric to measure the gain of.
        mode: ``"max"``/``"min"``; default read from the metric's name (``metric_direction``).

    Raises:
        ValueError: When ``mode`` is not "min", "max" or None.
    """
    step = _gain_step(monitor, mode)
    return [step(rec) for rec in records]


def epochs_headers(monitor: str | None) -> list[str]:
    """The columns of a run's per-epoch table."""
    headers = ["epoch", "stage", "seconds", "Wh", "g CO2e", "W", "g/kWh"]
    if monitor:
        headers += [monitor, "gain/kg"]
    return headers + ["CO2e total", "methods"]


def epoch_cells(
    records: Iterable[EpochRecord], monitor: str | None, *, train_only: bool = True
) -> Iterator[list[Any]]:
    """The per-epoch table's rows, one record at a time (``show`` streams long runs this way).

    Args:
        records: the run's records, oldest first.
        monitor: the metric shown, with its gain per kg (None: neither).
        train_only: gains over training records only (None for the others), as
            ``train_records`` chooses when the run has any; False: over every record.
    """
    step = _gain_step(monitor, None) if monitor else None
    for rec in records:
        row: list[Any] = [
            rec.epoch,
            f"{rec.stage} (partial)" if rec.partial else rec.stage,
            round(rec.seconds, 3),
            rec.energy_kwh * 1000.0,
            rec.co2_g,
            rec.power_w,
            rec.intensity_g_per_kwh,
        ]
        if monitor and step is not None:
            gain = step(rec) if rec.stage == "train" or not train_only else None
            row += [rec.metric(monitor), gain]
        methods = ",".join(f"{k}:{v}" for k, v in sorted(rec.methods.items())) or "-"
        row += [format_grams(rec.co2_g_total), methods]
        yield row


def epochs_rows(
    records: Sequence[EpochRecord], monitor: str | None = None
) -> tuple[list[str], list[list[Any]]]:
    """Headers and cells for a run's per-epoch table (``carbon-callbacks show``)."""
    monitor = pick_monitor(records, monitor)
    train_only = any(r.stage == "train" for r in records)
    return epochs_headers(monitor), list(epoch_cells(records, monitor, train_only=train_only))


def run_summary_text(run: RunInfo) -> str:
    """A few lines about one run: who, where, totals, equivalents and how it ended."""
    lines = [
        f"run {run.run_id}  project={run.project or '-'}  team={run.team or '-'}  "
        f"user={run.user or '-'}  framework={run.framework or '-'}",
        f"started {format_time(run.start_wall)} UTC on {run.host or '-'}"
        + (f", git {run.git_commit[:10]}" if run.git_commit else ""),
        f"location {run.location or '-'}; intensity: {run.intensity_source or '-'}",
        f"total {format_energy(run.energy_kwh)}, {format_grams(run.co2_g)} CO2e over "
        f"{run.epochs} records ({equivalents(run.co2_g, run.energy_kwh)})",
    ]
    if run.hyperparameters:
        lines.append(
            "hyperparameters: "
            + ", ".join(f"{k}={v}" for k, v in sorted(run.hyperparameters.items()))
        )
    lines.append(ending_text(run))
    return "\n".join(lines)


def run_status(run: RunInfo) -> str:
    """A run's status in a few words for a table: how it ended and, in brackets, who or what
    ended it (``stopped early (policy)``, ``failed (ValueError)``, ``interrupted (SIGTERM)``)."""
    if not run.finished:
        return "running/killed"
    if run.status == "stopped":
        return f"stopped early ({run.stopped_by})" if run.stopped_by else "stopped early"
    if run.status == "failed":
        return f"failed ({run.error_type})" if run.error_type else "failed"
    if run.status == "interrupted":
        return f"interrupted ({run.stop_reason})" if run.stop_reason else "interrupted"
    return run.status


def ending_text(run: RunInfo) -> str:
    """How a run ended, and why, in one line (``carbon-callbacks show``, the plot's title)."""
    if not run.finished:
        return "not ended: still running, or killed (its finished epochs are kept)"
    why = run.stop_reason
    if run.status == "stopped":
        who = f" (stopped by {run.stopped_by})" if run.stopped_by else ""
        return f"stopped early: {why or 'no reason recorded'}{who}"
    if run.status == "failed":
        return "failed: " + ": ".join(x for x in (run.error_type, why) if x)
    if run.status == "interrupted":
        return f"interrupted: {why or 'no signal recorded'}"
    return "completed: ran to its end"
