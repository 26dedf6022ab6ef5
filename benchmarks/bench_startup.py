"""Start-up and memory, ours vs CodeCarbon's OfflineEmissionsTracker, in fresh processes.

Each run is a new interpreter (startup_worker.py), runs interleaved ours / CodeCarbon / bare
interpreter, so both tools pay their cold start as a user's job does. Prints a markdown section.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from figures import HERE, PYTHON, REPO, headline, log, spread, table  # noqa: E402

RUNS = 5
RUN_SECONDS = 2.0


def one(tool: str, out: str) -> dict:
    proc = subprocess.run([PYTHON, os.path.join(HERE, "startup_worker.py"), tool,
                           str(RUN_SECONDS), out], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    try:
        with open(out) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {"tool": tool, "error": proc.stderr.strip()[-300:]}


def main() -> int:
    tools = ("ours", "codecarbon", "none")
    runs: dict[str, list[dict]] = {t: [] for t in tools}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(RUNS):
            for tool in tools:
                runs[tool].append(one(tool, os.path.join(tmp, f"{tool}{i}.json")))
            log(f"startup: round {i + 1}/{RUNS}")
    ok = {t: [r for r in rs if "error" not in r] for t, rs in runs.items()}

    def col(tool: str, key: str, scale: float = 1.0) -> list[float]:
        return [r[key] * scale for r in ok[tool]]

    def paired(key: str) -> list[float]:
        # Ratio CodeCarbon / ours within the same round.
        pairs = zip(runs["ours"], runs["codecarbon"], strict=True)
        return [c[key] / o[key] for o, c in pairs
                if "error" not in o and "error" not in c and o[key] > 0]

    out = ["## Start-up and memory", ""]
    out.append(f"Fresh interpreter per run, {RUNS} runs per tool, interleaved; ours is "
               "`EnergyMeter()` with defaults, CodeCarbon is "
               "`OfflineEmissionsTracker(country_iso_code=\"FRA\", save_to_file=False, "
               "log_level=\"error\")`. First reading: ours `start()` + `mark()`; CodeCarbon "
               "`start()` (it measures once before returning). Ratio: CodeCarbon / ours, "
               "taken within each round. Memory: RSS from /proc/self/status, added over the "
               f"interpreter's own (base {spread(col('none', 'rss_base'), '{:.1f}', ' MB')}); "
               f"running: after {RUN_SECONDS:.0f} s started.")
    out.append("")
    rows = []
    for key, name in (("import_s", "import"), ("construct_s", "construction"),
                      ("first_reading_s", "start to first reading"), ("stop_s", "stop()")):
        rows.append([name, spread(col("ours", key, 1000), "{:.3g}", " ms"),
                     spread(col("codecarbon", key, 1000), "{:.4g}", " ms"),
                     spread(paired(key), "{:.3g}", "x")])
    total_ours = [r["import_s"] + r["construct_s"] + r["first_reading_s"] for r in ok["ours"]]
    total_cc = [r["import_s"] + r["construct_s"] + r["first_reading_s"]
                for r in ok["codecarbon"]]
    rows.append(["import + construct + first reading",
                 spread([x * 1000 for x in total_ours], "{:.3g}", " ms"),
                 spread([x * 1000 for x in total_cc], "{:.4g}", " ms"),
                 spread([c / o for o, c in zip(total_ours, total_cc, strict=False) if o > 0],
                        "{:.3g}", "x")])
    for key, name in (("rss_import", "RSS added by import"),
                      ("rss_running", "RSS added, imported and running")):
        ours = [r[key] - r["rss_base"] for r in ok["ours"]]
        cc = [r[key] - r["rss_base"] for r in ok["codecarbon"]]
        rows.append([name, spread(ours, "{:.1f}", " MB"), spread(cc, "{:.1f}", " MB"),
                     spread([c / o for o, c in zip(ours, cc, strict=False) if o > 0],
                            "{:.3g}", "x")])
    out.append(table(["figure", "ours", "CodeCarbon", "CodeCarbon / ours"], rows))
    if total_ours and total_cc:
        headline(f"Start-up, fresh interpreter, import + construction + first reading: ours "
                 f"{rows[4][1]}, CodeCarbon {rows[4][2]} (CodeCarbon / ours {rows[4][3]}); "
                 f"`start()` to first reading alone: ours {rows[2][1]}, CodeCarbon {rows[2][2]}.")
        headline(f"Memory added by importing and running: ours {rows[6][1]}, CodeCarbon "
                 f"{rows[6][2]} ({rows[6][3]}).")
    out.append("")
    for tool in ("ours", "codecarbon"):
        if ok[tool]:
            r = ok[tool][0]
            extra = f", methods {r['methods']}" if "methods" in r else ""
            out.append(f"- {tool}: {r['modules']} modules loaded; heavy ones: "
                       f"{', '.join(r['heavy']) or 'none'}{extra}")
        for r in runs[tool]:
            if "error" in r:
                out.append(f"- {tool} run failed: {r['error']}")
    print("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
