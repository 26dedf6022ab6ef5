"""PNG plots of a run: the monitored metric against cumulative CO2e, and energy per epoch.

matplotlib is imported only when a plot is drawn, through its object API with the Agg canvas,
so nothing here touches pyplot's global state or needs a display.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carbon_callbacks.policies import metric_direction
from carbon_callbacks.records import COMPONENTS, EpochRecord
from carbon_callbacks.reports.summary import pick_monitor, train_records

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_COLORS = {"cpu": "#4C72B0", "gpu": "#DD8452", "ram": "#55A868", "other": "#8C8C8C"}


def _direction(monitor: str | None, mode: str | None) -> str:
    """``mode`` when given, else the direction the metric's name reads as ("min" if unknown)."""
    if mode is not None:
        if mode not in ("min", "max"):
            raise ValueError(
                f"mode must be 'min', 'max' or None (read from the metric's name), got {mode!r}"
            )
        return mode
    return (metric_direction(monitor) if monitor else None) or "min"


def knee_epoch(records: Sequence[EpochRecord], monitor: str, mode: str | None = None) -> int | None:
    """The shoulder of the metric-vs-CO2e curve: the point farthest above its chord.

    Both axes are scaled to [0, 1] first so the answer does not depend on units (the
    "Kneedle" construction). None when the curve has fewer than three points or is flat.
    """
    sign = 1.0 if _direction(monitor, mode) == "max" else -1.0
    pts = [
        (r.co2_g_total, sign * v, r.epoch)
        for r in records
        if (v := r.metric(monitor)) is not None and math.isfinite(v)
    ]
    if len(pts) < 3:
        return None
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    if x1 <= x0 or y1 <= y0:
        return None
    norm = [((x - x0) / (x1 - x0), (y - y0) / (y1 - y0), e) for x, y, e in pts]
    (ax, ay, _), (bx, by, _) = norm[0], norm[-1]
    # A straight line has no shoulder: demand a bend of at least 2% of the plot's diagonal.
    best, best_d = None, 0.02
    for x, y, e in norm[1:-1]:
        # Signed distance above the chord from the first to the last point.
        d = ((bx - ax) * (y - ay) - (by - ay) * (x - ax)) / math.hypot(bx - ax, by - ay)
        if d > best_d:
            best, best_d = e, d
    return best


def plot_run(
    records: Sequence[EpochRecord],
    path: str | os.PathLike[str],
    *,
    monitor: str | None = None,
    mode: str | None = None,
    stopped_early: bool = False,
    stop_details: Mapping[str, Any] | None = None,
    shoulder_epoch: int | None = None,
    baseline: Sequence[EpochRecord] | None = None,
    baseline_label: str = "run to max_epochs",
    label: str = "this run",
    title: str = "",
) -> Path:
    """Draw a run and write it as a PNG.

    Left: the monitored metric against cumulative CO2e, with the shoulder and (when the run
    stopped early) the stop point marked; a ``baseline`` run, if given, is drawn in grey for
    comparison. Right: energy per epoch stacked by component (CPU, GPU, RAM).

    Args:
        records: the run's epoch records (``Ledger.epochs(run_id)``).
        path: the PNG to write.
        monitor: the metric to draw (default: a validation metric found in the records).
        mode: ``"max"``/``"min"``; sets the knee and where the legend goes. Default: read
            from the metric's name (``policies.metric_direction``), ``"min"`` when it does not
            say.
        stopped_early: whether a policy stopped the run (marks the stop point).
        stop_details: the stopping decision's ``details`` (``Decision.details``); its
            ``shoulder_epoch`` marks the shoulder the policy found.
        shoulder_epoch: the shoulder; default from ``stop_details``, else the curve's knee.
        baseline: another run's records to draw for comparison (e.g. the full run).
        baseline_label: the legend entry of the baseline.
        label: the legend entry of this run.
        title: the figure title.

    Returns:
        The path written.

    Raises:
        ValueError: if ``records`` is empty or ``mode`` is not "min", "max" or None.
        ImportError: if matplotlib is not installed.
    """
    fig = run_figure(
        records,
        monitor=monitor,
        mode=mode,
        stopped_early=stopped_early,
        stop_details=stop_details,
        shoulder_epoch=shoulder_epoch,
        baseline=baseline,
        baseline_label=baseline_label,
        label=label,
        title=title,
    )
    out = Path(path)
    fig.savefig(out, format="png")
    return out


