"""CPU-bound load on N threads, watched by both tools at once (run by bench_fallback.py).

Usage: ``python fallback_worker.py THREADS SECONDS REPS OUT``. The load is float32 matrix
products in torch with ``torch.set_num_threads(THREADS)`` (a training-like load inside this
process); THREADS 0 means idle (sleep). Ours runs twice, ``scope="process"`` (the default, this
process tree's share) and ``scope="machine"``; CodeCarbon's ``OfflineEmissionsTracker`` with its
defaults watches the same window. Each rep: all three start, the load runs, all three stop.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time


def main() -> int:
    threads, seconds, reps, out = (int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]),
                                   sys.argv[4])
    logging.basicConfig(level=logging.ERROR)
    import torch
    from codecarbon import OfflineEmissionsTracker

    from carbon_callbacks import EnergyMeter

    torch.set_num_threads(max(threads, 1))
    a = torch.randn(512, 512)
    results = []
    for _ in range(reps):
        ours_p = EnergyMeter(scope="process")
        ours_m = EnergyMeter(scope="machine")
        tracker = OfflineEmissionsTracker(country_iso_code="FRA", save_to_file=False,
                                          log_level="error", allow_multiple_runs=True)
        tracker.start()
        ours_p.start()
        ours_m.start()
        cpu0, t0 = os.times(), time.monotonic()
        while time.monotonic() - t0 < seconds:
            if threads:
                for _ in range(20):
                    a = (a @ a) * 1e-3
            else:
                time.sleep(0.05)
        cpu1, wall = os.times(), time.monotonic() - t0
        describe = ours_p.describe()
        wp = ours_p.stop()
        wm = ours_m.stop()
        tracker.stop()
        data = tracker.final_emissions_data
        kwh = 3_600_000.0
        results.append({
            "wall": wall,
            "cores_used": (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / wall,
            "ours_process_cpu_w": wp.component_joules("cpu") / wp.seconds,
            "ours_process_ram_w": wp.component_joules("ram") / wp.seconds,
            "ours_machine_cpu_w": wm.component_joules("cpu") / wm.seconds,
            "ours_machine_ram_w": wm.component_joules("ram") / wm.seconds,
            "ours_process_range": [wp.components["cpu"].low / wp.seconds,
                                   wp.components["cpu"].high / wp.seconds],
            "ours_methods": wp.methods,
            "cc_cpu_w": data.cpu_energy * kwh / data.duration,
            "cc_ram_w": data.ram_energy * kwh / data.duration,
            "ours_describe": describe,
            "cc_mode": "; ".join(
                f"{type(h).__name__}: {h}"
                + (f", TDP {h._tdp} W{' (generic default)' if h._is_generic_tdp else ''}, "
                   f"tracking mode {tracker._tracking_mode}" if hasattr(h, "_tdp") else "")
                for h in tracker._hardware),
        })
    with open(out, "w") as f:
        json.dump(results, f, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
