"""Driver process: fake powercap trees whose ``energy_uj`` files advance at 1 kHz from known traces.

Usage: ``python powercap_driver.py ROOT T0 SECONDS TREE [TREE ...]`` writes one tree per name
(``traces.TREES``) under ``ROOT/<tree>`` laid out like a real one::

    <tree>/intel-rapl/subsystem -> ..             (what CodeCarbon looks for)
    <tree>/intel-rapl/intel-rapl:N -> ../intel-rapl:N   (what Zeus lists)
    <tree>/intel-rapl:N/{name,energy_uj,max_energy_range_uj,enabled}
    <tree>/intel-rapl:N/intel-rapl:N:0/...        (a DRAM subzone, where the tree has one)
    <tree>/intel-rapl:N:0 -> intel-rapl:N/intel-rapl:N:0   (subzones are listed at the top too)

then rewrites every ``energy_uj`` each millisecond with its zone's exact energy at that instant
(seconds since the monotonic origin ``T0``). The value is written in place, at a fixed width
(zero-padded), so a tool that keeps the file open and seeks back to re-read it (perun does, as
it may with sysfs) sees each new value, as it would on a real tree; a read that overlaps a
write can mix the two values only in their last digits, less than one tick's increment.
ROOT should be on tmpfs (``/dev/shm``).

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

from traces import Tree, Zone, tree  # noqa: E402

WIDTH = 20  # digits: any counter range in microjoules fits


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text + "\n")


def build_tree(root: str, t: Tree) -> list[tuple[Zone, int]]:
    """Create the tree for ``t`` under ``root``; returns each zone with its open energy file."""
    base = os.path.join(root, t.name)
    ctl = os.path.join(base, "intel-rapl")
    os.makedirs(ctl, exist_ok=True)
    links = [(os.path.join(ctl, "subsystem"), "..")]
    out = []
    for zone in t.zones:
        folder = os.path.join(base, zone.folder)
        os.makedirs(folder, exist_ok=True)
        top = os.path.basename(zone.folder)
        if "/" in zone.folder:
            links.append((os.path.join(base, top), zone.folder))
        else:
            links.append((os.path.join(ctl, top), f"../{top}"))
        for fname, value in (("name", zone.name), ("enabled", "1"),
                             ("max_energy_range_uj", str(int(zone.trace.wrap_j * 1e6)))):
            _write(os.path.join(folder, fname), value)
        path = os.path.join(folder, "energy_uj")
        _write(path, "0" * WIDTH)
        out.append((zone, os.open(path, os.O_WRONLY)))
    for link, target in links:
        if not os.path.islink(link):
            os.symlink(target, link)
    return out


def main(argv: list[str]) -> int:
    root, t0, seconds = argv[0], float(argv[1]), float(argv[2])
    targets = [z for name in argv[3:] for z in build_tree(root, tree(name))]
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
        for zone, fd in targets:
            value = zone.trace.counter_uj(time.monotonic() - t0)
            os.pwrite(fd, f"{value:0{WIDTH}d}\n".encode(), 0)
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
