"""The ledger's reads: runs, a page of runs, one run, and a run's epochs (``Ledger`` has them).

The SQL is built in ``runs.py`` and ``pages.py``; each read asks the store once (``show``'s
``iter_epochs`` reads as it is iterated), and none of them takes the write path's locks.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from carbon_callbacks.ledger import schema
from carbon_callbacks.ledger.errors import LedgerError
from carbon_callbacks.ledger.pages import (
    EpochMetrics,
    RunsPage,
    check_page,
    epoch_metrics,
    epoch_metrics_query,
    page_queries,
)
from carbon_callbacks.ledger.runs import (
    RunInfo,
    match_run,
    run_filters,
    run_info,
    run_query,
    runs_query,
)
from carbon_callbacks.records import EpochRecord


class LedgerReads:
    """The read half of ``Ledger``: every query it answers (see ``Ledger`` for the store)."""

    _store: Any
    _lock: threading.RLock

    @property
    def label(self) -> str:
        """Where the ledger is, for messages (passwords redacted)."""
        return str(self._store.label)

    def runs(
        self,
        *,
        project: str | None = None,
        team: str | None = None,
        user: str | None = None,
        since: float | None = None,
        until: float | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> list[RunInfo]:
        """Every run, oldest first, with totals (and their ranges) over its epoch rows.

        Args:
            project: only runs of this project.
            team: only runs of this team.
            user: only runs of this user.
            since: only runs started at or after this wall time (epoch seconds).
            until: only runs started before this wall time.
            tags: only runs whose metadata holds each of these keys with this value (as text).

        Returns:
            The runs.

        Raises:
            LedgerUnavailable: if the store cannot be read.
            ValueError: for a tag key that is not a plain name.
        """
        where, params = run_filters(
            self._store.metadata_text, project=project, team=team, user=user, since=since,
            until=until, tags=tags,
        )  # fmt: skip
        sql, params = runs_query(where, params)
        with self._lock:
            rows = self._store.query(sql, params)
        return [run_info(row) for row in rows]

    def runs_page(
        self,
        *,
        order_by: str = "started",
        descending: bool = True,
        limit: int = 50,
        offset: int = 0,
        framework: str | None = None,
        status: str | None = None,
        **filters: Any,
    ) -> RunsPage:
        """One page of runs, sorted, filtered and paged by the database, and the match count.

        The page's runs are chosen first and only they have their epoch rows summed in full;
        sorted by a total (``epochs``, ``energy``, ``co2``), that one sum is taken over every
        run, which is what sorting by it takes.

        Args:
            order_by: one of ``RUN_ORDERS``.
            descending: largest (or latest) first.
            limit: runs per page (1 to 1,000).
            offset: runs to skip.
            framework: only runs of this framework.
            status: ``running`` (no end recorded: running or killed), or how it ended:
                ``completed``, ``stopped`` (by a rule, early stopping, a pruner or the user),
                ``failed`` or ``interrupted``.
            **filters: ``project``, ``team``, ``user``, ``since``, ``until``, ``tags`` as
                ``runs()`` takes them.

        Raises:
            ValueError: for an unknown ``order_by``, ``status`` or filter, a bad ``limit``
                or ``offset``.
            LedgerUnavailable: if the store cannot be read.
        """
        check_page(order_by, status, limit, offset)
        where, params = run_filters(self._store.metadata_text, **filters)
        sql, count_sql, params = page_queries(
            where, params, order_by=order_by, descending=descending, limit=limit,
            offset=offset, framework=framework, status=status,
        )  # fmt: skip
        with self._lock:
            rows = self._store.query(sql, params)
            count = self._store.query(count_sql, params)
        total = int(count[0]["n"]) if count else 0
        return RunsPage(tuple(run_info(row) for row in rows), total, offset, limit)

    def run(self, run_id: str) -> RunInfo:
        """One run by its id or a unique prefix of it (reading only the candidates).

        Raises:
            LedgerError: if no run (or more than one) matches.
        """
        sql, params = run_query(run_id)
        with self._lock:
            rows = self._store.query(sql, params)
            if not rows and self._store.query("SELECT run_id FROM runs LIMIT 1", {}):
                raise LedgerError(
                    f"no run {run_id!r} in {self.label}; `carbon-callbacks runs` lists them"
                )
        return match_run([run_info(row) for row in rows], run_id, self.label)

    def epoch_metrics(self, run_ids: Sequence[str]) -> dict[str, list[EpochMetrics]]:
        """Several runs' logged metrics, epoch by epoch, in one light query.

        Only the epoch, stage and metrics columns are read, so a page of runs can show each
        one's best metric without loading every record.

        Args:
            run_ids: full run ids (at most 1,000).

        Returns:
            Each run's rows in the order they ended (runs without epochs are absent).

        Raises:
            ValueError: for more than 1,000 ids.
            LedgerUnavailable: if the store cannot be read.
        """
        if len(run_ids) > 1000:
            raise ValueError(f"run_ids: at most 1000 runs per call, got {len(run_ids)}")
        if not run_ids:
            return {}
        sql, params = epoch_metrics_query(run_ids)
        with self._lock:
            return epoch_metrics(self._store.query(sql, params))

    def epochs(self, run_id: str) -> list[EpochRecord]:
        """The run's epoch records in the order they ended.

        Raises:
            LedgerUnavailable: if the store cannot be read.
        """
        return [rec for _, rec in self.epochs_with_uids(run_id)]

    def iter_epochs(self, run_id: str) -> Iterator[EpochRecord]:
        """The run's epoch records in the order they ended, read one at a time.

        For long runs: memory stays flat however many records the run has (``show`` uses
        it). The store's cursor stays open until the iterator is exhausted or closed.

        Raises:
            LedgerUnavailable: if the store cannot be read.
        """
        sql = "SELECT * FROM epochs WHERE run_id = :run_id ORDER BY end_wall, position"
        for row in self._store.iter_query(sql, {"run_id": run_id}):
            yield schema.epoch_record(row)

    def epochs_with_uids(self, run_id: str) -> list[tuple[str, EpochRecord]]:
        """The run's records with their row ids (exports carry them so imports stay exact)."""
        sql = "SELECT * FROM epochs WHERE run_id = :run_id ORDER BY end_wall, position"
        rows = self._store.query(sql, {"run_id": run_id})
        return [(str(row["uid"]), schema.epoch_record(row)) for row in rows]
