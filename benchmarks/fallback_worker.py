"""What one tool reports with no readable energy counter, idle and under CPU load.

Usage: ``python fallback_worker.py TOOL SECONDS REPS OUT`` under the tool's own interpreter
(run by bench_fallback.py). For each load level (0, 1, 2 busy cores) the worker starts that
many spinning child processes (pure-Python loops, one core each), so the load belongs to the
measuring process's tree, as a training job's data workers do; then REPS times: a fresh
tracker, one window of SECONDS, its CPU and RAM joules over the window's seconds. Ours runs
two meters on the same windows: ``scope="process"`` (the default) around ``scope="machine"``.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time

from startup_worker import cpu_s

import tools

LEVELS = (0, 1, 2)


def watts(j: float | None, seconds: float) -> float | None:
    return None if j is None else j / seconds


def main() -> int:
    key, seconds, reps, out = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    logging.basicConfig(level=logging.ERROR)
    tool = tools.get(key)
    tool.load()
    inner = tools.get("ours", scope="machine") if key == "ours" else None
    if inner:
        inner.load()
    results = []
    for level in LEVELS:
        spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                    for _ in range(level)]
        time.sleep(0.5)
        try:
            for _ in range(reps):
                if key == "carbontracker":
                    tool.options["spans"] = 1
                tool.make()
                held: dict = {}

                pids = [p.pid for p in spinners]

                def body(held: dict = held, pids: list[int] = pids) -> None:
                    c0, t0 = cpu_s(pids), time.monotonic()
                    if inner:
                        inner.make()
                        held["machine"] = inner.window(lambda: time.sleep(seconds))
                    else:
                        time.sleep(seconds)
                    held["cores"] = (cpu_s(pids) - c0) / (time.monotonic() - t0)

                w = tool.window(body)
                described = tool.describe()
                tool.close()
                span = w["b"] - w["a"]
                row = {"level": level, "cores": held["cores"], "seconds": span,
                       "cpu_w": watts(w["cpu"], span),
                       "ram_w": watts(w["ram"] if w["ram"] is not None else w["dram"], span),
                       "notes": w["notes"], "describe": described}
                if inner:
                    m = held["machine"]
                    row["machine_cpu_w"] = watts(m["cpu"], m["b"] - m["a"])
                    row["machine_ram_w"] = watts(m["ram"], m["b"] - m["a"])
                    row["describe"] = "; ".join(tool.meter.describe())
                results.append(row)
        finally:
            for p in spinners:
                p.kill()
                p.wait()
    with open(out, "w") as f:
        json.dump(results, f, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
