"""The Runs table and the One run page: what each shows, computed from the ledger.

The table's sorting, filtering and paging happen in the database (``Ledger.runs_page``); only
the page's runs are read further (their epoch rows, for the best metric).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from carbon_callbacks.ledger import EpochMetrics, Ledger, RunInfo
from carbon_callbacks.policies import metric_direction
from carbon_callbacks.records import EpochRecord
from carbon_callbacks.reports import RegionFootprint, compare_regions, pick_monitor, train_records
from carbon_callbacks.reports.plot import knee_epoch
from carbon_callbacks.serve.params import RunsQuery

# Metadata the library writes itself; the rest is the user's own (shown as the run's tags).
_OWN_KEYS = frozenset(
    {"monitor", "policy", "pue", "resumed_from", "max_epochs", "world_size", "model", "backend",
     "name", "run_name"}
)  # fmt: skip

REGION_KINDS: Mapping[str, frozenset[str]] = {
    "all": frozenset(),
    "country": frozenset({"country"}),
    "cloud": frozenset({"gcp", "aws", "azure"}),
}
"""The ``kind`` choices of the regions table, as ``carbon-callbacks compare-regions --kind``."""


def run_name(run: RunInfo) -> str:
    """The name the user gave the run (metadata ``name`` or ``run_name``), else ""."""
    for key in ("name", "run_name"):
        value = run.metadata.get(key)
        if value not in (None, ""):
            return str(value)
    return ""


def run_tags(run: RunInfo) -> dict[str, str]:
    """The user's own metadata keys and values, as text (what the ``tag`` filter matches)."""
    return {
        k: str(v)
        for k, v in sorted(run.metadata.items())
        if k not in _OWN_KEYS and not isinstance(v, (dict, list))
    }


def run_status(run: RunInfo) -> str:
    """``running/killed`` (no end recorded), ``stopped early``, ``completed``, ``failed`` or
    ``interrupted``."""
    if not run.finished:
        return "running/killed"
    if run.status in ("failed", "interrupted"):
        return run.status
    return "stopped early" if run.stopped_early else "completed"


@dataclass(frozen=True)
class BestMetric:
    """A run's best value of its monitored metric, in the metric's own direction."""

    name: str
    value: float
    direction: str
    epoch: int


def run_monitor(run: RunInfo, records: Sequence[EpochRecord | EpochMetrics]) -> str | None:
    """The metric a run is judged by: the one it monitored, else a validation metric."""
    preferred = run.metadata.get("monitor")
    chosen = preferred if isinstance(preferred, str) else None
    return pick_monitor(records, chosen)


def best_metric(
    records: Sequence[EpochRecord | EpochMetrics], monitor: str | None, direction: str | None = None
) -> BestMetric | None:
    """The best finite value of ``monitor`` over the training records (None if never logged).

    The direction is ``direction``, else read from the metric's name (``metric_direction``),
    and ``"min"`` for a name that does not say, as ``carbon-callbacks show`` reads it.
    """
    if not monitor:
        return None
    direction = direction or metric_direction(monitor) or "min"
    points = [
        (v, r.epoch)
        for r in train_records(records)
        if (v := r.metric(monitor)) is not None and math.isfinite(v)
    ]
    if not points:
        return None
    pick = max if direction == "max" else min
    value, epoch = pick(points, key=lambda p: p[0])
    return BestMetric(monitor, value, direction, epoch)


@dataclass(frozen=True)
class RunRow:
    """One row of the Runs table."""

    run: RunInfo
    name: str
    status: str
    best: BestMetric | None
    tags: Mapping[str, str]


@dataclass(frozen=True)
class RunsTable:
    """One page of the Runs table and where it is in the whole."""

    rows: Sequence[RunRow]
    total: int
    query: RunsQuery

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.query.per_page))

    @property
    def first(self) -> int:
        return min(self.total, (self.query.page - 1) * self.query.per_page + 1)

    @property
    def last(self) -> int:
        return min(self.total, self.query.page * self.query.per_page)


def runs_table(ledger: Ledger, query: RunsQuery) -> RunsTable:
    """The page of runs ``query`` asks for (a page past the end shows no rows)."""
    filters = query.filters
    args = filters.ledger_args()
    page = ledger.runs_page(
        order_by=query.sort,
        descending=query.descending,
        limit=query.per_page,
        offset=(query.page - 1) * query.per_page,
        framework=filters.framework,
        status=filters.status,
        **args,
    )
    metrics = ledger.epoch_metrics([run.run_id for run in page.runs])
    rows = []
    for run in page.runs:
        records = metrics.get(run.run_id, [])
        rows.append(
            RunRow(
                run=run,
                name=run_name(run),
                status=run_status(run),
                best=best_metric(records, run_monitor(run, records)),
                tags=run_tags(run),
            )
        )
    return RunsTable(rows=rows, total=page.total, query=query)


