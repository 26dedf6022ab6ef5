"""What the ledger's runs add up to, and how it is shown: totals and rows (``summary.py``),
tables, units and equivalents (``format.py``), the same run elsewhere (``regions.py``) and the
run chart (``plot.py``, matplotlib loaded on first use)."""

from __future__ import annotations

from carbon_callbacks.reports.format import (
    CAR_G_CO2_PER_KM,
    PHONE_CHARGE_KWH,
    Equivalents,
    as_csv,
    as_json,
    equivalents,
    format_energy,
    format_grams,
    format_time,
    render,
    stream_render,
    text_table,
)
from carbon_callbacks.reports.plot import plot_run
from carbon_callbacks.reports.regions import RegionFootprint, compare_regions, regions_rows
from carbon_callbacks.reports.summary import (
    GROUP_KEYS,
    ReportRow,
    choose_monitor,
    epoch_cells,
    epochs_headers,
    epochs_rows,
    gains_per_kg,
    group_value,
    pick_monitor,
    report_rows,
    run_summary_text,
    runs_rows,
    summarize,
    train_records,
)

__all__ = [
    "CAR_G_CO2_PER_KM",
    "PHONE_CHARGE_KWH",
    "GROUP_KEYS",
    "Equivalents",
    "RegionFootprint",
    "ReportRow",
    "as_csv",
    "as_json",
    "choose_monitor",
    "compare_regions",
    "epoch_cells",
    "epochs_headers",
    "epochs_rows",
    "equivalents",
    "format_energy",
    "format_grams",
    "format_time",
    "gains_per_kg",
    "group_value",
    "pick_monitor",
    "plot_run",
    "regions_rows",
    "render",
    "report_rows",
    "run_summary_text",
    "runs_rows",
    "stream_render",
    "summarize",
    "text_table",
    "train_records",
]
