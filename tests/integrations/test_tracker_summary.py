"""The run summary published to trackers, built from the run's records alone (no tracker)."""

from __future__ import annotations

import logging

import pytest

from carbon_callbacks.integrations._trackers import (
    MlflowRun,
    WandbRun,
    logger_runs,
    mlflow_tags,
    publish_summary,
    summary_fields,
    wandb_summary,
)
from carbon_callbacks.records import EpochRecord, RunSummary
from carbon_callbacks.tracking import EpochTracker


def record(epoch, *, kwh=1e-4, intensity=56.0, source="explicit 56 g/kWh", methods=None, pue=1.0):
    co2 = kwh * intensity * pue
    return EpochRecord(
        epoch=epoch, start_wall=float(epoch), end_wall=epoch + 1.0, seconds=1.0,
        energy_kwh=kwh, energy_kwh_low=kwh, energy_kwh_high=kwh, co2_g=co2, co2_g_low=co2,
        co2_g_high=co2, energy_kwh_total=kwh * (epoch + 1), co2_g_total=co2 * (epoch + 1),
        power_w=kwh * 3.6e6, intensity_g_per_kwh=intensity, intensity_source=source,
        methods=methods or {"cpu": "counter", "ram": "model"}, pue=pue,
    )


def summary_of(records, **kwargs):
    return RunSummary(
        run_id=kwargs.pop("run_id", "abc123"), start_wall=0.0, end_wall=float(len(records)),
        epochs=tuple(records), energy_kwh=sum(r.energy_kwh for r in records),
        co2_g=sum(r.co2_g for r in records), **kwargs,
    )


def test_each_component_reports_the_least_exact_method_any_epoch_used():
    records = [record(0), record(1, methods={"cpu": "model", "ram": "model", "gpu": "polled"})]
    fields = summary_fields(summary_of(records))
    assert (fields["method_cpu"], fields["method_gpu"], fields["method_ram"]) == (
        "model", "polled", "model")


def test_the_intensity_is_the_runs_effective_one_when_a_live_source_changed_it():
    records = [record(0, intensity=100.0, source="live A"), record(1, intensity=300.0,
                                                                   source="live B")]
    fields = summary_fields(summary_of(records))
    assert fields["intensity_g_per_kwh"] == pytest.approx(200.0)
    assert fields["intensity_source"] == "live A; live B"


def test_pue_is_not_counted_in_the_intensity():
    fields = summary_fields(summary_of([record(0, pue=1.5)]))
    assert fields["intensity_g_per_kwh"] == pytest.approx(56.0) and fields["pue"] == 1.5


def test_mlflow_tags_are_strings_that_give_back_the_exact_totals():
    summary = summary_of([record(0), record(1)], stopped_early=True, stop_reason="budget spent")
    tags = mlflow_tags(summary_fields(summary))
    assert all(k.startswith("carbon.") and isinstance(v, str) for k, v in tags.items())
    assert float(tags["carbon.co2_g_total"]) == summary.co2_g
    assert float(tags["carbon.energy_kwh_total"]) == summary.energy_kwh
    assert tags["carbon.stopped_early"] == "true"
    assert tags["carbon.stop_reason"] == "budget spent"
    assert tags["carbon.ledger_run_id"] == "abc123" and tags["carbon.epochs"] == "2"


def test_wandb_summary_keeps_numbers_and_booleans_in_the_carbon_section():
    summary = summary_of([record(0)], run_id="")
    entries = wandb_summary(summary_fields(summary))
    assert entries["carbon/co2_g_total"] == summary.co2_g
    assert entries["carbon/stopped_early"] is False and entries["carbon/stop_reason"] == ""
    assert "carbon/ledger_run_id" not in entries  # no ledger, no id


def test_a_run_without_epochs_still_has_a_summary():
    fields = summary_fields(summary_of([]))
    assert fields["energy_kwh_total"] == 0.0 and fields["epochs"] == 0
    assert fields["intensity_source"] == "" and not any(k.startswith("method_") for k in fields)


class Refuses:
    def publish(self, fields):
        raise ConnectionError("tracking server down")


class Keeps:
    def __init__(self):
        self.got = []

    def publish(self, fields):
        self.got.append(dict(fields))


def test_a_tracker_refusing_the_summary_warns_once_and_the_others_still_get_it(caplog):
    tracker = EpochTracker(intensity=56.0, ledger=False)
    keeps = Keeps()
    summary = summary_of([record(0)])
    with caplog.at_level(logging.WARNING, logger="carbon_callbacks.tracking.tracker"):
        publish_summary([Refuses(), keeps], summary, tracker.warn_once)
        publish_summary([Refuses(), keeps], summary, tracker.warn_once)
    warnings = [r.getMessage() for r in caplog.records if "tracking server down" in r.getMessage()]
    assert len(warnings) == 1 and "Refuses" in warnings[0]
    assert [g["co2_g_total"] for g in keeps.got] == [summary.co2_g] * 2


def test_lightning_loggers_are_matched_in_either_namespace_by_their_class_name():
    class MLFlowLogger:  # stands for lightning's and pytorch_lightning's classes alike
        experiment = "client"
        run_id = "r1"

    class WandbLogger:
        experiment = "run"

    class Derived(MLFlowLogger):
        run_id = "r2"

    class CSVLogger:
        pass

    runs = logger_runs([MLFlowLogger(), WandbLogger(), Derived(), CSVLogger()])
    assert runs == [MlflowRun("client", "r1"), WandbRun("run"), MlflowRun("client", "r2")]


def test_summary_fields_use_the_records_as_the_tracker_finished_them():
    tracker = EpochTracker(intensity=56.0, ledger=False)
    tracker.fit_start()
    tracker.epoch_start(0)
    tracker.epoch_end(0)
    summary = tracker.fit_end()
    fields = summary_fields(summary)
    assert fields["energy_kwh_total"] == summary.energy_kwh == tracker.records[-1].energy_kwh_total
    assert fields["intensity_g_per_kwh"] == pytest.approx(56.0)
