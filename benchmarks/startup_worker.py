"""One fresh process: start-up times and resident memory of one tool (run by bench_startup.py).

Usage: ``python startup_worker.py TOOL SECONDS OUT`` with TOOL ``ours``, ``codecarbon`` or
``none`` (the bare interpreter, for reference). Measures, in this order: the import, the
construction, start-to-first-reading (ours: ``start()`` then ``mark()``; CodeCarbon: ``start()``,
which takes its first measurement before returning), RSS before and after the import and after
running SECONDS, and ``stop()``. Memory is read from /proc so that no extra module is loaded.
"""

from __future__ import annotations

import json
import logging
import sys
import time


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    tool, seconds, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    logging.basicConfig(level=logging.ERROR)
    res: dict = {"tool": tool, "rss_base": rss_mb()}
    t = time.perf_counter()
    if tool == "ours":
        from carbon_callbacks import EnergyMeter
    elif tool == "codecarbon":
        from codecarbon import OfflineEmissionsTracker
    res["import_s"] = time.perf_counter() - t
    res["rss_import"] = rss_mb()

    t = time.perf_counter()
    if tool == "ours":
        meter = EnergyMeter()
    elif tool == "codecarbon":
        tracker = OfflineEmissionsTracker(country_iso_code="FRA", save_to_file=False,
                                          log_level="error", allow_multiple_runs=True)
    res["construct_s"] = time.perf_counter() - t

    t = time.perf_counter()
    if tool == "ours":
        meter.start()
        meter.mark()
        res["methods"] = dict(meter.methods)
    elif tool == "codecarbon":
        tracker.start()
    res["first_reading_s"] = time.perf_counter() - t

    time.sleep(seconds)
    res["rss_running"] = rss_mb()
    t = time.perf_counter()
    if tool == "ours":
        meter.stop()
    elif tool == "codecarbon":
        tracker.stop()
    res["stop_s"] = time.perf_counter() - t
    res["modules"] = len(sys.modules)
    res["heavy"] = sorted(m for m in ("torch", "pandas", "numpy", "keras", "transformers",
                                      "optuna", "sqlalchemy", "matplotlib") if m in sys.modules)
    with open(out, "w") as f:
        json.dump(res, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
