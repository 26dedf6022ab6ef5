"""Page render times of ``carbon-callbacks serve`` on a large team ledger.

A SQLite ledger of 2,000 runs x 100 epochs (200,000 epoch rows; 5 projects, 4 teams, 8 users,
12 months, a quarter of the runs stopped early) is served on 127.0.0.1 by the app in this
process; each page is fetched over HTTP (a full request: query, render, transfer) once to warm
up and then REPEAT times, and the median (min-max) is reported against the 1 s target. The
baseline in the same run is what ``carbon-callbacks report`` does for the same ledger
(``Ledger.runs()`` and ``summarize``), and, for the Runs table, reading every run as a
Python-side pager would. A second ledger of 100,000 runs x 5 epochs shows how the Runs table's
paging (in SQL) holds up at that size. Prints a markdown section on stdout (about 4 minutes,
most of it building the 100,000-run ledger).

Run: ``.venv/bin/python benchmarks/bench_serve.py``
"""

from __future__ import annotations

import math
import os
import random
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from figures import headline, log, spread, table  # noqa: E402

REPEAT = 7
TARGET_S = 1.0
START = 1_700_000_000.0


def records(n: int, kwh: float, start: float, curve: float) -> list[Any]:
    from carbon_callbacks.records import EpochRecord

    out = []
    total_kwh = total_g = 0.0
    for e in range(n):
        intensity = 300.0 + 100.0 * math.sin((start + e * 600.0) / 7200.0)
        e_kwh = kwh * (0.9 + 0.2 * ((e * 7919) % 11) / 10)
        g = e_kwh * intensity
        total_kwh += e_kwh
        total_g += g
        out.append(
            EpochRecord(
                epoch=e, start_wall=start + e * 600.0, end_wall=start + (e + 1) * 600.0,
                seconds=600.0, energy_kwh=e_kwh, energy_kwh_low=e_kwh * 0.5,
                energy_kwh_high=e_kwh * 1.5, co2_g=g, co2_g_low=g * 0.4, co2_g_high=g * 1.6,
                energy_kwh_total=total_kwh, co2_g_total=total_g, power_w=e_kwh * 6000.0,
                intensity_g_per_kwh=intensity, intensity_source="Ember yearly average [FRA]",
                cpu_energy_kwh=e_kwh * 0.6, gpu_energy_kwh=e_kwh * 0.3,
                ram_energy_kwh=e_kwh * 0.1, methods={"cpu": "model", "gpu": "counter"},
                metrics={"val_acc": 0.95 * (1 - math.exp(-(e + 1) / curve)),
                         "val_loss": math.exp(-(e + 1) / curve)},
            )
        )  # fmt: skip
    return out


def team_runs(count: int, epochs: int, seed: int) -> Iterator[tuple[dict[str, Any], list[Any]]]:
    rng = random.Random(seed)
    for i in range(count):
        start = START + (i / count) * 365 * 86400.0
        stopped = i % 4 == 0
        n = max(2, int(epochs * rng.uniform(0.4, 0.8))) if stopped else epochs
        meta: dict[str, Any] = {
            "run_id": f"r{seed}-{i:06d}",
            "project": f"project-{i % 5}",
            "team": f"team-{i % 4}",
            "user": f"user-{i % 8}",
            "framework": ("lightning", "keras", "transformers")[i % 3],
            "start_wall": start,
            "location": "FRA",
            "intensity_source": "Ember yearly average [FRA]",
            "monitor": "val_acc",
            "max_epochs": epochs,
            "variant": ("baseline", "aware")[i % 2],
            "methods": {"cpu": "model", "gpu": "counter"},
            "end_wall": start + n * 600.0,
            "stopped_early": stopped,
            "stop_reason": f"gain fell; shoulder at epoch {n - 3}" if stopped else "",
        }
        yield meta, records(n, 0.002 * rng.uniform(0.5, 2.0), start, rng.uniform(3, 30))


def build(path: Path, count: int, epochs: int, batch: int) -> float:
    from carbon_callbacks.ledger import Ledger

    t0 = time.perf_counter()
    with Ledger.open(path) as ledger:
        runs = team_runs(count, epochs, seed=count)
        while True:
            chunk = [r for _, r in zip(range(batch), runs, strict=False)]
            if not chunk:
                break
            ledger.import_runs(chunk)
    return time.perf_counter() - t0


def timed(fetch: Callable[[], Any]) -> list[float]:
    fetch()  # warm: the first request imports and compiles the templates
    out = []
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        fetch()
        out.append(time.perf_counter() - t0)
    return out


def page(url: str) -> Callable[[], None]:
    def fetch() -> None:
        with urllib.request.urlopen(url, timeout=120) as resp:
            assert resp.status == 200, url
            resp.read()

    return fetch


def ms(values: list[float]) -> str:
    return spread([v * 1e3 for v in values], "{:.0f}", " ms")


