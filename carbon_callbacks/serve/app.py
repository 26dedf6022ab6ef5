"""The web app: four read-only pages over one ledger, served by Starlette.

Every page is rendered on the server from the ledger (Jinja2, autoescaped), and its charts are
drawn in the browser by Plotly from JSON embedded in the page. Every script and style comes
from this package or from the ``plotly`` package's own ``plotly.min.js``: nothing is fetched
from elsewhere, so the app works offline. Only GET is routed, and the responses forbid framing,
sniffing and any script or style from another origin.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from carbon_callbacks.ledger import Ledger, LedgerError, LedgerUnavailable
from carbon_callbacks.reports import format_energy, format_grams, format_time
from carbon_callbacks.serve import charts
from carbon_callbacks.serve.compare import Comparison, compare_runs
from carbon_callbacks.serve.overview import GROUPINGS, overview
from carbon_callbacks.serve.params import (
    PAGE_SIZES,
    BadParameter,
    Query,
    RunFilters,
    RunsQuery,
    url_with,
)
from carbon_callbacks.serve.runs import REGION_KINDS, run_detail, runs_table
from carbon_callbacks.serve.studies import compare_study, open_storage, redact, study_names

logger = logging.getLogger(__name__)

_HEADERS = [
    (b"content-security-policy",
     b"default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
     b"img-src 'self' data: blob:; font-src 'self'; connect-src 'self'; base-uri 'none'; "
     b"form-action 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]  # fmt: skip
"""Plotly sets inline styles on the elements it draws, hence 'unsafe-inline' for styles only."""


def plotly_js() -> Path | None:
    """The ``plotly.min.js`` inside the installed ``plotly`` package (None if not installed)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"
    return path if path.is_file() else None


def script_json(value: Any) -> Markup:
    """JSON safe inside ``<script type="application/json">``: no ``<``, ``>`` or ``&``."""
    text = json.dumps(value, allow_nan=False, default=_finite)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text)  # noqa: S704 - escaped just above


def _finite(value: Any) -> Any:
    raise TypeError(f"not JSON: {type(value).__name__}")


