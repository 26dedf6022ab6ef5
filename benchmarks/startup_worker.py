"""One fresh process: start-up times, memory and idle CPU of one tool (run by bench_startup.py).

Usage: ``python startup_worker.py TOOL SECONDS OUT`` under the tool's own interpreter, with
TOOL a key of ``tools.TOOLS`` or ``none`` (the bare interpreter). Measures, in this order: the
import, the construction (``make()``), start to first reading (``begin()``: see ``tools.py``
for what each tool does there), then SECONDS of idle running, then ``end()`` and ``close()``.

Memory and CPU are those of the whole process tree (Zeus and perun start helper processes):
resident memory from /proc/<pid>/status, CPU time from /proc/<pid>/task/<tid>/schedstat
(nanoseconds), so that no extra module is loaded.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

import tools


def tree_pids(pid: int) -> list[int]:
    """``pid`` and its live descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return out


def rss_mb(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                total += next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:")) / 1024
        except (OSError, StopIteration):
            continue
    return total


def cpu_s(pids: list[int]) -> float:
    """CPU seconds used so far by every thread of ``pids``."""
    total = 0
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    return total / 1e9


def main() -> int:
    key, seconds, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    logging.basicConfig(level=logging.ERROR)
    me = os.getpid()
    res: dict = {"tool": key, "rss_base": rss_mb([me])}
    tool = tools.get(key) if key != "none" else None
    t = time.perf_counter()
    if tool:
        tool.load()
    res["import_s"] = time.perf_counter() - t
    res["rss_import"] = rss_mb([me])
    t = time.perf_counter()
    if tool:
        tool.make()
    res["construct_s"] = time.perf_counter() - t
    t = time.perf_counter()
    if tool:
        tool.begin()
    res["first_reading_s"] = time.perf_counter() - t
    # Idle: let helper threads and processes settle for a second, then count their CPU.
    time.sleep(min(1.0, seconds / 3))
    pids = tree_pids(me)
    c0, w0 = cpu_s(pids), time.monotonic()
    time.sleep(seconds)
    pids = tree_pids(me)
    res["idle_cpu"] = (cpu_s(pids) - c0) / (time.monotonic() - w0)
    res["processes"] = len(pids)
    res["rss_running"] = rss_mb(pids)
    t = time.perf_counter()
    if tool:
        tool.end()
        tool.close()
    res["stop_s"] = time.perf_counter() - t
    res["modules"] = len(sys.modules)
    res["heavy"] = sorted(m for m in ("torch", "pandas", "numpy", "keras", "transformers",
                                      "optuna", "sqlalchemy", "matplotlib", "scipy", "h5py")
                          if m in sys.modules)
    with open(out, "w") as f:
        json.dump(res, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
