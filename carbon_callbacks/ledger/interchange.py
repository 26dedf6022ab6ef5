"""Runs in and out of the ledger: CodeCarbon CSV (read by ``codecarbon.py``) and our JSONL in,
JSONL and CSV out, and an ``EnergyMeter`` window as a run of its own.

Readers return ``(metadata, records)`` pairs, which ``Ledger.import_runs`` writes with their
ids kept, so importing the same file twice adds nothing.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carbon_callbacks.ledger import schema
from carbon_callbacks.ledger.codecarbon import read_codecarbon_csv
from carbon_callbacks.ledger.errors import LedgerError
from carbon_callbacks.ledger.location import run_location
from carbon_callbacks.ledger.runs import RunInfo, select_runs
from carbon_callbacks.records import JOULES_PER_KWH, EpochRecord, Window

if TYPE_CHECKING:
    from carbon_callbacks.intensity import IntensitySpec
    from carbon_callbacks.ledger.ledger import Ledger


_END_KEYS = ("end_wall", "stopped_early", "stop_reason", "status", "stopped_by", "error_type")


def import_ops(
    runs: Iterable[tuple[Mapping[str, Any], Sequence[EpochRecord]]], known: set[str]
) -> tuple[list[dict[str, Any]], int]:
    """The writes that import ``runs`` (see ``Ledger.import_runs``), and how many runs are new.

    ``known`` holds the run ids already stored; the new ones are added to it.
    """
    ops: list[dict[str, Any]] = []
    new = 0
    for meta, records in runs:
        meta = dict(meta)
        end = {k: meta.pop(k) for k in _END_KEYS if k in meta}
        uids = list(meta.pop("epoch_uids", None) or ())
        run_id = str(meta.get("run_id") or uuid.uuid4().hex[:12])
        if run_id not in known:
            known.add(run_id)
            new += 1
        meta["run_id"] = run_id
        # Rows already there are kept (ON CONFLICT DO NOTHING): a run that grew since its
        # last import gains its new epochs and its end row, and nothing is doubled.
        ops.append(schema.run_op(meta, fill=False))
        for i, rec in enumerate(records):
            uid = str(uids[i]) if i < len(uids) and uids[i] else f"{run_id}:{i}"
            ops.append(schema.epoch_op(run_id, rec, uid=uid, position=i))
        if end:
            ops.append(
                schema.end_op(
                    run_id,
                    schema.run_end(
                        status=end.get("status"),
                        stopped_early=bool(end.get("stopped_early", False)),
                        stop_reason=str(end.get("stop_reason", "")),
                        stopped_by=str(end.get("stopped_by") or ""),
                        error_type=str(end.get("error_type") or ""),
                    ),
                    end.get("end_wall"),
                )
            )
    return ops, new


def window_run(
    window: Window, *, intensity: IntensitySpec, pue: float, metadata: Mapping[str, Any] | None
) -> tuple[dict[str, Any], EpochRecord]:
    """An ``EnergyMeter`` window as run metadata and its one record (stage ``"meter"``)."""
    from carbon_callbacks.intensity import emissions, resolve

    source = resolve(intensity)
    em = emissions(window, source, pue)
    record = EpochRecord.build(
        epoch=0,
        start_wall=window.start_wall,
        end_wall=window.end_wall,
        seconds=window.seconds,
        energy_kwh=window.kwh,
        energy_kwh_low=window.low / JOULES_PER_KWH,
        energy_kwh_high=window.high / JOULES_PER_KWH,
        co2_g=em.g,
        co2_g_low=em.low,
        co2_g_high=em.high,
        power_w=window.power_w,
        intensity_g_per_kwh=em.intensity_g_per_kwh,
        intensity_source=em.provenance,
        cpu_energy_kwh=window.component_joules("cpu") / JOULES_PER_KWH,
        gpu_energy_kwh=window.component_joules("gpu") / JOULES_PER_KWH,
        ram_energy_kwh=window.component_joules("ram") / JOULES_PER_KWH,
        methods=window.methods,
        stage="meter",
        pue=em.pue,
    )
    meta: dict[str, Any] = {
        "framework": "EnergyMeter",
        "kind": "meter",
        "start_wall": window.start_wall,
        "intensity_source": em.provenance,
        "methods": window.methods,
    }
    location = run_location(source)
    if location:
        meta["location"] = location
    meta.update(metadata or {})
    return meta, record


def read_jsonl(path: str | os.PathLike[str]) -> list[tuple[dict[str, Any], list[EpochRecord]]]:
    """Read runs written by ``export_jsonl`` (so ledgers can be moved or merged).

    Raises:
        LedgerError: if a line is not one of ours.
    """
    path = Path(path)
    runs: dict[str, tuple[dict[str, Any], list[EpochRecord]]] = {}
    uids: dict[str, list[str | None]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise LedgerError(f"cannot read {path}: {exc.strerror or exc}") from exc
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            kind = item.pop("type")
            run_id = item["run_id"]
        except (json.JSONDecodeError, KeyError, AttributeError, TypeError):
            raise LedgerError(f"{path}:{n}: not a carbon-callbacks export line") from None
        if kind == "run":
            meta = {k: item.get(k) for k in _EXPORT_RUN_KEYS if k in item}
            meta.update(item.get("metadata") or {})
            if not item.get("finished"):
                meta.pop("end_wall", None)
                for key in ("stopped_early", "stop_reason", "status", "stopped_by", "error_type"):
                    meta.pop(key, None)
            runs.setdefault(run_id, ({}, []))[0].update(meta)
        elif kind == "epoch":
            runs.setdefault(run_id, ({"run_id": run_id}, []))[1].append(EpochRecord.from_dict(item))
            uids.setdefault(run_id, []).append(item.get("uid"))  # absent in older exports
        else:
            raise LedgerError(f"{path}:{n}: unknown line type {kind!r}")
    for run_id, meta_records in runs.items():
        if run_id in uids:
            meta_records[0]["epoch_uids"] = uids[run_id]
    return list(runs.values())


_EXPORT_RUN_KEYS = (
    "run_id",
    "project",
    "team",
    "user",
    "host",
    "git_commit",
    "framework",
    "start_wall",
    "end_wall",
    "location",
    "intensity_source",
    "source",
    "hardware",
    "methods",
    "hyperparameters",
    "stopped_early",
    "stop_reason",
    "status",
    "stopped_by",
    "error_type",
    "kind",
    "parent_run",
)


def import_files(ledger: Ledger, paths: Iterable[str | os.PathLike[str]]) -> dict[str, int]:
    """Import CodeCarbon CSVs and carbon-callbacks JSONL exports into ``ledger``.

    Returns:
        For each file, how many of its runs were new (a re-import adds nothing).

    Raises:
        LedgerError: for an unreadable file (nothing from that file is written).
    """
    counts = {}
    for p in paths:
        path = Path(p)
        if path.suffix in (".jsonl", ".ndjson"):
            runs = read_jsonl(path)
        else:
            runs = read_codecarbon_csv(path)
        counts[str(path)] = ledger.import_runs(runs)
    return counts


def export_jsonl(
    ledger: Ledger,
    fh: Any,
    run_ids: Sequence[str] | None = None,
    *,
    runs: Sequence[RunInfo] | None = None,
) -> int:
    """Write runs and their epochs as JSON lines (``type`` = ``run`` or ``epoch``).

    Epoch lines carry their row ``uid``, so importing a later export of the same run adds
    only the epochs that are new.

    Args:
        ledger: the ledger.
        fh: a text file open for writing.
        run_ids: only these runs (ids or unique prefixes); None for all.
        runs: the runs to write, already chosen with ``select_runs`` (then ``run_ids`` is
            not used).

    Returns:
        How many runs were written.
    """
    runs = select_runs(ledger, run_ids) if runs is None else list(runs)
    for run in runs:
        fh.write(json.dumps({"type": "run", **run.to_dict()}, default=str) + "\n")
        for uid, rec in ledger.epochs_with_uids(run.run_id):
            line = {"type": "epoch", "run_id": run.run_id, "uid": uid, **rec.to_dict()}
            fh.write(json.dumps(line) + "\n")
    return len(runs)


def export_csv(
    ledger: Ledger,
    fh: Any,
    run_ids: Sequence[str] | None = None,
    *,
    runs: Sequence[RunInfo] | None = None,
) -> int:
    """Write one CSV row per epoch record, with its run's project, team, user and framework.

    Metrics become ``metric:NAME`` columns. ``run_ids`` and ``runs`` choose runs as for
    ``export_jsonl``. Returns how many epoch rows were written.
    """
    import csv

    runs = select_runs(ledger, run_ids) if runs is None else list(runs)
    rows = []
    metric_names: set[str] = set()
    for run in runs:
        for rec in ledger.epochs(run.run_id):
            d = rec.to_dict()
            metrics = d.pop("metrics")
            methods = d.pop("methods")
            metric_names.update(metrics)
            row = {
                "run_id": run.run_id,
                "project": run.project,
                "team": run.team,
                "user": run.user,
                "framework": run.framework,
                **d,
                "methods": ";".join(f"{k}={v}" for k, v in sorted(methods.items())),
                **{f"metric:{k}": v for k, v in metrics.items()},
            }
            rows.append(row)
    fields = ["run_id", "project", "team", "user", "framework"]
    fields += [f for f in EpochRecord.__dataclass_fields__ if f not in ("metrics",)]
    fields += [f"metric:{m}" for m in sorted(metric_names)]
    writer = csv.DictWriter(fh, fieldnames=fields, restval="")
    writer.writeheader()
    writer.writerows(rows)
    return len(rows)
