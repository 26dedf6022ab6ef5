"""Start-up, memory and idle CPU of every tool, each run in a fresh process of its own interpreter.

Runs interleave the tools (ours, each installed peer, and a bare interpreter), so all pay
their cold start as a user's job does (startup_worker.py). Ratios are taken within a round:
each peer over ours. Prints a markdown section.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peers  # noqa: E402
from figures import HERE, PYTHON, REPO, headline, log, spread, table  # noqa: E402

RUNS = 4
RUN_SECONDS = 2.0

WHAT = {
    "ours": "`EnergyMeter()`; first reading: `start()` + `mark()`",
    "codecarbon": "`OfflineEmissionsTracker(country_iso_code=\"FRA\", save_to_file=False)`; "
                  "`start()` (it measures once before returning)",
    "carbontracker": "`CarbonTracker(epochs=2, log_dir=None, verbose=0, ignore_errors=True)` "
                     "(starts its threads); `epoch_start()` (its first power sample is taken "
                     "by its thread over the next second)",
    "zeus": "`ZeusMonitor()`; `begin_window()` (reads the counters)",
    "perun": "no object; from calling a `@perun.perun` function to its body starting (perun "
             "sets up its backends and starts its sampling process in between)",
    "eco2ai": "`Tracker(alpha_2_code=\"FR\", ...)`; `start()` (starts its scheduler)",
}


def one(runner: peers.Runner | None, out: str) -> dict:
    python, key = (runner.python, runner.key) if runner else (PYTHON, "none")
    proc = subprocess.run([python, os.path.join(HERE, "startup_worker.py"), key,
                           str(RUN_SECONDS), out], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, PYTHONPATH=HERE))
    try:
        with open(out) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {"tool": key, "error": proc.stderr.strip()[-300:]}


def main() -> int:
    found, missing = peers.runners()
    keys = [r.key for r in found]
    runs: dict[str, list[dict]] = {k: [] for k in [*keys, "none"]}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(RUNS):
            for r in [*found, None]:
                key = r.key if r else "none"
                runs[key].append(one(r, os.path.join(tmp, f"{key}{i}.json")))
            log(f"startup: round {i + 1}/{RUNS}")
    ok = {k: [r for r in rs if "error" not in r] for k, rs in runs.items()}

    def total(r: dict) -> float:
        return r["import_s"] + r["construct_s"] + r["first_reading_s"]

    figures = {
        "import": lambda r: r["import_s"] * 1000,
        "construction": lambda r: r["construct_s"] * 1000,
        "start to first reading": lambda r: r["first_reading_s"] * 1000,
        "import + construct + first reading": lambda r: total(r) * 1000,
        "stop": lambda r: r["stop_s"] * 1000,
        "RSS added by import": lambda r: r["rss_import"] - r["rss_base"],
        "RSS added, imported and running (process tree)":
            lambda r: r["rss_running"] - r["rss_base"],
        "CPU while idle (all its threads and helper processes)":
            lambda r: r["idle_cpu"] * 100,
    }
    units = {"RSS": (" MB", "{:.1f}"), "CPU": ("% of a core", "{:.2f}")}
    rows, cells = [], {}
    for name, fn in figures.items():
        unit, fmt = next((v for k, v in units.items() if name.startswith(k)), (" ms", "{:.4g}"))
        row = [name]
        for k in keys:
            cells[(name, k)] = [fn(r) for r in ok[k]]
            row.append(spread(cells[(name, k)], fmt, unit))
        rows.append(row)
    ratio_rows = []
    for name in ("import + construct + first reading",
                 "RSS added, imported and running (process tree)"):
        row = [f"{name}: tool / ours"]
        for k in keys[1:]:
            pairs = [(fn_o, fn_p) for fn_o, fn_p in zip(runs["ours"], runs[k], strict=True)
                     if "error" not in fn_o and "error" not in fn_p]
            fn = figures[name]
            row.append(spread([fn(p) / fn(o) for o, p in pairs if fn(o) > 0], "{:.3g}", "x"))
        ratio_rows.append(row)
    labels = [r.label for r in found]
    ahead = []
    for name in figures:
        mine = cells.get((name, "ours")) or []
        if not mine:
            continue
        for k, lab in zip(keys[1:], labels[1:], strict=True):
            theirs = cells.get((name, k)) or []
            if theirs and statistics.median(theirs) < statistics.median(mine):
                ahead.append(f"{lab} on {name} ({statistics.median(theirs):.3g} vs ours "
                             f"{statistics.median(mine):.3g})")
    out = ["## Start-up, memory and idle CPU", ""]
    out.append(
        f"Fresh interpreter per run (each tool in its own environment), {RUNS} runs per tool, "
        "interleaved; median (min-max). Memory: resident set of the process and the helper "
        "processes it started, over the interpreter's own "
        f"(base {spread([r['rss_base'] for r in ok['none']], '{:.1f}', ' MB')}); "
        f"running and idle CPU: over {RUN_SECONDS:.0f} s, one second after the first reading "
        "(the machine has 2 logical CPUs, shared with other work while this ran). What each "
        "tool does:")
    out.append("")
    out += [f"- {r.label}: {WHAT.get(r.key, '')}" for r in found]
    out.append("")
    out.append(peers.versions_line(found, missing))
    out.append("")
    out.append(table(["figure", *labels], rows + [[r[0], "1", *r[1:]] for r in ratio_rows]))
    out.append("")
    for k, label in zip(keys, labels, strict=True):
        if ok[k]:
            r = ok[k][0]
            out.append(f"- {label}: {r['modules']} modules loaded; heavy ones: "
                       f"{', '.join(r['heavy']) or 'none'}; {r['processes']} process(es)")
        for r in runs[k]:
            if "error" in r:
                out.append(f"- {label} run failed: {r['error']}")
    out.append("")
    out.append("Where a peer is ahead of ours (lower median): "
               + ("; ".join(ahead) if ahead else "nowhere") + ".")
    if ahead:
        headline("Start-up figures where a peer is ahead of ours: " + "; ".join(ahead) + ".")
    if "ours" in ok and ok["ours"]:
        def best(name: str) -> str:
            scored = [(spread(cells[(name, k)], "{:.3g}"), k, lab) for k, lab in
                      zip(keys[1:], labels[1:], strict=True) if cells[(name, k)]]
            if not scored:
                return "none measured"
            med = min((statistics.median(cells[(name, k)]), lab) for _, k, lab in scored)
            return f"{med[1]} {med[0]:.3g}"

        headline("Start-up, fresh interpreter, import + construction + first reading (ms): ours "
                 f"{rows[3][1]}; best peer {best('import + construct + first reading')}; "
                 + ", ".join(f"{lab} {rows[3][i + 2]}" for i, lab in enumerate(labels[1:]))
                 + ".")
        headline("Memory added, imported and running (MB, process tree): ours "
                 f"{rows[6][1]}; best peer "
                 f"{best('RSS added, imported and running (process tree)')}; "
                 + ", ".join(f"{lab} {rows[6][i + 2]}" for i, lab in enumerate(labels[1:]))
                 + ".")
        headline("CPU while idle (% of a core): ours "
                 f"{rows[7][1]}; best peer "
                 f"{best('CPU while idle (all its threads and helper processes)')}; "
                 + ", ".join(f"{lab} {rows[7][i + 2]}" for i, lab in enumerate(labels[1:]))
                 + ".")
    print("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