def run_figure(
    records: Sequence[EpochRecord],
    *,
    monitor: str | None = None,
    mode: str | None = None,
    stopped_early: bool = False,
    stop_details: Mapping[str, Any] | None = None,
    shoulder_epoch: int | None = None,
    baseline: Sequence[EpochRecord] | None = None,
    baseline_label: str = "run to max_epochs",
    label: str = "this run",
    title: str = "",
) -> Figure:
    """Draw a run on a new matplotlib ``Figure`` (no pyplot), for ``plot_run`` or a notebook.

    Takes the same arguments as ``plot_run`` less ``path``.

    Returns:
        The figure: the metric panel first in ``fig.axes``, the energy panel second.

    Raises:
        ValueError: if ``records`` is empty or ``mode`` is not "min", "max" or None.
        ImportError: if matplotlib is not installed.
    """
    if not records:
        raise ValueError("records is empty: there is nothing to plot")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    train = train_records(records)
    monitor = pick_monitor(train, monitor)
    direction = _direction(monitor, mode)
    everything = list(train) + list(baseline or ())
    # Milligrams / milliwatt-hours for small runs, so the ticks read 0.5 rather than 0.0005.
    g_max = max((r.co2_g_total for r in everything), default=0.0)
    g_scale, g_unit = (1e3, "mg") if g_max < 1.0 else (1.0, "g")
    wh_max = max((r.energy_kwh * 1e3 for r in train), default=0.0)
    wh_scale, wh_unit = (1e3, "mWh") if wh_max < 1.0 else (1.0, "Wh")
    fig = Figure(figsize=(12, 4.8), dpi=100)
    FigureCanvasAgg(fig)
    ax_m, ax_e = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})

    if monitor is None:
        ax_m.text(0.5, 0.5, "no metric was logged", ha="center", va="center")
    else:
        if baseline:
            b = [
                (r.co2_g_total * g_scale, v)
                for r in train_records(baseline)
                if (v := r.metric(monitor)) is not None
            ]
            if b:
                ax_m.plot(
                    *zip(*b, strict=True), "o-", color="#B0B0B0", ms=3, lw=1.5, label=baseline_label
                )
        pts = [
            (r.co2_g_total * g_scale, v, r.epoch)
            for r in train
            if (v := r.metric(monitor)) is not None
        ]
        if pts:
            xs, ys, es = zip(*pts, strict=True)
            ax_m.plot(xs, ys, "o-", color="#2A7F62", ms=4, lw=2, label=label)
            if shoulder_epoch is None:
                found = (stop_details or {}).get("shoulder_epoch")
                shoulder_epoch = (
                    int(found) if found is not None else knee_epoch(train, monitor, direction)
                )
            if shoulder_epoch is not None and shoulder_epoch in es:
                i = es.index(shoulder_epoch)
                ax_m.plot(
                    xs[i],
                    ys[i],
                    "D",
                    color="#E1A100",
                    ms=11,
                    mec="black",
                    zorder=5,
                    label=f"shoulder (epoch {shoulder_epoch})",
                )
            if stopped_early:
                ax_m.plot(
                    xs[-1],
                    ys[-1],
                    "X",
                    color="#C0392B",
                    ms=14,
                    mec="black",
                    zorder=6,
                    label=f"stopped (epoch {es[-1]})",
                )
                ax_m.axvline(xs[-1], color="#C0392B", ls="--", lw=1)
        ax_m.set_ylabel(monitor)
        # Keep the legend off the curve: a rising one leaves the lower right free.
        ax_m.legend(loc="lower right" if direction == "max" else "upper right", fontsize=8)
    ax_m.set_xlabel(f"cumulative CO2e ({g_unit})")
    ax_m.set_title(f"{monitor or 'metric'} vs cumulative CO2e", fontsize=10)
    ax_m.grid(alpha=0.3)

    epochs = [r.epoch for r in train]
    bottom = [0.0] * len(train)
    for name in COMPONENTS:
        wh = [getattr(r, f"{name}_energy_kwh") * 1e3 * wh_scale for r in train]
        if any(wh):
            ax_e.bar(epochs, wh, bottom=bottom, color=_COLORS[name], label=name.upper())
            bottom = [b + w for b, w in zip(bottom, wh, strict=True)]
    # Whatever the components do not account for (a record without a split) is still shown.
    rest = [max(0.0, r.energy_kwh * 1e3 * wh_scale - b) for r, b in zip(train, bottom, strict=True)]
    if any(x > 1e-12 for x in rest):
        ax_e.bar(epochs, rest, bottom=bottom, color=_COLORS["other"], label="unsplit")
    ax_e.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_e.set_xlabel("epoch")
    ax_e.set_ylabel(f"energy ({wh_unit})")
    ax_e.set_title("energy per epoch by component", fontsize=10)
    tallest = max((r.energy_kwh * 1e3 * wh_scale for r in train), default=0.0)
    if tallest > 0:
        ax_e.set_ylim(0, tallest * 1.25)  # headroom so the legend never hides a bar
    ax_e.legend(fontsize=8, ncol=4, loc="upper center")
    ax_e.grid(alpha=0.3, axis="y")

    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig
