"""CodeCarbon's ``emissions.csv`` read as ledger runs, so history kept with CodeCarbon joins ours.

Figures are read as decimals, so the grams and the intensity derived from them are the nearest
floats to what the file says (0.0004 kg over 0.002 kWh is 200 g/kWh, not 200.00000000000003).
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from carbon_callbacks.ledger.errors import LedgerError
from carbon_callbacks.records import EpochRecord

# Column names as CodeCarbon writes them (codecarbon/output_methods/emissions_data.py,
# ``EmissionsData``): energies in kWh, ``emissions`` in kg CO2e, ``duration`` in seconds,
# ``timestamp`` the local time the row was written (the end of the run).
CODECARBON_REQUIRED = ("timestamp", "duration", "emissions", "energy_consumed")

_ZERO = Decimal(0)


def _decimal(row: Mapping[str, Any], key: str, where: str) -> Decimal:
    """A column's value (0 when the column is absent or empty; ``inf``/``nan`` read as 0)."""
    text = (row.get(key) or "").strip()
    if not text:
        return _ZERO
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise LedgerError(f"{where}: column {key!r} is not a number ({text!r})") from None
    return value if value.is_finite() else _ZERO


def _local_timestamp(text: str, where: str) -> float:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise LedgerError(f"{where}: timestamp {text!r} is not an ISO date and time") from None
    return moment.timestamp()  # naive times are local, as CodeCarbon writes them


def _rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """Each data row with the line it ends on; a row cut short is refused, naming its line."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in reader.fieldnames or []]
            missing = [c for c in CODECARBON_REQUIRED if c not in header]
            if missing:
                raise LedgerError(
                    f"{path} does not look like a CodeCarbon emissions.csv "
                    f"(no {', '.join(missing)} column)"
                )
            rows = []
            for row in reader:
                where = f"{path}:{reader.line_num}"
                # DictReader fills the columns a short row lacks with None: a row cut short
                # (a kill or a full disk while CodeCarbon wrote it) is not a 0 kWh run.
                present = sum(v is not None for k, v in row.items() if k is not None)
                if present < len(header):
                    raise LedgerError(
                        f"{where}: the row has {present} of the header's {len(header)} columns "
                        "(cut short?); fix or delete that line and import again"
                    )
                clean = {(k or "").strip(): v for k, v in row.items() if k is not None}
                empty = [c for c in CODECARBON_REQUIRED if not (clean.get(c) or "").strip()]
                if empty:
                    raise LedgerError(
                        f"{where}: column {empty[0]!r} is empty; fix or delete that line and "
                        "import again"
                    )
                rows.append((reader.line_num, clean))
    except OSError as exc:
        raise LedgerError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError:
        raise LedgerError(f"{path} is not a text CSV file") from None
    except csv.Error as exc:
        raise LedgerError(f"{path} is not a readable CSV file ({exc})") from None
    return rows


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
        LedgerError: if the file is not a CodeCarbon emissions file, a row is cut short or a
            value is unreadable (the message names the line); nothing is imported then.
    """
    path = Path(path)
    chosen: dict[str, tuple[int, dict[str, Any]]] = {}
    for line, row in _rows(path):
        key = (row.get("run_id") or "").strip()
        if not key:
            # Old CodeCarbon versions have no run id: each row is its own run.
            digest = hashlib.sha1(f"{path.name}|{line}|{row.get('timestamp')}".encode())
            key = "row-" + digest.hexdigest()[:12]
        duration = _decimal(row, "duration", f"{path}:{line}")
        if key not in chosen or duration >= _decimal(chosen[key][1], "duration", ""):
            chosen[key] = (line, row)
    return [_run(path, key, line, row) for key, (line, row) in chosen.items()]


def _run(
    path: Path, key: str, line: int, row: Mapping[str, Any]
) -> tuple[dict[str, Any], list[EpochRecord]]:
    where = f"{path}:{line}"
    seconds = _decimal(row, "duration", where)
    end = _local_timestamp(row.get("timestamp") or "", where)
    kwh = _decimal(row, "energy_consumed", where)
    grams = _decimal(row, "emissions", where) * 1000
    on_cloud = (row.get("on_cloud") or "").strip().upper() == "Y"
    if on_cloud and row.get("cloud_provider"):
        location = f"{row['cloud_provider'].strip()}:{(row.get('cloud_region') or '').strip()}"
    else:
        location = (row.get("country_iso_code") or row.get("region") or "").strip()
    version = (row.get("codecarbon_version") or "").strip()
    source = f"codecarbon {version}".strip()
    # CodeCarbon gives no range: build() makes each range the value itself.
    record = EpochRecord.build(
        epoch=0,
        start_wall=end - float(seconds),
        end_wall=end,
        seconds=float(seconds),
        energy_kwh=float(kwh),
        co2_g=float(grams),
        power_w=float(kwh * 3_600_000 / seconds) if seconds > 0 else 0.0,
        intensity_g_per_kwh=float(grams / kwh) if kwh > 0 else 0.0,
        intensity_source=source,
        cpu_energy_kwh=float(_decimal(row, "cpu_energy", where)),
        gpu_energy_kwh=float(_decimal(row, "gpu_energy", where)),
        ram_energy_kwh=float(_decimal(row, "ram_energy", where)),
        stage="codecarbon",
        pue=float(_decimal(row, "pue", where)) or 1.0,
    )
    hardware = {
        k: row[k].strip()
        for k in ("cpu_model", "cpu_count", "gpu_model", "gpu_count", "ram_total_size", "os")
        if (row.get(k) or "").strip()
    }
    meta = {
        "run_id": f"cc-{key}",
        "project": (row.get("project_name") or "").strip(),
        "start_wall": end - float(seconds),
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
    return meta, [record]
