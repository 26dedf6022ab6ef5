"""Driver process: fake powercap trees whose ``energy_uj`` advances at 1 kHz from known traces.

Usage: ``python powercap_driver.py ROOT T0 SECONDS TRACE [TRACE ...]`` writes one tree per
trace under ``ROOT/<trace>`` laid out like a real one::

    <trace>/intel-rapl/subsystem -> ..      (what CodeCarbon looks for)
    <trace>/intel-rapl/intel-rapl:0 -> ../intel-rapl:0
    <trace>/intel-rapl:0/{name,energy_uj,max_energy_range_uj,enabled}

then rewrites every ``energy_uj`` each millisecond with the trace's exact energy at that
instant (seconds since the monotonic origin ``T0``), through a temp file and ``os.replace`` so
a reader never sees a half-written value. ROOT should be on tmpfs (``/dev/shm``).

Hardware counters advance whatever the load, so the driver asks for real-time scheduling
(SCHED_FIFO, allowed for root) to keep its 1 kHz while dozens of measuring processes start;
without it, a stalled driver leaves the files stale and the tools look wrong for its fault.
It sleeps every tick, so it never holds a CPU for long.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from traces import Trace, by_name  # noqa: E402


def build_tree(root: str, trace: Trace) -> str:
    """Create the tree for ``trace`` under ``root`` and return the path of its energy file."""
    base = os.path.join(root, trace.name)
    pkg = os.path.join(base, "intel-rapl:0")
    ctl = os.path.join(base, "intel-rapl")
    os.makedirs(pkg, exist_ok=True)
    os.makedirs(ctl, exist_ok=True)
    for link, target in ((os.path.join(ctl, "subsystem"), ".."),
                         (os.path.join(ctl, "intel-rapl:0"), "../intel-rapl:0")):
        if not os.path.islink(link):
            os.symlink(target, link)
    files = {"name": "package-0", "enabled": "1",
             "max_energy_range_uj": str(int(trace.wrap_j * 1e6)), "energy_uj": "0"}
    for fname, value in files.items():
        with open(os.path.join(pkg, fname), "w") as f:
            f.write(value + "\n")
    return os.path.join(pkg, "energy_uj")


def main(argv: list[str]) -> int:
    root, t0, seconds = argv[0], float(argv[1]), float(argv[2])
    traces = [by_name(n) for n in argv[3:]]
    targets = [(t, build_tree(root, t)) for t in traces]
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        realtime = 1
    except (OSError, AttributeError):
        realtime = 0
    with open(os.path.join(root, "ready"), "w") as f:
        f.write("1\n")
    period = 0.001
    next_tick = time.monotonic()
    end = next_tick + seconds
    ticks = late = 0
    while True:
        now = time.monotonic()
        if now >= end:
            break
        for trace, path in targets:
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                f.write(f"{trace.counter_uj(time.monotonic() - t0)}\n")
            os.replace(tmp, path)
        ticks += 1
        next_tick += period
        delay = next_tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            time.sleep(0.0001)
            if delay < -0.05:
                # Fell far behind (the machine is busy): resynchronise rather than burst.
                late += 1
                next_tick = time.monotonic()
    with open(os.path.join(root, "driver_stats"), "w") as f:
        f.write(f"{ticks} {seconds} {late} {realtime}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
