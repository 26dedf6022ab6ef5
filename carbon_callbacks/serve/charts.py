"""Plotly figures (data and layout as plain dicts) for the pages; the browser draws them.

Plotly reads a few HTML tags in every text it draws, so each string that comes from a user's
run (names, metric names, tags) is HTML-escaped here: it is shown as typed, never as markup.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from carbon_callbacks.records import COMPONENTS
from carbon_callbacks.serve.compare import Comparison
from carbon_callbacks.serve.overview import GroupRow
from carbon_callbacks.serve.runs import RunDetail

Figure = dict[str, Any]

_COLORS = {"cpu": "#4C72B0", "gpu": "#DD8452", "ram": "#55A868", "other": "#8C8C8C"}
_STATUS_STYLE = {
    "completed": ("circle", "#2A7F62"),
    "complete": ("circle", "#2A7F62"),
    "stopped early": ("x", "#C0392B"),
    "pruned": ("x-thin-open", "#C0392B"),
    "running/killed": ("circle-open", "#8C8C8C"),
}


def _t(text: object) -> str:
    return html.escape(str(text), quote=False)


def grams_unit(largest: float) -> tuple[float, str]:
    """Scale and unit for grams CO2e axes: mg below 1 g, so ticks read 0.5 not 0.0005."""
    return (1e3, "mg") if largest < 1.0 else (1.0, "g")


def _layout(title: str, x: str, y: str, **extra: Any) -> dict[str, Any]:
    return {
        "title": {"text": title, "font": {"size": 14}},
        "xaxis": {"title": {"text": x}, "zeroline": False},
        "yaxis": {"title": {"text": y}, "zeroline": False},
        "margin": {"l": 60, "r": 20, "t": 40, "b": 40},
        "legend": {"orientation": "h", "y": -0.18, "yanchor": "top"},
        "hovermode": "closest",
        **extra,
    }


def months_chart(rows: Sequence[GroupRow]) -> Figure:
    """CO2e per month with its range."""
    rows = sorted(rows, key=lambda r: r.name)
    scale, unit = grams_unit(max((r.report.co2_g_high for r in rows), default=0.0))
    return {
        "data": [
            {
                "type": "bar",
                "x": [_t(r.name) for r in rows],
                "y": [r.report.co2_g * scale for r in rows],
                "error_y": {
                    "type": "data",
                    "symmetric": False,
                    "array": [(r.report.co2_g_high - r.report.co2_g) * scale for r in rows],
                    "arrayminus": [(r.report.co2_g - r.report.co2_g_low) * scale for r in rows],
                },
                "marker": {"color": "#2A7F62"},
                "name": "CO2e",
            }
        ],
        "layout": _layout(
            "CO2e per month (bars: range)", "month (UTC)", f"CO2e ({unit})",
            xaxis={"type": "category", "title": {"text": "month (UTC)"}},
        ),
    }


def metric_chart(detail: RunDetail) -> Figure:
    """The metric against cumulative CO2e, with the shoulder and the stop marked."""
    monitor = detail.monitor
    pts = [
        (r.co2_g_total, v, r.epoch)
        for r in detail.train
        if monitor and (v := r.metric(monitor)) is not None
    ]
    scale, unit = grams_unit(max((p[0] for p in pts), default=0.0))
    data: list[dict[str, Any]] = [
        {
            "type": "scatter",
            "mode": "lines+markers",
            "x": [p[0] * scale for p in pts],
            "y": [p[1] for p in pts],
            "text": [f"epoch {p[2]}" for p in pts],
            "name": _t(monitor or "metric"),
            "line": {"color": "#2A7F62"},
        }
    ]
    for epoch, name, symbol, color in (
        (detail.shoulder, "shoulder", "diamond", "#E1A100"),
        (detail.stop_epoch, "stopped", "x", "#C0392B"),
    ):
        hit = next((p for p in pts if p[2] == epoch), None)
        if hit is not None:
            data.append(
                {
                    "type": "scatter",
                    "mode": "markers",
                    "x": [hit[0] * scale],
                    "y": [hit[1]],
                    "name": f"{name} (epoch {epoch})",
                    "marker": {"symbol": symbol, "size": 14, "color": color,
                               "line": {"width": 1, "color": "black"}},
                }
            )  # fmt: skip
    title = f"{_t(monitor or 'no metric logged')} vs cumulative CO2e"
    return {"data": data, "layout": _layout(title, f"cumulative CO2e ({unit})", _t(monitor or ""))}


def energy_chart(detail: RunDetail) -> Figure:
    """Energy per epoch stacked by component, with each epoch's range as an error bar."""
    train = detail.train
    wh_max = max((r.energy_kwh_high * 1e3 for r in train), default=0.0)
    scale, unit = (1e6, "mWh") if wh_max < 1.0 else (1e3, "Wh")
    epochs = [r.epoch for r in train]
    data: list[dict[str, Any]] = []
    split = [0.0] * len(train)
    for name in COMPONENTS:
        values = [getattr(r, f"{name}_energy_kwh") * scale for r in train]
        if any(values):
            data.append({"type": "bar", "x": epochs, "y": values, "name": name.upper(),
                         "marker": {"color": _COLORS[name]}})  # fmt: skip
            split = [a + b for a, b in zip(split, values, strict=True)]
    rest = [max(0.0, r.energy_kwh * scale - s) for r, s in zip(train, split, strict=True)]
    if any(x > 1e-9 for x in rest):
        data.append({"type": "bar", "x": epochs, "y": rest, "name": "unsplit",
                     "marker": {"color": _COLORS["other"]}})  # fmt: skip
    data.append(
        {
            "type": "scatter",
            "mode": "markers",
            "x": epochs,
            "y": [r.energy_kwh * scale for r in train],
            "name": "total and range",
            "marker": {"color": "black", "size": 4},
            "error_y": {
                "type": "data",
                "symmetric": False,
                "array": [(r.energy_kwh_high - r.energy_kwh) * scale for r in train],
                "arrayminus": [(r.energy_kwh - r.energy_kwh_low) * scale for r in train],
            },
        }
    )
    layout = _layout("energy per epoch by component", "epoch", f"energy ({unit})")
    layout["barmode"] = "stack"
    return {"data": data, "layout": layout}


