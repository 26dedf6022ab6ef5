"""Reading the ledger a page at a time: runs sorted, filtered and paged by the database.

A team view over 100,000 runs cannot pull every run into Python to show fifty: the page is
chosen in SQL, and only its runs have all their epoch rows summed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from carbon_callbacks.ledger.runs import END_STATUS, ENDED, EPOCH_SUMS, TOTALS, RunInfo
from carbon_callbacks.ledger.schema import from_json

RUN_ORDERS: dict[str, str] = {
    "started": "r.start_wall",
    "project": "r.project",
    "team": "r.team",
    "user": "r.user_name",
    "framework": "r.framework",
    "status": f"(CASE {END_STATUS} WHEN 'running' THEN 0 WHEN 'completed' THEN 1"
    " WHEN 'stopped' THEN 2 WHEN 'failed' THEN 3 ELSE 4 END)",
    "intensity": "r.intensity_source",
    "epochs": "COALESCE(k.k, 0)",
    "energy": "COALESCE(k.k, 0)",
    "co2": "COALESCE(k.k, 0)",
}
"""What ``Ledger.runs_page`` sorts by, and the SQL of each."""

_TOTAL_ORDERS = {"epochs": "COUNT(*)", "energy": "SUM(energy_kwh)", "co2": "SUM(co2_g)"}
"""The one sum each total sort needs (``k.k`` in ``RUN_ORDERS``)."""

RUN_STATUSES: dict[str, str] = {
    status: f"{END_STATUS} = '{status}'"
    for status in ("running", "completed", "stopped", "failed", "interrupted")
}
"""The statuses ``Ledger.runs_page`` filters on: no end row yet (running, or killed), then
``records.RUN_STATUSES``."""


@dataclass(frozen=True)
class RunsPage:
    """One page of ``Ledger.runs_page``: its runs and how many runs match the filters."""

    runs: tuple[RunInfo, ...]
    total: int
    offset: int
    limit: int


@dataclass(frozen=True)
class EpochMetrics:
    """One epoch's logged metrics, as ``Ledger.epoch_metrics`` reads them."""

    epoch: int
    stage: str
    metrics: Mapping[str, float]

    def metric(self, name: str) -> float | None:
        """The value of a logged metric for this epoch, or None if it was not logged."""
        value = self.metrics.get(name)
        return None if value is None else float(value)


def check_page(order_by: str, status: str | None, limit: int, offset: int) -> None:
    """Refuse page arguments the query cannot take, naming the argument.

    Raises:
        ValueError: for an unknown ``order_by`` or ``status``, a bad ``limit``/``offset``.
    """
    if order_by not in RUN_ORDERS:
        raise ValueError(f"order_by must be one of {', '.join(RUN_ORDERS)}, got {order_by!r}")
    if status is not None and status not in RUN_STATUSES:
        raise ValueError(f"status must be one of {', '.join(RUN_STATUSES)}, got {status!r}")
    if not 1 <= limit <= 1000:
        raise ValueError(f"limit must be 1 to 1000 runs per page, got {limit!r}")
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset!r}")


def page_queries(
    where: Sequence[str],
    params: Mapping[str, Any],
    *,
    order_by: str,
    descending: bool,
    limit: int,
    offset: int,
    framework: str | None,
    status: str | None,
) -> tuple[str, str, dict[str, Any]]:
    """The SQL of one page and of the count of every matching run, and their parameters.

    Args:
        where, params: the run filters (``runs.run_filters``).
        order_by, descending, limit, offset, framework, status: as ``Ledger.runs_page``.
    """
    where = list(where)
    params = dict(params)
    if framework is not None:
        where.append("r.framework = :framework")
        params["framework"] = framework
    if status is not None:
        where.append(RUN_STATUSES[status])
    cond = " WHERE " + " AND ".join(where) if where else ""
    ends = " LEFT JOIN run_ends x ON x.run_id = r.run_id"
    direction = " DESC" if descending else " ASC"
    total = _TOTAL_ORDERS.get(order_by)
    # The page is chosen first (sorting by a total needs only that one sum per run), and only
    # the page's runs have all their epoch rows summed.
    sql = (
        (f"WITH k AS (SELECT run_id, {total} AS k FROM epochs GROUP BY run_id), " if total
         else "WITH ")
        + f"page AS (SELECT r.*, {ENDED}, {RUN_ORDERS[order_by]} AS sort_key FROM runs r"
        + (" LEFT JOIN k ON k.run_id = r.run_id" if total else "")
        + f"{ends}{cond} ORDER BY {RUN_ORDERS[order_by]}{direction}, r.run_id{direction}"
        " LIMIT :limit OFFSET :offset)"
        f" SELECT page.*, {TOTALS} FROM page"
        f" LEFT JOIN ({EPOCH_SUMS} WHERE run_id IN (SELECT run_id FROM page)"
        " GROUP BY run_id) e ON e.run_id = page.run_id"
        f" ORDER BY page.sort_key{direction}, page.run_id{direction}"
    )  # fmt: skip
    params.update(limit=int(limit), offset=int(offset))
    return sql, f"SELECT COUNT(*) AS n FROM runs r{ends}{cond}", params


def epoch_metrics_query(run_ids: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """The SQL for ``Ledger.epoch_metrics``: epoch, stage and metrics of several runs."""
    params = {f"r{i}": run_id for i, run_id in enumerate(run_ids)}
    sql = (
        "SELECT run_id, epoch, stage, metrics FROM epochs"
        f" WHERE run_id IN ({', '.join(':' + k for k in params)})"
        " ORDER BY run_id, end_wall, position"
    )
    return sql, params


def epoch_metrics(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[EpochMetrics]]:
    """``epoch_metrics_query``'s rows, grouped by run."""
    out: dict[str, list[EpochMetrics]] = {}
    for row in rows:
        metrics = from_json(row.get("metrics"))
        out.setdefault(row["run_id"], []).append(
            EpochMetrics(
                epoch=int(row.get("epoch") or 0),
                stage=row.get("stage") or "train",
                metrics=metrics if isinstance(metrics, dict) else {},
            )
        )
    return out
