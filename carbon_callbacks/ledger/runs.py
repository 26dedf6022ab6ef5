"""A run as the ledger reports it (``RunInfo``), and choosing runs by id or prefix."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from carbon_callbacks.ledger.errors import LedgerError
from carbon_callbacks.ledger.schema import from_json, run_end
from carbon_callbacks.records import RunEnd

if TYPE_CHECKING:
    from carbon_callbacks.ledger.ledger import Ledger


@dataclass(frozen=True)
class RunInfo:
    """One run as the ledger holds it: its metadata and totals over its epoch rows."""

    run_id: str
    project: str = ""
    team: str = ""
    user: str = ""
    host: str = ""
    git_commit: str = ""
    framework: str = ""
    start_wall: float = 0.0
    end_wall: float | None = None
    location: str = ""
    intensity_source: str = ""
    source: str = ""
    hardware: Mapping[str, Any] = field(default_factory=dict)
    methods: Mapping[str, Any] = field(default_factory=dict)
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    finished: bool = False
    stopped_early: bool = False
    stop_reason: str = ""
    status: str = "running"
    """``completed``, ``stopped``, ``failed`` or ``interrupted`` once ended (see ``end``);
    ``running`` while no end is recorded: still running, or killed without a chance to say."""
    stopped_by: str = ""
    error_type: str = ""
    kind: str = ""
    """``fit`` for a training run, ``validate``/``test``/``predict``/``evaluate`` for an
    evaluation pass measured after one, ``meter`` for an ``EnergyMeter`` window; "" if not
    recorded."""
    parent_run: str = ""
    """The run this one continues (a resumed or continued fit) or evaluates (an evaluation
    pass)."""
    epochs: int = 0
    energy_kwh: float = 0.0
    co2_g: float = 0.0
    seconds: float = 0.0
    last_wall: float | None = None
    energy_kwh_low: float = 0.0
    energy_kwh_high: float = 0.0
    co2_g_low: float = 0.0
    co2_g_high: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for exports)."""
        return {
            "run_id": self.run_id,
            "project": self.project,
            "team": self.team,
            "user": self.user,
            "host": self.host,
            "git_commit": self.git_commit,
            "framework": self.framework,
            "start_wall": self.start_wall,
            "end_wall": self.end_wall,
            "location": self.location,
            "intensity_source": self.intensity_source,
            "source": self.source,
            "hardware": dict(self.hardware),
            "methods": dict(self.methods),
            "hyperparameters": dict(self.hyperparameters),
            "metadata": dict(self.metadata),
            "finished": self.finished,
            "stopped_early": self.stopped_early,
            "stop_reason": self.stop_reason,
            "status": self.status,
            "stopped_by": self.stopped_by,
            "error_type": self.error_type,
            "kind": self.kind,
            "parent_run": self.parent_run,
            "epochs": self.epochs,
            "energy_kwh": self.energy_kwh,
            "co2_g": self.co2_g,
            "seconds": self.seconds,
        }


    @property
    def end(self) -> RunEnd | None:
        """How the run ended, or None while no end is recorded."""
        if not self.finished:
            return None
        return RunEnd(self.status, self.stopped_by, self.stop_reason, self.error_type)


