"""Carbon-intensity resolution cost, cold and warm, and emissions() per window.

Cold figures come from fresh interpreters (a training job resolves once, at start): the import of
``carbon_callbacks.intensity``, then the first ``resolve()`` with no configuration (tables read
from disk, world-average warning), with sockets made to raise so any network attempt would show.
The baseline in the same process is ``resolve(56.0)``, a fixed value that reads no table.
Warm figures are per call in one process. Prints a markdown section on stdout.

Run: ``.venv/bin/python benchmarks/bench_intensity.py``
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from figures import PYTHON, REPO, log, spread, table  # noqa: E402

RUNS = 7

COLD = r"""
import json, logging, os, socket, sys, time
for name in list(os.environ):
    if name.startswith("CARBON_CALLBACKS_") and name != "CARBON_CALLBACKS_LEDGER":
        del os.environ[name]
attempts = []
def refuse(*args, **kwargs):
    attempts.append(1)
    raise OSError("network disabled by the benchmark")
class NoSocket(socket.socket):
    def __init__(self, *args, **kwargs):
        refuse()
socket.socket, socket.create_connection, socket.getaddrinfo = NoSocket, refuse, refuse
logging.basicConfig(level=logging.ERROR)
t0 = time.perf_counter()
import carbon_callbacks.intensity as ci
t1 = time.perf_counter()
fixed = ci.resolve(56.0)
t2 = time.perf_counter()
world = ci.resolve()
t3 = time.perf_counter()
fr = ci.resolve("FR")
t4 = time.perf_counter()
print(json.dumps({"import_ms": (t1 - t0) * 1e3, "fixed_ms": (t2 - t1) * 1e3,
                  "none_ms": (t3 - t2) * 1e3, "country_ms": (t4 - t3) * 1e3,
                  "sockets": len(attempts), "world": world.intensity_at(0, 1)[0]}))
"""


def cold() -> list[dict]:
    runs = []
    for i in range(RUNS):
        proc = subprocess.run([PYTHON, "-c", COLD], cwd=REPO, capture_output=True, text=True,
                              timeout=120)
        try:
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        except (IndexError, ValueError):
            log(f"intensity: cold run failed: {proc.stderr.strip()[-300:]}")
        log(f"intensity: cold run {i + 1}/{RUNS}")
    return runs


def per_call_us(fn, n: int) -> list[float]:
    """Microseconds per call, in 5 batches of ``n`` calls."""
    out = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        out.append((time.perf_counter() - t0) / n * 1e6)
    return out


def warm() -> dict[str, list[float]]:
    import logging

    from carbon_callbacks.intensity import CallableIntensity, emissions, resolve
    from carbon_callbacks.records import ComponentEnergy, Window

    logging.getLogger("carbon_callbacks").setLevel(logging.ERROR)
    resolve("FR")  # tables loaded once, as in a run
    t0 = 1_700_000_000.0
    epoch = Window(t0, t0 + 60, 60, {"cpu": ComponentEnergy("cpu", 6e3, 5e3, 7e3, "counter")})
    long = Window(t0, t0 + 3 * 3600, 3 * 3600,
                  {"cpu": ComponentEnergy("cpu", 1e6, 9e5, 1.1e6, "counter")})
    fr = resolve("FR")
    curve = CallableIntensity(lambda a, b: 100.0 + (a // 3600) % 24)
    return {
        "resolve(56.0)": per_call_us(lambda: resolve(56.0), 2000),
        "resolve('FR')": per_call_us(lambda: resolve("FR"), 2000),
        "resolve('gcp:europe-west1')": per_call_us(lambda: resolve("gcp:europe-west1"), 2000),
        "emissions(60 s window, 'FR')": per_call_us(lambda: emissions(epoch, fr), 2000),
        "emissions(3 h window, hourly function)": per_call_us(
            lambda: emissions(long, curve), 2000
        ),
    }


def main() -> int:
    runs = cold()
    ok = [r for r in runs if "import_ms" in r]

    def col(key: str) -> list[float]:
        return [r[key] for r in ok]

    ratios = [r["none_ms"] / r["fixed_ms"] for r in ok if r["fixed_ms"] > 0]
    out = ["## Carbon intensity resolution", ""]
    out.append(
        f"Fresh interpreter per run ({len(ok)} of {RUNS} runs ok), no CARBON_CALLBACKS_* "
        "variables, sockets made to raise. `resolve()` with nothing set reads the tables and "
        "warns once; the baseline `resolve(56.0)` reads no table. Median (min-max)."
    )
    out.append("")
    out.append(table(
        ["step", "time"],
        [
            ["`import carbon_callbacks.intensity`", spread(col("import_ms"), "{:.2f}", " ms")],
            ["`resolve(56.0)` (baseline)", spread(col("fixed_ms"), "{:.3f}", " ms")],
            ["first `resolve()`, nothing configured", spread(col("none_ms"), "{:.2f}", " ms")],
            ["then `resolve('FR')`", spread(col("country_ms"), "{:.3f}", " ms")],
            ["ratio first `resolve()` / baseline", spread(ratios, "{:.0f}", "x")],
            ["socket attempts", spread(col("sockets"), "{:.0f}")],
        ],
    ))
    out.append("")
    target = max(col("none_ms")) < 5.0 if ok else False
    out.append(f"Target: unconfigured resolution under 5 ms cold: "
               f"{'met' if target else 'NOT met'} (worst run "
               f"{max(col('none_ms')) if ok else float('nan'):.2f} ms).")
    out.append("")
    out.append("Warm, per call (5 batches of 2,000 calls):")
    out.append("")
    out.append(table(["call", "time per call"],
                     [[f"`{k}`", spread(v, "{:.1f}", " us")] for k, v in warm().items()]))
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
