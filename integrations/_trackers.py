"""The run's summary where MLflow and W&B users look for it: run tags and the W&B run summary.

The per-epoch keys reach MLflow and W&B through each framework's own logger (Lightning's
``MLFlowLogger``/``WandbLogger``, Keras' ``MlflowCallback``, transformers' ``report_to``). What no
logger has a place for is the run as a whole (totals, the intensity's source, each component's
measurement method, why training stopped) in the columns a run table sorts, filters and groups on:

- MLflow: run tags named ``carbon.<field>`` (MLflow namespaces its own tags with dots, as in
  ``mlflow.runName``). Tags rather than params because a param cannot change once set, and a fit
  resumed from a checkpoint logs to the same run again. Tag values are strings; the numeric totals
  also stay sortable as numbers through the last value of the ``co2_g_total`` metric.
- W&B: the run summary, keys ``carbon/<field>`` (``/`` is W&B's section separator).

Nothing here imports mlflow or wandb: a run is published to only where the user's code already
made one (a logger they passed, or the run active when training starts).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from carbon_callbacks.records import COMPONENTS, METHOD_RANK, EpochRecord, RunSummary

__all__ = [
    "MLFLOW_TAG_PREFIX",
    "WANDB_SUMMARY_PREFIX",
    "MlflowRun",
    "WandbRun",
    "active_runs",
    "find_runs",
    "logger_runs",
    "mlflow_tags",
    "publish_summary",
    "summary_fields",
    "wandb_summary",
]

MLFLOW_TAG_PREFIX = "carbon."
WANDB_SUMMARY_PREFIX = "carbon/"

Warn = Callable[..., None]
"""``EpochTracker.warn_once``: ``warn(cause, message, *args)``."""


class TrackerRun(Protocol):
    """A tracker's run that can take the summary fields."""

    def publish(self, fields: Mapping[str, Any]) -> None: ...


def _methods(records: Sequence[EpochRecord]) -> dict[str, str]:
    """Each component's method over the run: the least exact one any epoch used."""
    out: dict[str, str] = {}
    names = [*COMPONENTS, *sorted({c for r in records for c in r.methods} - set(COMPONENTS))]
    for name in names:
        used = [r.methods[name] for r in records if name in r.methods]
        if used:  # an unknown method ranks below "unavailable"
            out[name] = max(used, key=lambda m: METHOD_RANK.get(m, len(METHOD_RANK)))
    return out


def summary_fields(summary: RunSummary) -> dict[str, Any]:
    """The run-level fields published to trackers, as plain numbers, booleans and strings.

    ``intensity_g_per_kwh`` is the run's effective intensity (CO2e over energy and PUE), which
    equals the per-epoch value unless a live source changed it during the run.
    """
    records = summary.epochs
    pue = records[-1].pue if records else 1.0
    if summary.energy_kwh > 0 and pue > 0:
        intensity = summary.co2_g / (summary.energy_kwh * pue)
    else:
        intensity = records[-1].intensity_g_per_kwh if records else 0.0
    sources = dict.fromkeys(r.intensity_source for r in records if r.intensity_source)
    fields: dict[str, Any] = {
        "energy_kwh_total": float(summary.energy_kwh),
        "co2_g_total": float(summary.co2_g),
        "epochs": len(records),
        "intensity_g_per_kwh": float(intensity),
        "intensity_source": "; ".join(sources),
        "pue": float(pue),
    }
    for component, method in _methods(records).items():
        fields[f"method_{component}"] = method
    fields["stopped_early"] = bool(summary.stopped_early)
    fields["stop_reason"] = summary.stop_reason
    fields["status"] = summary.end.status
    if summary.end.stopped_by:
        fields["stopped_by"] = summary.end.stopped_by
    if summary.run_id:
        fields["ledger_run_id"] = summary.run_id
    return fields


def _tag_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # round-trips exactly: float(tag) == the total
    return str(value)


def mlflow_tags(fields: Mapping[str, Any]) -> dict[str, str]:
    """The fields as MLflow run tags (``carbon.co2_g_total`` -> ``"0.0123"``)."""
    return {MLFLOW_TAG_PREFIX + k: _tag_value(v) for k, v in fields.items()}


def wandb_summary(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The fields as W&B run summary entries (``carbon/co2_g_total`` -> ``0.0123``)."""
    return {WANDB_SUMMARY_PREFIX + k: v for k, v in fields.items()}


@dataclass(frozen=True)
class MlflowRun:
    """An MLflow run, by id, reached through an ``MlflowClient`` (finished runs take tags too)."""

    client: Any
    run_id: str

    def publish(self, fields: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        tags = [RunTag(k, v) for k, v in mlflow_tags(fields).items()]
        self.client.log_batch(self.run_id, tags=tags)


@dataclass(frozen=True)
class WandbRun:
    """A W&B run object (``wandb.Run``), live until the user or the process finishes it."""

    run: Any

    def publish(self, fields: Mapping[str, Any]) -> None:
        self.run.summary.update(wandb_summary(fields))


def _class_names(obj: Any) -> set[str]:
    return {cls.__name__ for cls in type(obj).__mro__}


def logger_runs(loggers: Iterable[Any]) -> list[TrackerRun]:
    """The MLflow and W&B runs behind Lightning loggers (either namespace: matched by name)."""
    runs: list[TrackerRun] = []
    for lg in loggers:
        names = _class_names(lg)
        if "MLFlowLogger" in names:
            runs.append(MlflowRun(lg.experiment, lg.run_id))
        elif "WandbLogger" in names:
            runs.append(WandbRun(lg.experiment))
    return runs


def active_runs() -> list[TrackerRun]:
    """The MLflow run and W&B run active now, where the user's code imported those trackers.

    Keras and transformers have no logger objects: their MLflow and W&B callbacks log to the
    active run. Captured when training starts, because transformers' ``MLflowCallback`` ends the
    run it started in ``on_train_end``, before a user callback's ``on_train_end`` runs.
    """
    runs: list[TrackerRun] = []
    mlflow = sys.modules.get("mlflow")
    active = getattr(mlflow, "active_run", None)
    run = active() if callable(active) else None
    if run is not None and mlflow is not None:
        runs.append(MlflowRun(mlflow.MlflowClient(mlflow.get_tracking_uri()), run.info.run_id))
    wandb_run = getattr(sys.modules.get("wandb"), "run", None)
    if wandb_run is not None:
        runs.append(WandbRun(wandb_run))
    return runs


def find_runs(find: Callable[[], list[TrackerRun]], warn: Warn) -> list[TrackerRun]:
    """``find()``, or no runs (with a warning) if looking for them failed."""
    try:
        return find()
    except Exception as exc:  # noqa: BLE001 - a tracker's failure must not end training
        warn("tracker", "could not find the experiment tracker's run (%s); no run summary", exc)
        return []


def publish_summary(runs: Sequence[TrackerRun], summary: RunSummary, warn: Warn) -> None:
    """Put the run's summary fields into each tracker run; a failure warns once, never raises."""
    if not runs:
        return
    fields = summary_fields(summary)
    for run in runs:
        try:
            run.publish(fields)
        except Exception as exc:  # noqa: BLE001 - a tracker's failure must not end training
            warn(
                f"tracker-{type(run).__name__}",
                "could not write the run summary to %s (%s)",
                type(run).__name__,
                exc,
            )