def run_info(row: Mapping[str, Any]) -> RunInfo:
    """The ``RunInfo`` of a row with ``ENDED`` and ``TOTALS`` columns."""
    ended = row.get("ended") is not None
    end_wall = row.get("end_wall")
    end = (
        run_end(
            status=row.get("status"),
            stopped_early=bool(row.get("stopped_early") or 0),
            stop_reason=row.get("stop_reason") or "",
            stopped_by=row.get("stopped_by") or "",
            error_type=row.get("error_type") or "",
        )
        if ended
        else None
    )
    return RunInfo(
        run_id=row["run_id"],
        project=row.get("project") or "",
        team=row.get("team") or "",
        user=row.get("user_name") or "",
        host=row.get("host") or "",
        git_commit=row.get("git_commit") or "",
        framework=row.get("framework") or "",
        start_wall=float(row.get("start_wall") or 0.0),
        end_wall=float(end_wall) if end_wall is not None else None,
        location=row.get("location") or "",
        intensity_source=row.get("intensity_source") or "",
        source=row.get("source") or "",
        hardware=from_json(row.get("hardware")),
        methods=from_json(row.get("methods")),
        hyperparameters=from_json(row.get("hyperparameters")),
        metadata=from_json(row.get("metadata")),
        finished=ended,
        stopped_early=bool(row.get("stopped_early") or 0),
        stop_reason=row.get("stop_reason") or "",
        status=end.status if end else "running",
        stopped_by=end.stopped_by if end else "",
        error_type=end.error_type if end else "",
        kind=row.get("kind") or "",
        parent_run=row.get("parent_run") or "",
        epochs=int(row.get("n_epochs") or 0),
        energy_kwh=float(row.get("sum_kwh") or 0.0),
        co2_g=float(row.get("sum_co2") or 0.0),
        seconds=float(row.get("sum_s") or 0.0),
        last_wall=float(row["last_wall"]) if row.get("last_wall") is not None else None,
        energy_kwh_low=float(row.get("sum_kwh_low") or 0.0),
        energy_kwh_high=float(row.get("sum_kwh_high") or 0.0),
        co2_g_low=float(row.get("sum_co2_low") or 0.0),
        co2_g_high=float(row.get("sum_co2_high") or 0.0),
    )


def match_run(runs: Sequence[RunInfo], run_id: str, label: str) -> RunInfo:
    """The run with this id, else the only one it is a prefix of."""
    exact = [r for r in runs if r.run_id == run_id]
    if exact:
        return exact[0]
    matches = [r for r in runs if r.run_id.startswith(run_id)] if run_id else []
    if len(matches) == 1:
        return matches[0]
    if not runs:
        raise LedgerError(f"the ledger {label} holds no runs yet")
    if matches:
        raise LedgerError(f"run id {run_id!r} is ambiguous ({len(matches)} runs); give more of it")
    raise LedgerError(f"no run {run_id!r} in {label}; `carbon-callbacks runs` lists them")


def select_runs(
    ledger: Ledger,
    run_ids: Sequence[str] | None = None,
    *,
    runs: Sequence[RunInfo] | None = None,
) -> list[RunInfo]:
    """The runs named by ``run_ids`` (ids or unique prefixes), oldest first; all when None.

    Every id is resolved against one ``runs()`` query (or the given ``runs``), so an unknown
    id fails before anything is written.

    Args:
        ledger: the ledger.
        run_ids: run ids or unique prefixes; None for every run.
        runs: the ledger's runs when the caller already has them.

    Returns:
        The selected runs.

    Raises:
        LedgerError: for an unknown or ambiguous id.
    """
    runs = list(ledger.runs() if runs is None else runs)
    if run_ids is None:
        return runs
    wanted = {match_run(runs, r, ledger.label).run_id for r in run_ids}
    return [r for r in runs if r.run_id in wanted]


EPOCH_SUMS = (
    "SELECT run_id, COUNT(*) AS n, SUM(energy_kwh) AS kwh, SUM(co2_g) AS co2,"
    " SUM(seconds) AS secs, MAX(end_wall) AS last, SUM(energy_kwh_low) AS kwh_low,"
    " SUM(energy_kwh_high) AS kwh_high, SUM(co2_g_low) AS co2_low,"
    " SUM(co2_g_high) AS co2_high FROM epochs"
)
"""Each run's totals over its epoch rows (add a WHERE, then GROUP BY run_id)."""

TOTALS = (
    "e.n AS n_epochs, e.kwh AS sum_kwh, e.co2 AS sum_co2, e.secs AS sum_s,"
    " e.last AS last_wall, e.kwh_low AS sum_kwh_low, e.kwh_high AS sum_kwh_high,"
    " e.co2_low AS sum_co2_low, e.co2_high AS sum_co2_high"
)
"""The columns ``run_info`` reads from ``EPOCH_SUMS`` joined as ``e``."""

