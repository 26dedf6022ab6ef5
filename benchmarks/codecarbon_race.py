"""Reproduce the CodeCarbon window that reads one RAPL counter range too much (not in make bench).

A powercap driver (powercap_driver.py) advances a fake tree's counter at 1 kHz, without ever
wrapping it; in a private mount namespace with that tree over ``/sys/class/powercap``,
CodeCarbon measures N one-second windows (``start()``, sleep 1 s, ``stop()``) with
``measure_power_secs=1``. Every time CodeCarbon assumes a wrap, its debug message is recorded
with the thread that logged it. Prints how many windows came out over 1 kJ (the truth is about
19 J) and the assumed wraps.

Usage, as root, under CodeCarbon's own virtualenv (``python benchmarks/peers.py install`` makes
it): ``benchmarks/.peers/codecarbon/bin/python benchmarks/codecarbon_race.py [N]`` (default 40;
about 2.5 s each).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def measure(n: int) -> dict:
    """Inside the namespace: N CodeCarbon windows, with the wraps it assumed and their threads."""
    from codecarbon import OfflineEmissionsTracker

    assumed: list[dict] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "Assuming wrap-around" in record.getMessage():
                assumed.append({"thread": record.threadName, "message": record.getMessage()})

    log = logging.getLogger("codecarbon")
    joules = []
    for _ in range(n):
        tracker = OfflineEmissionsTracker(country_iso_code="FRA", measure_power_secs=1,
                                          save_to_file=False, log_level="error",
                                          allow_multiple_runs=True)
        # CodeCarbon sets its logger's level when constructed: catch its debug messages after.
        catch = Catch(logging.DEBUG)
        log.setLevel(logging.DEBUG)
        for handler in log.handlers:
            handler.setLevel(logging.ERROR)
        log.addHandler(catch)
        tracker.start()
        time.sleep(1.0)
        tracker.stop()
        log.removeHandler(catch)
        joules.append(tracker.final_emissions_data.cpu_energy * 3.6e6)
    return {"windows": n, "joules": joules, "assumed_wraps": assumed}


def main(argv: list[str]) -> int:
    if argv[:1] == ["--inside"]:
        print(json.dumps(measure(int(argv[1]))))
        return 0
    n = int(argv[0]) if argv else 40
    root = tempfile.mkdtemp(prefix="ccb_race_", dir="/dev/shm" if os.path.isdir("/dev/shm")
                            else None)
    driver = subprocess.Popen([sys.executable, os.path.join(HERE, "powercap_driver.py"), root,
                               repr(time.monotonic()), str(n * 3 + 60), "spikes"])
    try:
        while not os.path.exists(os.path.join(root, "ready")):
            time.sleep(0.05)
        tree = os.path.join(root, "spikes")
        inner = (f"mount -t tmpfs none /sys/class && mkdir /sys/class/powercap && "
                 f"mount --bind '{tree}' /sys/class/powercap && "
                 f"exec '{sys.executable}' '{os.path.abspath(__file__)}' --inside {n}")
        proc = subprocess.run(["unshare", "-m", "sh", "-c", inner], capture_output=True,
                              text=True, timeout=n * 10 + 120)
    finally:
        driver.kill()
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        print(f"failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
        return 1
    result = json.loads(lines[-1])
    big = [round(j) for j in result["joules"] if j > 1000]
    print(f"{len(big)} of {result['windows']} one-second windows read over 1 kJ: {big} J "
          f"(the others: median {sorted(result['joules'])[len(result['joules']) // 2]:.1f} J)")
    for wrap in result["assumed_wraps"]:
        print(f"  wrap assumed in thread {wrap['thread']}: {wrap['message'][:150]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