def hours_chart(detail: RunDetail) -> Figure:
    """The carbon intensity used, hour by hour (UTC)."""
    import time

    hours = detail.hours
    return {
        "data": [
            {
                "type": "bar",
                "x": [time.strftime("%Y-%m-%d %H:00", time.gmtime(h.hour)) for h in hours],
                "y": [h.g_per_kwh for h in hours],
                "hovertext": [_t("; ".join(h.sources)) for h in hours],
                "marker": {"color": "#4C72B0"},
                "name": "gCO2e/kWh",
            }
        ],
        "layout": _layout("carbon intensity used, hour by hour", "hour (UTC)", "gCO2e/kWh",
                          xaxis={"type": "category", "title": {"text": "hour (UTC)"}}),
    }  # fmt: skip


def compare_chart(comparison: Comparison) -> Figure:
    """Each run's best metric against its CO2e, the Pareto front and its knee."""
    points = comparison.plotted
    scale, unit = grams_unit(max((p.co2_g for p in points), default=0.0))
    data: list[dict[str, Any]] = []
    for status in sorted({p.status for p in points}):
        group = [p for p in points if p.status == status]
        symbol, color = _STATUS_STYLE.get(status, ("circle", "#4C72B0"))
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "x": [p.co2_g * scale for p in group],
                "y": [p.metric for p in group],
                "text": [_t(p.label) for p in group],
                "customdata": [_t(p.key) for p in group],
                "name": _t(status),
                "marker": {"symbol": symbol, "size": 10, "color": color},
            }
        )
    by_key = {p.key: p for p in points}
    front = [by_key[k] for k in comparison.front]
    if front:
        data.append({"type": "scatter", "mode": "lines", "x": [p.co2_g * scale for p in front],
                     "y": [p.metric for p in front], "name": "Pareto front",
                     "line": {"color": "#2A7F62", "dash": "dot"}})  # fmt: skip
    if comparison.knee is not None:
        knee = by_key[comparison.knee]
        data.append({"type": "scatter", "mode": "markers", "x": [knee.co2_g * scale],
                     "y": [knee.metric], "name": f"knee ({_t(knee.label)})",
                     "marker": {"symbol": "diamond", "size": 16, "color": "#E1A100",
                                "line": {"width": 1, "color": "black"}}})  # fmt: skip
    metric = _t(comparison.metric or "metric")
    best = "highest" if comparison.direction == "max" else "lowest"
    return {
        "data": data,
        "layout": _layout(f"{metric} ({best} reached) vs CO2e", f"CO2e ({unit})", metric),
    }


def curves_chart(comparison: Comparison) -> Figure:
    """Each run's metric along its cumulative CO2e."""
    points = [p for p in comparison.points if p.curve]
    scale, unit = grams_unit(max((c[0] for p in points for c in p.curve), default=0.0))
    data = [
        {
            "type": "scatter",
            "mode": "lines+markers",
            "x": [c[0] * scale for c in p.curve],
            "y": [c[1] for c in p.curve],
            "name": _t(p.label),
            "marker": {"size": 4},
        }
        for p in points
    ]
    metric = _t(comparison.metric or "metric")
    return {
        "data": data,
        "layout": _layout(f"{metric} along the way", f"cumulative CO2e ({unit})", metric),
    }
