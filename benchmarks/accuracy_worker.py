"""One tool measuring windows on a known trace (run by bench_accuracy.py, one process per run).

Usage: ``python accuracy_worker.py SPEC_FILE``. The JSON spec holds:

- ``tool``: "ours" or "codecarbon";
- ``mode``: "marks" (one meter, a mark every second for 60 s), "long" (one 60 s start/stop
  window) or "short" (three 10 s, then ten 1 s start/stop windows);
- ``measure_power_secs``: CodeCarbon's interval;
- ``start_at``: the ``time.monotonic()`` instant to begin at; ``t0``: the traces' origin;
- ``out``: where to write the JSON result.

Each window is written with the instants that bound it, in seconds since ``t0``: for a
start/stop pair, the instant ``start()`` returned and the instant ``stop()`` was called (the
span the user's code ran in; both tools read their counters within about a millisecond of
those instants); for consecutive ``mark()`` calls, the middle of each call.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

KWH = 3_600_000.0


def sleep_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def run_ours(spec: dict) -> dict:
    from carbon_callbacks import EnergyMeter

    t0 = spec["t0"]
    meter = EnergyMeter(scope="machine")
    meter.start()
    marks = []
    for k in range(61):
        sleep_until(spec["start_at"] + k)
        c0 = time.monotonic()
        reading = meter.mark()
        c1 = time.monotonic()
        marks.append(((c0 + c1) / 2 - t0, reading, c1 - c0))
    methods = dict(meter.methods)
    describe = meter.describe()
    meter.stop()
    pairs = [(k, k + 1) for k in range(60)] + [(k, k + 10) for k in range(0, 60, 10)] + [(0, 60)]
    windows = []
    for i, j in pairs:
        w = meter.window(marks[i][1], marks[j][1])
        windows.append({
            "seconds": j - i, "a": marks[i][0], "b": marks[j][0],
            "cpu_j": w.component_joules("cpu"), "gpu_j": w.component_joules("gpu"),
            "cpu_low": w.components["cpu"].low if "cpu" in w.components else None,
            "cpu_high": w.components["cpu"].high if "cpu" in w.components else None,
            "methods": w.methods,
        })
    call_ms = sorted(m[2] * 1000 for m in marks)
    return {"windows": windows, "methods": methods, "describe": describe,
            "mark_ms_median": call_ms[len(call_ms) // 2], "mark_ms_max": call_ms[-1]}


def describe_hardware(h: object) -> str:
    """CodeCarbon's hardware object in words, with the GPU's counter-or-power choice."""
    name = type(h).__name__
    if name == "GPU":
        devices = getattr(getattr(h, "devices", None), "devices", [])
        how = ["power readings" if getattr(d, "_use_power_fallback", False) else "energy counter"
               for d in devices]
        return f"GPU via {', '.join(how) or 'nothing'}"
    return f"{name} ({getattr(h, '_mode', '')})" if hasattr(h, "_mode") else name


def run_codecarbon(spec: dict) -> dict:
    from codecarbon import OfflineEmissionsTracker

    t0 = spec["t0"]
    lengths = [60] if spec["mode"] == "long" else [10, 10, 10] + [1] * 10
    windows = []
    mode = ""
    sleep_until(spec["start_at"])
    for seconds in lengths:
        tracker = OfflineEmissionsTracker(
            country_iso_code="FRA", measure_power_secs=spec["measure_power_secs"],
            save_to_file=False, log_level="error", allow_multiple_runs=True,
        )
        tracker.start()
        a = time.monotonic()
        sleep_until(a + seconds)
        b = time.monotonic()
        tracker.stop()
        data = tracker.final_emissions_data
        mode = "; ".join(describe_hardware(h) for h in tracker._hardware)
        windows.append({
            "seconds": seconds, "a": a - t0, "b": b - t0,
            "cpu_j": data.cpu_energy * KWH, "gpu_j": data.gpu_energy * KWH,
            "methods": {},
        })
    return {"windows": windows, "methods": {"codecarbon": mode}, "describe": [mode]}


def main() -> int:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    logging.basicConfig(level=logging.ERROR)
    try:
        result = run_ours(spec) if spec["tool"] == "ours" else run_codecarbon(spec)
        result["error"] = ""
    except Exception as exc:  # reported in RESULTS.md, not hidden
        result = {"windows": [], "error": f"{type(exc).__name__}: {exc}"}
    result["spec"] = spec
    tmp = spec["out"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, spec["out"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