ENDED = (
    "x.end_wall AS end_wall, x.stopped_early AS stopped_early,"
    " x.stop_reason AS stop_reason, x.status AS status, x.stopped_by AS stopped_by,"
    " x.error_type AS error_type, x.run_id AS ended"
)
"""The columns ``run_info`` reads from ``run_ends`` joined as ``x``."""

END_STATUS = (
    "(CASE WHEN x.run_id IS NULL THEN 'running'"
    " ELSE COALESCE(x.status, CASE WHEN x.stopped_early = 1 THEN 'stopped' ELSE 'completed' END)"
    " END)"
)
"""SQL for a run's status over ``run_ends`` joined as ``x``: ``running`` without an end row,
and for end rows written before schema v3 (no ``status``), what ``schema.run_end`` reads."""

_TAG_KEY = re.compile(r"[A-Za-z0-9_.-]+")


def run_filters(
    metadata_text: Callable[[str], str],
    *,
    project: str | None = None,
    team: str | None = None,
    user: str | None = None,
    since: float | None = None,
    until: float | None = None,
    tags: Mapping[str, str] | None = None,
) -> tuple[list[str], dict[str, Any]]:
    """SQL conditions on ``runs r`` and their parameters for the common run filters.

    Args:
        metadata_text: the store's SQL for a top-level metadata value (``metadata_text``).
        project, team, user, since, until, tags: as ``Ledger.runs`` takes them.

    Raises:
        ValueError: for a tag key that is not a plain name.
    """
    where: list[str] = []
    params: dict[str, Any] = {}
    for col, value in (("project", project), ("team", team), ("user_name", user)):
        if value is not None:
            where.append(f"r.{col} = :{col}")
            params[col] = value
    if since is not None:
        where.append("r.start_wall >= :since")
        params["since"] = since
    if until is not None:
        where.append("r.start_wall < :until")
        params["until"] = until
    for i, (key, value) in enumerate(sorted((tags or {}).items())):
        if not _TAG_KEY.fullmatch(key):
            raise ValueError(
                f"tag key {key!r} is not a plain name (letters, digits, '_', '-', '.'); "
                "filter on a top-level metadata key such as 'variant=baseline'"
            )
        where.append(f"{metadata_text(f'tagkey{i}')} = :tag{i}")
        params[f"tagkey{i}"] = key
        params[f"tag{i}"] = str(value)
    return where, params


def runs_query(where: Sequence[str], params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The SQL (and its parameters) for ``Ledger.runs``: each run with totals over its epochs."""
    sql = (
        f"SELECT r.*, {TOTALS}, {ENDED} FROM runs r"
        f" LEFT JOIN ({EPOCH_SUMS} GROUP BY run_id) e ON e.run_id = r.run_id"
        " LEFT JOIN run_ends x ON x.run_id = r.run_id"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY r.start_wall, r.run_id"
    )
    return sql, params


def run_query(run_id: str) -> tuple[str, dict[str, Any]]:
    """The SQL for ``Ledger.run``: the runs whose id is ``run_id`` or starts with it.

    Only the candidates and their own epoch rows are read, however large the ledger; LIKE's
    wildcards in the id are taken literally.
    """
    escaped = run_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    sql = (
        f"WITH hit AS (SELECT r.*, {ENDED} FROM runs r"
        " LEFT JOIN run_ends x ON x.run_id = r.run_id"
        " WHERE r.run_id = :run_id OR r.run_id LIKE :prefix ESCAPE '\\'"
        " ORDER BY r.start_wall, r.run_id LIMIT 1000)"
        f" SELECT hit.*, {TOTALS} FROM hit"
        f" LEFT JOIN ({EPOCH_SUMS} WHERE run_id IN (SELECT run_id FROM hit)"
        " GROUP BY run_id) e ON e.run_id = hit.run_id ORDER BY hit.start_wall, hit.run_id"
    )
    return sql, {"run_id": run_id, "prefix": escaped + "%"}
