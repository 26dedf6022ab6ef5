"""The query parameters the pages take, checked once, with errors that name the parameter."""

from __future__ import annotations

import calendar
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlencode

from carbon_callbacks.ledger import RUN_ORDERS, RUN_STATUSES

PAGE_SIZES = (25, 50, 100, 200)


class BadParameter(ValueError):
    """A query parameter the page cannot use; the message names it and says what it takes."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name


class Query:
    """Read-only access to a request's query parameters (one value or all values of a name)."""

    def __init__(self, items: Sequence[tuple[str, str]]) -> None:
        self._items = list(items)

    def get(self, name: str) -> str | None:
        values = self.getlist(name)
        return values[-1] if values else None

    def getlist(self, name: str) -> list[str]:
        return [v.strip() for k, v in self._items if k == name and v.strip()]


def parse_date(name: str, text: str | None) -> float | None:
    """``YYYY-MM-DD`` or ``YYYY-MM`` (UTC, as the CLI reads them) as wall seconds."""
    if not text:
        return None
    for fmt in ("%Y-%m-%d", "%Y-%m"):
        try:
            return float(calendar.timegm(time.strptime(text, fmt)))
        except ValueError:
            continue
    raise BadParameter(name, f"{text!r} is not a date; use YYYY-MM-DD or YYYY-MM")


def parse_tags(texts: Sequence[str]) -> dict[str, str]:
    """``key=value`` pairs (a run's own metadata, e.g. ``variant=baseline``)."""
    tags: dict[str, str] = {}
    for text in texts:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise BadParameter("tag", f"{text!r} is not key=value (e.g. variant=baseline)")
        tags[key.strip()] = value.strip()
    return tags


@dataclass(frozen=True)
class RunFilters:
    """Which runs a page shows: owners, framework, status, start time range and tags."""

    project: str | None = None
    team: str | None = None
    user: str | None = None
    framework: str | None = None
    status: str | None = None
    since: str | None = None
    until: str | None = None
    tags: tuple[str, ...] = ()

    @classmethod
    def from_query(cls, query: Query) -> RunFilters:
        status = query.get("status")
        if status is not None and status not in RUN_STATUSES:
            raise BadParameter("status", f"choose from {', '.join(RUN_STATUSES)}, not {status!r}")
        filters = cls(
            project=query.get("project"),
            team=query.get("team"),
            user=query.get("user"),
            framework=query.get("framework"),
            status=status,
            since=query.get("since"),
            until=query.get("until"),
            tags=tuple(query.getlist("tag")),
        )
        filters.ledger_args()  # dates and tags checked here, before any query runs
        return filters

    def ledger_args(self) -> dict[str, Any]:
        """Keyword arguments for ``Ledger.runs()`` (owners, time range, tags)."""
        return {
            "project": self.project,
            "team": self.team,
            "user": self.user,
            "since": parse_date("since", self.since),
            "until": parse_date("until", self.until),
            "tags": parse_tags(self.tags) or None,
        }

    def items(self) -> list[tuple[str, str]]:
        """The filters as query parameters, for links that keep them."""
        out = [
            (name, value)
            for name in ("project", "team", "user", "framework", "status", "since", "until")
            if (value := getattr(self, name))
        ]
        return out + [("tag", t) for t in self.tags]

    @property
    def active(self) -> bool:
        return bool(self.items())


@dataclass(frozen=True)
class RunsQuery:
    """The Runs table's state: filters, sort, direction, page and page size."""

    filters: RunFilters = field(default_factory=RunFilters)
    sort: str = "started"
    descending: bool = True
    page: int = 1
    per_page: int = 50

    @classmethod
    def from_query(cls, query: Query) -> RunsQuery:
        sort = query.get("sort") or "started"
        if sort not in RUN_ORDERS:
            raise BadParameter("sort", f"choose from {', '.join(RUN_ORDERS)}, not {sort!r}")
        direction = query.get("dir") or "desc"
        if direction not in ("asc", "desc"):
            raise BadParameter("dir", f"use asc or desc, not {direction!r}")
        page = _positive("page", query.get("page") or "1")
        per_page = _positive("per_page", query.get("per_page") or "50")
        if per_page not in PAGE_SIZES:
            raise BadParameter(
                "per_page", f"choose from {', '.join(map(str, PAGE_SIZES))}, not {per_page}"
            )
        return cls(RunFilters.from_query(query), sort, direction == "desc", page, per_page)

    def url(self, **changes: Any) -> str:
        """``/runs?...`` for this state with some fields changed (a new sort starts on page 1)."""
        state = replace(self, **changes)
        params = state.filters.items()
        if state.sort != "started":
            params.append(("sort", state.sort))
        if not state.descending:
            params.append(("dir", "asc"))
        if state.page != 1:
            params.append(("page", str(state.page)))
        if state.per_page != 50:
            params.append(("per_page", str(state.per_page)))
        return "/runs" + ("?" + urlencode(params) if params else "")

    def sort_url(self, column: str) -> str:
        """The link of a column header: sort by it, or flip the direction if it is the sort."""
        if column == self.sort:
            return self.url(descending=not self.descending, page=1)
        # Names read best A to Z; sizes and dates largest or latest first.
        return self.url(sort=column, descending=column not in _TEXT_ORDERS, page=1)


_TEXT_ORDERS = frozenset({"project", "team", "user", "framework", "intensity"})


def _positive(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise BadParameter(name, f"{text!r} is not a whole number") from None
    if value < 1:
        raise BadParameter(name, f"must be 1 or more, got {value}")
    return value


def url_with(path: str, params: Mapping[str, Any] | Sequence[tuple[str, Any]]) -> str:
    """``path?query`` from pairs, leaving out empty values."""
    pairs = params.items() if isinstance(params, Mapping) else params
    kept = [(k, str(v)) for k, v in pairs if v not in (None, "")]
    return path + ("?" + urlencode(kept) if kept else "")
