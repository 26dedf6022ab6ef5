"""The Compare page: runs (or an Optuna study's trials) as a metric against CO2e.

Each run is one point: its best value of the metric (what a checkpoint of the best epoch
keeps) against the CO2e it spent in all. The Pareto front is the points no other point beats on
both; its knee is where more CO2e stops buying much metric (the front point farthest from the
chord joining its two ends, both axes scaled to [0, 1], as ``integrations.optuna.pareto_knee``
finds it), and there is no knee with fewer than three points on the front.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from carbon_callbacks.ledger import Ledger, RunInfo
from carbon_callbacks.policies import metric_direction
from carbon_callbacks.records import EpochRecord
from carbon_callbacks.reports import train_records
from carbon_callbacks.serve.runs import best_metric, run_monitor, run_name, run_status

MAX_RUNS = 200
"""How many runs one comparison draws (the Runs table picks them)."""


@dataclass(frozen=True)
class Point:
    """One run or trial on the Compare plot."""

    key: str
    """The run id, or ``trial N``."""
    label: str
    metric: float | None
    co2_g: float
    energy_kwh: float
    status: str
    """``completed``, ``stopped early``, ``running/killed``, or an Optuna trial state."""
    curve: tuple[tuple[float, float], ...] = ()
    """(cumulative CO2e, metric) along the run, for the curves plot."""
    detail: str = ""


def pareto_front(points: Sequence[tuple[float, float]], maximize: bool) -> list[int]:
    """Indices of the (co2, metric) points no other point beats on both, by ascending CO2e.

    A point is beaten when another has at most its CO2e and at least as good a metric, and is
    strictly better on one of the two.
    """
    sign = 1.0 if maximize else -1.0
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -sign * points[i][1]))
    front: list[int] = []
    best = -math.inf
    for i in order:
        score = sign * points[i][1]
        if score > best:
            front.append(i)
            best = score
    return front


def front_knee(points: Sequence[tuple[float, float]], maximize: bool) -> int | None:
    """The knee among front points given by ascending CO2e; None with fewer than three."""
    if len(points) < 3:
        return None
    sign = 1.0 if maximize else -1.0
    xs = [p[0] for p in points]
    ys = [sign * p[1] for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    if x1 <= x0 or y1 <= y0:
        return None
    norm = [((x - x0) / (x1 - x0), (y - y0) / (y1 - y0)) for x, y in zip(xs, ys, strict=True)]
    (ax, ay), (bx, by) = norm[0], norm[-1]
    length = math.hypot(bx - ax, by - ay)
    best, best_d = None, 1e-12
    for i, (x, y) in enumerate(norm[1:-1], 1):
        # Above the chord from the cheapest point to the best one: more metric per CO2e.
        d = ((bx - ax) * (y - ay) - (by - ay) * (x - ax)) / length
        if d > best_d:
            best, best_d = i, d
    return best


@dataclass(frozen=True)
class Comparison:
    """The points of a comparison, which of them form the front, and its knee."""

    title: str
    metric: str | None
    direction: str
    points: Sequence[Point]
    front: Sequence[str]
    """Keys of the front's points, by ascending CO2e."""
    knee: str | None
    metrics: Sequence[str] = ()
    note: str = ""

    @property
    def plotted(self) -> list[Point]:
        return [p for p in self.points if p.metric is not None]


def build_comparison(
    title: str,
    points: Sequence[Point],
    metric: str | None,
    direction: str,
    *,
    front_states: frozenset[str] = frozenset({"completed", "stopped early"}),
    metrics: Sequence[str] = (),
    note: str = "",
) -> Comparison:
    """Find the front and knee among the points whose status is in ``front_states``."""
    eligible = [p for p in points if p.metric is not None and p.status in front_states]
    maximize = direction == "max"
    pairs = [(p.co2_g, p.metric) for p in eligible if p.metric is not None]
    front = [eligible[i] for i in pareto_front(pairs, maximize)]
    knee = front_knee([(p.co2_g, p.metric) for p in front if p.metric is not None], maximize)
    return Comparison(
        title=title,
        metric=metric,
        direction=direction,
        points=points,
        front=[p.key for p in front],
        knee=front[knee].key if knee is not None else None,
        metrics=metrics,
        note=note,
    )


def _curve(records: Sequence[EpochRecord], metric: str) -> tuple[tuple[float, float], ...]:
    return tuple(
        (r.co2_g_total, v)
        for r in train_records(records)
        if (v := r.metric(metric)) is not None and math.isfinite(v)
    )


def compare_runs(ledger: Ledger, run_ids: Sequence[str], metric: str | None = None) -> Comparison:
    """Runs of the ledger as points of ``metric`` (default: the first run's monitor).

    Raises:
        LedgerError: for an unknown or ambiguous run id.
        ValueError: for more than ``MAX_RUNS`` runs.
    """
    if len(run_ids) > MAX_RUNS:
        raise ValueError(f"run: compare at most {MAX_RUNS} runs at once, got {len(run_ids)}")
    runs: list[RunInfo] = []
    for run_id in run_ids:
        run = ledger.run(run_id)
        if all(r.run_id != run.run_id for r in runs):
            runs.append(run)
    runs.sort(key=lambda r: (r.start_wall, r.run_id))
    records = {r.run_id: ledger.epochs(r.run_id) for r in runs}
    names: list[str] = []
    for recs in records.values():
        for rec in recs:
            names.extend(k for k in rec.metrics if k not in names)
    if metric not in names:
        metric = next((m for r in runs if (m := run_monitor(r, records[r.run_id]))), None)
    direction = (metric_direction(metric) if metric else None) or "min"
    points = []
    for run in runs:
        best = best_metric(records[run.run_id], metric, direction)
        points.append(
            Point(
                key=run.run_id,
                label=run_name(run) or run.run_id,
                metric=best.value if best else None,
                co2_g=run.co2_g,
                energy_kwh=run.energy_kwh,
                status=run_status(run),
                curve=_curve(records[run.run_id], metric) if metric else (),
                detail=run.stop_reason,
            )
        )
    return build_comparison(
        f"{len(runs)} run{'s' if len(runs) != 1 else ''}", points, metric, direction,
        metrics=names,
    )  # fmt: skip

