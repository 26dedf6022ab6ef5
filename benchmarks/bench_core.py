"""Costs of the measurement core: import, start(), mark(), and the sampler thread's CPU use.

Run: ``.venv/bin/python benchmarks/bench_core.py`` (about 30 s). Prints each figure next to its
target; every figure is measured in this run, against a baseline taken in the same run where
one applies (bare interpreter start for the import; an idle waiting thread for the sampler).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HEAVY = ("torch", "keras", "transformers", "optuna", "sqlalchemy", "matplotlib", "lightning",
         "pytorch_lightning", "tensorflow", "jax", "pynvml", "numpy", "pandas")

TARGETS = {"import_ms": 50.0, "start_ms": 20.0, "mark_ms": 1.0, "thread_pct": 0.5}


def _run(code: str) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    return time.perf_counter() - t


def bench_import(rounds: int = 25) -> dict:
    """Median wall time of a fresh interpreter importing the package, minus a bare one."""
    bare, full = [], []
    for _ in range(rounds):  # interleaved so machine load affects both alike
        bare.append(_run("pass"))
        full.append(_run("import carbon_callbacks"))
    code = ("import sys, json, carbon_callbacks\n"
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT,
                         capture_output=True, text=True)
    loaded = json.loads(out.stdout)
    # The same import timed inside each fresh interpreter: free of start-up noise.
    timed = ("import time; t = time.perf_counter(); import carbon_callbacks; "
             "print(time.perf_counter() - t)")
    inner = [float(subprocess.run([sys.executable, "-c", timed], check=True, cwd=ROOT,
                                  capture_output=True, text=True).stdout) for _ in range(rounds)]
    return {
        "inner_ms": statistics.median(inner) * 1e3,
        "bare_ms": statistics.median(bare) * 1e3,
        "with_import_ms": statistics.median(full) * 1e3,
        "import_ms": (statistics.median(full) - statistics.median(bare)) * 1e3,
        "heavy_loaded": loaded,
    }


def bench_start_mark(rounds: int = 30, marks: int = 2000) -> dict:
    """start() latency (first and repeated) and mark() latency of the default meter here."""
    from carbon_callbacks import EnergyMeter

    t = time.perf_counter()
    meter = EnergyMeter()
    construct = time.perf_counter() - t
    t = time.perf_counter()
    meter.start()
    first_start = time.perf_counter() - t
    meter.stop()
    starts = []
    for _ in range(rounds):
        t = time.perf_counter()
        meter.start()
        starts.append(time.perf_counter() - t)
        meter.stop()
    meter.start()
    lat = []
    for _ in range(marks):
        t = time.perf_counter()
        meter.mark()
        lat.append(time.perf_counter() - t)
    methods = meter.methods
    meter.stop()
    lat.sort()
    return {
        "construct_ms": construct * 1e3,
        "first_start_ms": first_start * 1e3,
        "start_ms": statistics.median(starts) * 1e3,
        "mark_ms": statistics.median(lat) * 1e3,
        "mark_p99_ms": lat[int(len(lat) * 0.99)] * 1e3,
        "methods": methods,
    }


def _thread_cpu_s(native_id: int) -> float:
    """CPU seconds a thread has run: schedstat's nanoseconds, else stat's clock ticks."""
    try:
        with open(f"/proc/self/task/{native_id}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        with open(f"/proc/self/task/{native_id}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_of_thread(thread: threading.Thread, seconds: float) -> float:
    c0, t0 = _thread_cpu_s(thread.native_id), time.monotonic()
    time.sleep(seconds)
    c1, t1 = _thread_cpu_s(thread.native_id), time.monotonic()
    return (c1 - c0) / (t1 - t0) * 100


def bench_thread(seconds: float = 10.0) -> dict:
    """CPU used by the sampler thread, as % of one core, at the default interval.

    Two readings: the process's CPU time while the main thread sleeps, minus the same with no
    meter (the baseline: an idle thread waking at the same interval), at the clock's full
    resolution; and the sampler thread's own time from /proc, which counts whole 10 ms ticks
    where the kernel gives no schedstat.
    """
    from carbon_callbacks import EnergyMeter
    from carbon_callbacks.energy.meter import DEFAULT_INTERVAL

    stop = threading.Event()

    def idle_loop() -> None:  # the floor: a thread that only wakes at the same interval
        while not stop.wait(DEFAULT_INTERVAL):
            pass

    idle = threading.Thread(target=idle_loop, name="idle-baseline", daemon=True)
    idle.start()
    p0, t0 = time.process_time(), time.monotonic()
    time.sleep(seconds / 2)
    base = (time.process_time() - p0) / (time.monotonic() - t0)
    stop.set()
    idle.join()

    meter = EnergyMeter().start()
    sampler = next(t for t in threading.enumerate() if t.name.startswith("carbon-callbacks"))
    c0, p0, t0 = _thread_cpu_s(sampler.native_id), time.process_time(), time.monotonic()
    time.sleep(seconds)
    c1, p1 = _thread_cpu_s(sampler.native_id), time.process_time()
    wall = time.monotonic() - t0
    meter.stop()
    return {
        "interval_s": DEFAULT_INTERVAL,
        "seconds": wall,
        "thread_pct": max(0.0, (p1 - p0) / wall - base) * 100,
        "baseline_pct": base * 100,
        "thread_ticks_pct": (c1 - c0) / wall * 100,
    }


def bench_thread_polled_gpu(seconds: float = 5.0) -> dict:
    """The thread's CPU use when it must poll GPU power (fake NVML, two GPUs): at 10 Hz (a
    window older than 10 s), and with a mark every second (100 Hz throughout)."""
    from carbon_callbacks import EnergyMeter
    from carbon_callbacks.energy.sensors.nvml import NvmlSensor
    from carbon_callbacks.testing import FakeGPU, FakeNVML

    out = {}
    for name, max_hz, marks in (("old_window_10hz", 10.0, False), ("marks_1s_100hz", 100.0, True)):
        nv = FakeNVML([FakeGPU(energy_counter=False),
                       FakeGPU(energy_counter=False, uuid="GPU-2")])
        sensor = NvmlSensor(nvml=nv, scope="machine", max_poll_hz=max_hz)
        meter = EnergyMeter(sensors=[sensor]).start()
        sampler = next(t for t in threading.enumerate() if t.name.startswith("carbon-callbacks"))
        stop = threading.Event()

        def mark_every_second(meter: EnergyMeter = meter, stop: threading.Event = stop) -> None:
            while not stop.wait(1.0):
                meter.mark()

        marker = threading.Thread(target=mark_every_second) if marks else None
        if marker:
            marker.start()
        out[name] = _cpu_of_thread(sampler, seconds)
        stop.set()
        if marker:
            marker.join()
        meter.stop()
        out[name + "_reads"] = nv.gpus[0].calls.get("power", 0)
    return out


def main() -> int:
    """Run every benchmark and print the figures against their targets."""
    imp = bench_import()
    sm = bench_start_mark()
    th = bench_thread()
    gpu = bench_thread_polled_gpu()

    def verdict(name: str, value: float) -> str:
        return "OK " if value < TARGETS[name] else "MISS"

    print("carbon_callbacks core benchmark")
    print(f"  python {sys.version.split()[0]}, {os.cpu_count()} CPUs, methods here: "
          f"{sm['methods']}")
    print(f"  [{verdict('import_ms', imp['import_ms'])}] import carbon_callbacks: "
          f"{imp['import_ms']:.1f} ms (target < 50; median fresh interpreter "
          f"{imp['with_import_ms']:.1f} ms vs bare {imp['bare_ms']:.1f} ms; timed inside the "
          f"fresh interpreter: {imp['inner_ms']:.2f} ms)")
    heavy = ", ".join(imp["heavy_loaded"]) or "none"
    print(f"  [{'OK ' if not imp['heavy_loaded'] else 'MISS'}] ML frameworks imported by "
          f"`import carbon_callbacks`: {heavy}")
    print(f"  [{verdict('start_ms', sm['start_ms'])}] start(): {sm['start_ms']:.2f} ms median "
          f"(target < 20; first start {sm['first_start_ms']:.2f} ms, construction "
          f"{sm['construct_ms']:.2f} ms)")
    print(f"  [{verdict('mark_ms', sm['mark_ms'])}] mark(): {sm['mark_ms'] * 1e3:.0f} us median, "
          f"{sm['mark_p99_ms'] * 1e3:.0f} us p99 (target < 1 ms)")
    print(f"  [{verdict('thread_pct', th['thread_pct'])}] sampler thread: "
          f"{th['thread_pct']:.3f}% of one core at the default {th['interval_s']:g} s interval "
          f"over {th['seconds']:.1f} s (target < 0.5%; process CPU minus an idle baseline of "
          f"{th['baseline_pct']:.3f}%; the thread's own /proc ticks say "
          f"{th['thread_ticks_pct']:.2f}%)")
    print(f"  [info] sampler thread polling 2 GPUs' power (fake NVML): "
          f"{gpu['old_window_10hz']:.3f}% of one core at 10 Hz (a window older than 10 s; "
          f"{gpu['old_window_10hz_reads']} reads of GPU 0), {gpu['marks_1s_100hz']:.3f}% with a "
          f"mark every second (100 Hz; {gpu['marks_1s_100hz_reads']} reads)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
