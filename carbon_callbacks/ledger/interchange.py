"""Runs in and out of the ledger: CodeCarbon CSV and our JSONL in, JSONL and CSV out, and an
``EnergyMeter`` window as a run of its own.

Readers return ``(metadata, records)`` pairs, which ``Ledger.import_runs`` writes with their
ids kept, so importing the same file twice adds nothing.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carbon_callbacks.ledger import schema
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
    kwh = window.kwh
    record = EpochRecord(
        epoch=0,
        start_wall=window.start_wall,
        end_wall=window.end_wall,
        seconds=window.seconds,
        energy_kwh=kwh,
        energy_kwh_low=window.low / JOULES_PER_KWH,
        energy_kwh_high=window.high / JOULES_PER_KWH,
        co2_g=em.g,
        co2_g_low=em.low,
        co2_g_high=em.high,
        energy_kwh_total=kwh,
        co2_g_total=em.g,
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


# Column names as CodeCarbon writes them (codecarbon/output_methods/emissions_data.py,
# ``EmissionsData``): energies in kWh, ``emissions`` in kg CO2e, ``duration`` in seconds,
# ``timestamp`` the local time the row was written (the end of the run).
CODECARBON_REQUIRED = ("timestamp", "duration", "emissions", "energy_consumed")


def _num(row: Mapping[str, Any], key: str, where: str) -> float:
    text = (row.get(key) or "").strip()
    if not text:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        raise LedgerError(f"{where}: column {key!r} is not a number ({text!r})") from None
    return value if math.isfinite(value) else 0.0


def _local_timestamp(text: str, where: str) -> float:
    from datetime import datetime

    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise LedgerError(f"{where}: timestamp {text!r} is not an ISO date and time") from None
    return moment.timestamp()  # naive times are local, as CodeCarbon writes them


def read_codecarbon_csv(
    path: str | os.PathLike[str],
) -> list[tuple[dict[str, Any], list[EpochRecord]]]:
    """Turn a CodeCarbon ``emissions.csv`` into ledger runs, one per CodeCarbon run.

    Each run gets one record (stage ``"codecarbon"``) with the file's totals; CodeCarbon keeps
    no per-epoch figures. Rows repeating a ``run_id`` (CodeCarbon appends a cumulative row at
    every flush) count once, by the row with the longest duration.

    Args:
        path: the CSV file.

    Returns:
        (metadata, records) pairs for ``Ledger.import_runs``.

    Raises:
        LedgerError: if the file is not a CodeCarbon emissions file or a value is unreadable.
    """
    import csv
    import hashlib

    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in reader.fieldnames or []]
            rows = [{(k or "").strip(): v for k, v in row.items()} for row in reader]
    except OSError as exc:
        raise LedgerError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError:
        raise LedgerError(f"{path} is not a text CSV file") from None
    missing = [c for c in CODECARBON_REQUIRED if c not in header]
    if missing:
        raise LedgerError(
            f"{path} does not look like a CodeCarbon emissions.csv (no {', '.join(missing)} column)"
        )
    chosen: dict[str, tuple[int, dict[str, Any]]] = {}
    for line, row in enumerate(rows, 2):
        where = f"{path}:{line}"
        key = (row.get("run_id") or "").strip()
        if not key:
            # Old CodeCarbon versions have no run id: each row is its own run.
            digest = hashlib.sha1(f"{path.name}|{line}|{row.get('timestamp')}".encode())
            key = "row-" + digest.hexdigest()[:12]
        duration = _num(row, "duration", where)
        if key not in chosen or duration >= _num(chosen[key][1], "duration", where):
            chosen[key] = (line, row)

    runs = []
    for key, (line, row) in chosen.items():
        where = f"{path}:{line}"
        seconds = _num(row, "duration", where)
        end = _local_timestamp(row.get("timestamp") or "", where)
        kwh = _num(row, "energy_consumed", where)
        g = _num(row, "emissions", where) * 1000.0
        on_cloud = (row.get("on_cloud") or "").strip().upper() == "Y"
        if on_cloud and row.get("cloud_provider"):
            location = f"{row['cloud_provider'].strip()}:{(row.get('cloud_region') or '').strip()}"
        else:
            location = (row.get("country_iso_code") or row.get("region") or "").strip()
        version = (row.get("codecarbon_version") or "").strip()
        source = f"codecarbon {version}".strip()
        record = EpochRecord(
            epoch=0,
            start_wall=end - seconds,
            end_wall=end,
            seconds=seconds,
            energy_kwh=kwh,
            # CodeCarbon gives no range; the record says so by having none.
            energy_kwh_low=kwh,
            energy_kwh_high=kwh,
            co2_g=g,
            co2_g_low=g,
            co2_g_high=g,
            energy_kwh_total=kwh,
            co2_g_total=g,
            power_w=kwh * 3.6e6 / seconds if seconds > 0 else 0.0,
            intensity_g_per_kwh=g / kwh if kwh > 0 else 0.0,
            intensity_source=source,
            cpu_energy_kwh=_num(row, "cpu_energy", where),
            gpu_energy_kwh=_num(row, "gpu_energy", where),
            ram_energy_kwh=_num(row, "ram_energy", where),
            stage="codecarbon",
            pue=_num(row, "pue", where) or 1.0,
        )
        hardware = {
            k: row[k].strip()
            for k in ("cpu_model", "cpu_count", "gpu_model", "gpu_count", "ram_total_size", "os")
            if (row.get(k) or "").strip()
        }
        meta = {
            "run_id": f"cc-{key}",
            "project": (row.get("project_name") or "").strip(),
            "start_wall": end - seconds,
            "end_wall": end,
            "location": location,
            "intensity_source": source,
            "hardware": hardware,
            "methods": {"tracking_mode": (row.get("tracking_mode") or "").strip()},
            "source": f"codecarbon:{path.name}",
            "codecarbon_run_id": (row.get("run_id") or "").strip(),
            "experiment_id": (row.get("experiment_id") or "").strip(),
            "python_version": (row.get("python_version") or "").strip(),
        }
        runs.append((meta, [record]))
    return runs


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