def _clean(value: Any) -> Any:
    """NaN and infinities become null (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _number(value: float | None, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}g}"


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("carbon_callbacks.serve", "templates"),
        autoescape=select_autoescape(("html",), default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        energy=format_energy,
        grams=format_grams,
        time=format_time,
        num=_number,
        pct=lambda x: "-" if x is None else f"{x:.0%}",
        chart=lambda fig: script_json(_clean(fig)),
    )
    env.globals.update(url_with=url_with, page_sizes=PAGE_SIZES)
    return env


class _SecurityHeaders:
    """Adds ``_HEADERS`` to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + _HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Pages:
    """The page handlers, bound to one ledger (and optionally one Optuna storage)."""

    def __init__(self, ledger: Ledger, optuna_storage: str | None = None) -> None:
        self.ledger = ledger
        self.optuna_url = optuna_storage
        self._storage: Any = None
        self.env = _environment()
        self.plotly = plotly_js()

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        body = self.env.get_template(name).render(
            ledger=self.ledger.label,
            optuna=redact(self.optuna_url) if self.optuna_url else None,
            charts_available=self.plotly is not None,
            path=request.url.path,
            **context,
        )
        return HTMLResponse(body, status_code=status)

    def guarded(self, handler: Callable[[Request], Response]) -> Callable[[Request], Response]:
        """The handler, with expected failures shown as a page that says what to change."""

        def endpoint(request: Request) -> Response:
            started = time.perf_counter()
            response = self._answer(handler, request)
            took = (time.perf_counter() - started) * 1e3
            response.headers["server-timing"] = f"page;dur={took:.1f}"
            return response

        return endpoint

    def _answer(self, handler: Callable[[Request], Response], request: Request) -> Response:
        try:
            return handler(request)
        except (BadParameter, ValueError, KeyError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            return self.render(request, "error.html", 400, message=message)
        except LedgerUnavailable as exc:
            return self.render(request, "error.html", 503, message=str(exc))
        except LedgerError as exc:
            return self.render(request, "error.html", 404, message=str(exc))
        except Exception:
            logger.exception("carbon-callbacks serve: %s failed", request.url.path)
            failed = "the page failed; the server's log says why"
            return self.render(request, "error.html", 500, message=failed)

    # ------------------------------------------------------------------ pages

    def overview(self, request: Request) -> Response:
        filters = RunFilters.from_query(Query(request.query_params.multi_items()))
        data = overview(self.ledger, filters.ledger_args())
        return self.render(
            request, "overview.html", filters=filters, data=data, groupings=GROUPINGS,
            months=charts.months_chart(data.tables["month"]) if data.runs else None,
        )  # fmt: skip

    def runs(self, request: Request) -> Response:
        query = RunsQuery.from_query(Query(request.query_params.multi_items()))
        table = runs_table(self.ledger, query)
        return self.render(request, "runs.html", table=table, q=query, statuses=_STATUSES)

    def run(self, request: Request) -> Response:
        query = Query(request.query_params.multi_items())
        kind = query.get("kind") or "all"
        if kind not in REGION_KINDS:
            raise BadParameter("kind", f"choose from {', '.join(REGION_KINDS)}, not {kind!r}")
        detail = run_detail(
            self.ledger, request.path_params["run_id"], metric=query.get("metric"),
            region_kind=kind,
        )  # fmt: skip
        figures = {}
        if detail.train:
            figures = {
                "metric": charts.metric_chart(detail),
                "energy": charts.energy_chart(detail),
                "hours": charts.hours_chart(detail),
            }
        return self.render(request, "run.html", d=detail, figures=figures, kinds=REGION_KINDS)

    def compare(self, request: Request) -> Response:
        query = Query(request.query_params.multi_items())
        study = query.get("study")
        ids = [part for value in query.getlist("run") for part in value.split(",") if part]
        comparison: Comparison | None = None
        studies: Sequence[str] = ()
        if self.optuna_url:
            studies = study_names(self.storage())
        if study:
            if not self.optuna_url:
                raise BadParameter(
                    "study", "start the server with --optuna-storage URL to compare a study"
                )
            comparison = compare_study(self.storage(), study)
        elif ids:
            comparison = compare_runs(self.ledger, ids, query.get("metric"))
        figures = {}
        if comparison is not None and comparison.points:
            figures = {
                "front": charts.compare_chart(comparison),
                "curves": charts.curves_chart(comparison),
            }
        return self.render(
            request, "compare.html", c=comparison, figures=figures, studies=studies,
            study=study, ids=ids,
        )  # fmt: skip

    def storage(self) -> Any:
        if self._storage is None:
            self._storage = open_storage(self.optuna_url or "")
        return self._storage

    def plotly_file(self, request: Request) -> Response:
        if self.plotly is None:
            return PlainTextResponse("plotly is not installed", status_code=404)
        return FileResponse(
            self.plotly, media_type="text/javascript",
            headers={"cache-control": "public, max-age=86400"},
        )  # fmt: skip


_STATUSES = ("running", "completed", "stopped")


def create_app(
    ledger: Ledger,
    *,
    optuna_storage: str | None = None,
    allowed_hosts: Sequence[str] = ("127.0.0.1", "localhost", "[::1]"),
) -> Starlette:
    """The ASGI app over ``ledger`` (open it with ``read_only=True``).

    Args:
        ledger: the ledger the pages read.
        optuna_storage: an Optuna RDB storage URL, for comparing a study's trials.
        allowed_hosts: the ``Host`` headers answered (others get 400), so a web page elsewhere
            cannot reach the app through a DNS name pointed at 127.0.0.1.

    Returns:
        The app; serve it with ``run_server`` or any ASGI server.
    """
    if optuna_storage:
        open_storage(optuna_storage)  # a bad URL fails now, naming the option
    pages = Pages(ledger, optuna_storage)
    routes = [
        Route("/", pages.guarded(pages.overview), name="overview"),
        Route("/runs", pages.guarded(pages.runs), name="runs"),
        Route("/runs/{run_id:str}", pages.guarded(pages.run), name="run"),
        Route("/compare", pages.guarded(pages.compare), name="compare"),
        Route("/static/plotly.min.js", pages.plotly_file),
        Mount("/static", StaticFiles(packages=[("carbon_callbacks.serve", "static")])),
    ]
    return Starlette(
        routes=routes,
        middleware=[
            Middleware(_SecurityHeaders),
            Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts)),
        ],
    )