@dataclass(frozen=True)
class HourIntensity:
    """The carbon intensity a run used during one UTC hour, weighted by its energy then."""

    hour: float
    """The hour's start (wall seconds, UTC)."""
    energy_kwh: float
    co2_g: float
    g_per_kwh: float
    sources: tuple[str, ...]


def hourly_intensity(records: Sequence[EpochRecord]) -> list[HourIntensity]:
    """Hour by hour (UTC), the intensity the run's records used and the energy it applied to.

    An epoch that spans several hours shares its energy among them by the time it spent in
    each, so an hour's intensity is the energy-weighted mean of the epochs that ran in it.
    """
    acc: dict[float, list[float]] = {}
    sources: dict[float, set[str]] = {}
    for rec in records:
        start, end = rec.start_wall, max(rec.end_wall, rec.start_wall)
        span = end - start
        hour = math.floor(start / 3600.0) * 3600.0
        while True:
            overlap = min(end, hour + 3600.0) - max(start, hour)
            share = overlap / span if span > 0 else 1.0
            if share > 0 or span == 0:
                kwh = rec.energy_kwh * share
                slot = acc.setdefault(hour, [0.0, 0.0, 0.0])
                slot[0] += kwh
                slot[1] += rec.co2_g * share
                slot[2] += kwh * rec.intensity_g_per_kwh
                if rec.intensity_source:
                    sources.setdefault(hour, set()).add(rec.intensity_source)
            hour += 3600.0
            if hour >= end:
                break
    return [
        HourIntensity(
            hour=h,
            energy_kwh=kwh,
            co2_g=g,
            g_per_kwh=weighted / kwh if kwh > 0 else 0.0,
            sources=tuple(sorted(sources.get(h, ()))),
        )
        for h, (kwh, g, weighted) in sorted(acc.items())
    ]


@dataclass(frozen=True)
class RunDetail:
    """Everything the One run page shows."""

    run: RunInfo
    name: str
    status: str
    tags: Mapping[str, str]
    records: Sequence[EpochRecord]
    train: Sequence[EpochRecord]
    metrics: Sequence[str]
    monitor: str | None
    direction: str
    best: BestMetric | None
    shoulder: int | None
    stop_epoch: int | None
    regions: Sequence[RegionFootprint]
    region_ranks: Mapping[str, int]
    """Each zone's rank, lowest CO2e first, among the zones of ``region_kind``."""
    region_kind: str
    own_region: RegionFootprint | None
    hours: Sequence[HourIntensity]


def run_detail(
    ledger: Ledger, run_id: str, *, metric: str | None = None, region_kind: str = "all",
    top: int = 15,
) -> RunDetail:  # fmt: skip
    """One run with its records, the marks on its curve, its regions and hourly intensity.

    Args:
        ledger: the ledger.
        run_id: the run's id or a unique prefix of it.
        metric: the metric to draw (default: the run's monitored one).
        region_kind: ``all``, ``country`` or ``cloud`` (see ``REGION_KINDS``).
        top: how many of the lowest-CO2e zones to list.

    Raises:
        LedgerError: for an unknown or ambiguous run id.
        ValueError: for an unknown ``region_kind``.
    """
    if region_kind not in REGION_KINDS:
        raise ValueError(f"kind must be one of {', '.join(REGION_KINDS)}, got {region_kind!r}")
    run = ledger.run(run_id)
    records = ledger.epochs(run.run_id)
    train = train_records(records)
    names: list[str] = []
    for rec in records:
        names.extend(k for k in rec.metrics if k not in names)
    monitor = metric if metric in names else run_monitor(run, records)
    direction = (metric_direction(monitor) if monitor else None) or "min"
    footprints = compare_regions(records) if records else []
    own = next((f for f in footprints if f.code == run.location), None)
    kinds = REGION_KINDS[region_kind]
    ranked = [f for f in footprints if not kinds or f.kind in kinds]
    ranks = {f.code: i for i, f in enumerate(ranked, 1)}
    listed = ranked[:top]
    if own is not None and own.code in ranks and own not in listed:
        listed.append(own)  # the run's own place, for comparison, after the best ones
    return RunDetail(
        run=run,
        name=run_name(run),
        status=run_status(run),
        tags=run_tags(run),
        records=records,
        train=train,
        metrics=names,
        monitor=monitor,
        direction=direction,
        best=best_metric(records, monitor, direction),
        shoulder=(
            knee_epoch(train, monitor, direction)
            if monitor
            else None
        ),
        stop_epoch=train[-1].epoch if run.stopped_early and train else None,
        regions=listed,
        region_ranks=ranks,
        region_kind=region_kind,
        own_region=own,
        hours=hourly_intensity(records),
    )
