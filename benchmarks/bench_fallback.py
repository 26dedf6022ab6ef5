"""No readable RAPL counter (this machine): what each tool reports, idle and under CPU load.

One process per tool, in its own interpreter (fallback_worker.py), one after another so that
each sees only its own load: idle, then 1 and 2 spinning child processes (this machine has 2
logical CPUs, so 200% is the most it can show of the 300% case). Prints a markdown section.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peers  # noqa: E402
from fallback_worker import LEVELS  # noqa: E402
from figures import HERE, REPO, headline, log, spread, table  # noqa: E402

SECONDS = 3.0
REPS = 2


def main() -> int:
    found, missing = peers.runners()
    res: dict[str, list[dict]] = {}
    fails = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in found:
            path = os.path.join(tmp, f"{r.key}.json")
            proc = subprocess.run([r.python, os.path.join(HERE, "fallback_worker.py"), r.key,
                                   str(SECONDS), str(REPS), path], cwd=REPO, capture_output=True,
                                  text=True, timeout=600, env=dict(os.environ, PYTHONPATH=HERE))
            try:
                with open(path) as f:
                    res[r.key] = json.load(f)
            except (OSError, ValueError):
                fails.append(f"- {r.label} failed: {proc.stderr.strip()[-300:]}")
            log(f"fallback: {r.label} done")
    cols = []
    for r in found:
        if r.key not in res:
            continue
        if r.key == "ours":
            cols += [("ours (process, default)", r.key, "cpu_w", "ram_w"),
                     ("ours (machine)", r.key, "machine_cpu_w", "machine_ram_w")]
        else:
            cols.append((r.label, r.key, "cpu_w", "ram_w"))

    def cell(key: str, field: str, level: int) -> str:
        vals = [row[field] for row in res[key] if row["level"] == level]
        if vals and all(v is None for v in vals):
            return "none"
        return spread([v for v in vals if v is not None], "{:.2f}", " W")

    names = {0: "idle", 1: "1 core busy", 2: "2 cores busy (all of this machine)"}
    rows = []
    for level in LEVELS:
        cores = [row["cores"] for k in res for row in res[k] if row["level"] == level]
        rows.append([f"CPU, {names[level]} (measured {spread(cores, '{:.2f}')} cores)"]
                    + [cell(k, f, level) for _, k, f, _ in cols])
    rows.append(["RAM, idle"] + [cell(k, f, 0) for _, k, _, f in cols])
    out = ["## No RAPL counter: what each tool reports", ""]
    out.append(
        f"This machine has no readable RAPL counter and no GPU. Each tool in its own process, "
        f"one after another: {REPS} windows of {SECONDS:.0f} s per level, a fresh tracker per "
        "window, the load being that many pure-Python spinning child processes of the "
        "measuring process (the way a training job's data workers are its children). The "
        "seed case is a CPU at 300% load; with 2 logical CPUs, 200% is the most this machine "
        "can show. Watts are the tool's joules over the window's seconds. Ours `process` is "
        "its default scope (this process tree's share), `machine` the whole machine.")
    out.append("")
    out.append(peers.versions_line(found, missing))
    out.append("")
    out.append(table(["figure"] + [c[0] for c in cols], rows))
    out.append("")
    out.append("What each tool used:")
    out.append("")
    for label, key, _, _ in cols:
        if label != "ours (machine)":
            out.append(f"- {label}: {res[key][-1].get('describe') or '-'}")
        notes = sorted({n for row in res[key] for n in row.get("notes", [])})
        if notes:
            out.append(f"  - notes: {'; '.join(notes)}")
    out += fails
    if rows:
        headline("No RAPL counter (this machine), CPU watts idle / 1 core / 2 cores busy: "
                 + "; ".join(f"{c[0]} " + " / ".join(row[i + 1].split(" (")[0]
                                                      for row in rows[:3])
                             for i, c in enumerate(cols)) + ".")
    print("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
