"""One tool measuring windows on a known trace (run by bench_accuracy.py, one process per run).

Usage: ``python accuracy_worker.py SPEC_FILE``, under the tool's own interpreter (ours, or the
peer's venv). The JSON spec holds:

- ``tool``: a key of ``tools.TOOLS``; ``options``: its keyword options;
- ``mode``: "marks" (ours: one meter, a mark every second for 60 s), "long" (one 60 s
  window) or "short" (three 10 s, then ten 1 s windows), each window a ``begin()`` ...
  ``end()`` of the tool (``tools.py``);
- ``start_at``: the ``time.monotonic()`` instant to begin at; ``t0``: the traces' origin;
- ``out``: where to write the JSON result.

Each window is written with the instants that bound it, in seconds since ``t0``: for a
begin/end pair, the instant ``begin()`` returned and the instant ``end()`` was called (the
span the user's code ran in); for consecutive ``mark()`` calls, the instant each read the
counters (``Reading.monotonic``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

from startup_worker import tree_pids

import tools

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
        # The instant the mark read the counters (its reading's clock), not the call's middle:
        # a mark that waits for the CPU on a loaded machine reads at its start.
        marks.append((reading.monotonic - t0, reading, c1 - c0))
    methods = dict(meter.methods)
    describe = meter.describe()
    meter.stop()
    pairs = [(k, k + 1) for k in range(60)] + [(k, k + 10) for k in range(0, 60, 10)] + [(0, 60)]
    windows = []
    for i, j in pairs:
        w = meter.window(marks[i][1], marks[j][1])
        windows.append({
            "seconds": j - i, "a": marks[i][0], "b": marks[j][0],
            "cpu": w.component_joules("cpu"), "gpu": w.component_joules("gpu"),
            "dram": w.component_joules("ram") if w.methods.get("ram") == "counter" else None,
            "ram": w.component_joules("ram") if w.methods.get("ram") == "model" else None,
            "gpu_range": ([w.components["gpu"].low, w.components["gpu"].high]
                          if "gpu" in w.components else None),
        })
    call_ms = sorted(m[2] * 1000 for m in marks)
    return {"windows": windows, "methods": methods, "describe": describe,
            "mark_ms_median": call_ms[len(call_ms) // 2], "mark_ms_max": call_ms[-1]}


def run_tool(spec: dict) -> dict:
    tool = tools.get(spec["tool"], **spec.get("options", {}))
    t0 = spec["t0"]
    lengths = spec.get("lengths") or ([60] if spec["mode"] == "long" else [10, 10, 10] + [1] * 10)
    tool.load()
    if spec["tool"] == "carbontracker":
        tool.options["spans"] = len(lengths)
    windows, notes = [], []
    tool.make()  # the first tracker is built during the lead, away from the windows
    if spec["tool"] == "zeus" and spec["gpu"] == "polled":
        # Zeus polls a GPU that lacks the energy counter from a helper process with no pause
        # (its inferred period is 0 s): a full core. Its helpers started by make() run at a
        # lower priority here, so that they do not starve the other tools' processes.
        for pid in tree_pids(os.getpid())[1:]:
            os.setpriority(os.PRIO_PROCESS, pid, 10)
    sleep_until(spec["start_at"])
    try:
        for seconds in lengths:
            if tool.one_shot and windows:
                tool.close()
                tool.make()  # a new tracker per window, as a user's separate runs
            w = tool.window(lambda s=seconds: time.sleep(s))
            notes += w.pop("notes")
            w["seconds"] = seconds
            w["a"] -= t0
            w["b"] -= t0
            windows.append(w)
        described = tool.describe()
    finally:
        tool.close()
    return {"windows": windows, "methods": {spec["tool"]: described},
            "notes": sorted(set(notes))}


def main() -> int:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    logging.basicConfig(level=logging.ERROR)
    try:
        result = run_ours(spec) if spec["mode"] == "marks" else run_tool(spec)
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
