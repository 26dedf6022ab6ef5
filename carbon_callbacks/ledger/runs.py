"""A run as the ledger reports it (``RunInfo``), and choosing runs by id or prefix."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from carbon_callbacks.ledger.errors import LedgerError
from carbon_callbacks.ledger.schema import from_json

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
    epochs: int = 0
    energy_kwh: float = 0.0
    co2_g: float = 0.0
    seconds: float = 0.0
    last_wall: float | None = None

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
            "epochs": self.epochs,
            "energy_kwh": self.energy_kwh,
            "co2_g": self.co2_g,
            "seconds": self.seconds,
        }


def run_info(row: Mapping[str, Any]) -> RunInfo:
    ended = row.get("ended") is not None
    end_wall = row.get("end_wall")
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
        epochs=int(row.get("n_epochs") or 0),
        energy_kwh=float(row.get("sum_kwh") or 0.0),
        co2_g=float(row.get("sum_co2") or 0.0),
        seconds=float(row.get("sum_s") or 0.0),
        last_wall=float(row["last_wall"]) if row.get("last_wall") is not None else None,
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


def runs_query(
    *,
    project: str | None,
    team: str | None,
    user: str | None,
    since: float | None,
    until: float | None,
) -> tuple[str, dict[str, Any]]:
    """The SQL (and its parameters) for ``Ledger.runs``: each run with totals over its epochs."""
    where = []
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
    sql = (
        "SELECT r.*, e.n AS n_epochs, e.kwh AS sum_kwh, e.co2 AS sum_co2, e.secs AS sum_s,"
        " e.last AS last_wall, x.end_wall AS end_wall, x.stopped_early AS stopped_early,"
        " x.stop_reason AS stop_reason, x.run_id AS ended"
        " FROM runs r"
        " LEFT JOIN (SELECT run_id, COUNT(*) AS n, SUM(energy_kwh) AS kwh, SUM(co2_g) AS co2,"
        "   SUM(seconds) AS secs, MAX(end_wall) AS last FROM epochs GROUP BY run_id) e"
        "   ON e.run_id = r.run_id"
        " LEFT JOIN run_ends x ON x.run_id = r.run_id"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY r.start_wall, r.run_id"
    )
    return sql, params