def measure(path: Path, pages: list[tuple[str, str]]) -> list[tuple[str, list[float]]]:
    from carbon_callbacks.ledger import Ledger
    from carbon_callbacks.serve import create_app
    from carbon_callbacks.serve.server import bind, make_server, url_of

    ledger = Ledger.open(path, read_only=True)
    sock = bind("127.0.0.1", 0)
    server = make_server(create_app(ledger), sock)
    import threading

    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    base = url_of(sock)
    try:
        out = []
        for label, rel in pages:
            log(f"   {label}")
            out.append((label, timed(page(base + rel))))
        return out
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        ledger.close()


def main() -> int:
    from carbon_callbacks.ledger import Ledger
    from carbon_callbacks.reports import summarize

    load0 = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="bench_serve_"))
    big = tmp / "team.sqlite"
    log("== building 2,000 runs x 100 epochs")
    built = build(big, 2000, 100, batch=250)
    with Ledger.open(big, read_only=True) as ledger:
        some = [r.run_id for r in ledger.runs_page(order_by="co2", limit=10).runs]
        report = timed(lambda: [summarize(ledger.runs(), (k,)) for k in ("project",)])
        read_all = timed(ledger.runs)
    ids = ",".join(some)
    pages = [
        ("Overview", "/"),
        ("Overview, one tag and a time range", "/?tag=variant%3Daware&since=2024-01-01"),
        ("Runs, newest first (50)", "/runs"),
        ("Runs sorted by CO2e (a sort over every run's total)", "/runs?sort=co2"),
        ("Runs, last page", "/runs?page=40"),
        ("Runs, stopped early, sorted by energy", "/runs?status=stopped&sort=energy"),
        ("One run (100 epochs, regions, hours)", f"/runs/{some[0]}"),
        ("Compare 10 runs", f"/compare?run={ids}"),
    ]
    log("== pages at 2,000 runs")
    results = measure(big, pages)

    huge = tmp / "huge.sqlite"
    log("== building 100,000 runs x 5 epochs")
    built_huge = build(huge, 100_000, 5, batch=10_000)
    with Ledger.open(huge, read_only=True) as ledger:
        one = ledger.runs_page(limit=1, offset=50_000).runs[0].run_id
        read_all_huge = timed(ledger.runs)
    huge_pages = [
        ("Runs, newest first (50)", "/runs"),
        ("Runs, page 2,000 of 2,000", "/runs?page=2000"),
        ("Runs sorted by CO2e", "/runs?sort=co2"),
        ("Runs of one project, by user", "/runs?project=project-3&sort=user&dir=asc"),
        ("One run", f"/runs/{one}"),
        ("Overview (every run summed, as report does)", "/"),
    ]
    log("== pages at 100,000 runs")
    huge_results = measure(huge, huge_pages)

    slowest = max(statistics_median(v) for _, v in results)
    met = "met" if slowest < TARGET_S else "NOT met"
    rows = [[label, ms(v), "yes" if statistics_median(v) < TARGET_S else "**no**"]
            for label, v in results]  # fmt: skip
    huge_rows = [[label, ms(v)] for label, v in huge_results]
    overview = statistics_median(results[0][1]) / statistics_median(report)
    runs_vs_all = statistics_median(results[2][1]) / statistics_median(read_all)
    headline(
        f"serve: slowest page {slowest * 1e3:.0f} ms on 2,000 runs x 100 epochs "
        f"(target < 1 s, {met}); Runs page at 100,000 runs "
        f"{statistics_median(huge_results[0][1]) * 1e3:.0f} ms"
    )
    print(
        "## Team view (`carbon-callbacks serve`)\n\n"
        f"Ledger: SQLite, 2,000 runs x 100 epochs (200,000 epoch rows), built in {built:.0f} s. "
        f"Each page fetched over HTTP from the app on 127.0.0.1 in this process, {REPEAT} times "
        "after one warm-up; median (min-max). Target: every page under 1 s "
        f"(**{met}**, slowest {slowest * 1e3:.0f} ms).\n\n"
        + table(["page", "time", "< 1 s"], rows)
        + "\n\nBaselines in the same run: what `carbon-callbacks report --by project` computes "
        f"(`Ledger.runs()` + `summarize`) takes {ms(report)}, so the Overview costs "
        f"{overview:.2f}x that (it sums four groupings and renders the page); reading every run "
        f"(`Ledger.runs()`, what paging in Python would start with) takes {ms(read_all)}, "
        f"{1 / runs_vs_all:.1f}x the whole Runs page, which pages in SQL.\n\n"
        f"At 100,000 runs x 5 epochs (500,000 epoch rows, built in {built_huge:.0f} s; reading "
        f"every run takes {ms(read_all_huge)}):\n\n" + table(["page", "time"], huge_rows) + "\n\n"
        "Sorting by a run's own column reads only the page's epoch rows; sorting by a total "
        "(CO2e, energy, epochs) sums that one column over every run's epoch rows first. The "
        "Overview "
        "sums every matching run, as `report` does, so its time grows with the ledger. "
        f"Load average (1 min) {load0:.1f} at the start and {os.getloadavg()[0]:.1f} at the "
        f"end, on {os.cpu_count()} logical CPUs."
    )
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return 0


def statistics_median(values: list[float]) -> float:
    import statistics

    return statistics.median(values)


if __name__ == "__main__":
    sys.exit(main())
