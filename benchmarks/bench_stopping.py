"""Stopping rules against Lightning's EarlyStopping on seven small tasks, replayed and checked live.

Protocol. Every (task, seed) is trained once to ``max_epochs`` with Lightning and our
CarbonCallback (per-epoch energy, ``val_acc``, ``val_loss``, and ``test_acc`` of each epoch's
weights). Every rule is then replayed causally on those records (at epoch n it sees epochs
0..n only, as it would live) to find its stop epoch, and scored as a user with
``ModelCheckpoint(monitor="val_acc")`` would see it: epochs trained, energy to the stop, best
``val_acc`` up to the stop, and the ``test_acc`` of that best-validation checkpoint. The
baseline is ``EarlyStopping(monitor="val_loss", patience=5)``. Replays are checked against live
runs (the rule inside the fit) on two tasks: same stop epoch.

The defaults of ``DiminishingReturns`` (the patience net on val_loss, the forecast's 90% upper
bound below max_loss=0.002) were chosen looking at seeds 0 and 1 of the seven first tasks only.
Seed 2 of those tasks and every seed of the three tasks marked ``held_out`` (added after the
design) are reported apart. One decision used them: the trend test (``turn_window=6``), which
looked free on the design runs, cost 0.46 pt on the ten held-out runs there were then, and was
turned off by default (its row stays in the table). Seeds 3 and 4 were first trained after that,
and are reported apart again as the one set nothing was chosen on. A leave-one-task-out check picks
``max_loss`` from a grid on the other tasks and scores it on the one left out. Test sets hold 5000
generated samples (797 for digits), validation sets 1000 (500 for digits, 100 in tiny_val), and
every difference is paired over runs with its standard error.

Usage: ``python benchmarks/bench_stopping.py [--seeds N] [--cache DIR]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from figures import headline, log, table  # noqa: E402
from stopping_tasks import MONITOR, TASKS, early_stopping_epoch, fit_task  # noqa: E402

from carbon_callbacks.policies import DiminishingReturns, MarginalGain  # noqa: E402
from carbon_callbacks.records import EpochRecord  # noqa: E402

DESIGN_SEEDS = (0, 1)
FRESH_SEED = 3  # seeds from here on were first trained after every default was fixed
LIVE_TASKS = ("digits_cnn", "steplr_mlp")  # the forecast stops one, the net the other
GRID = (0.001, 0.002, 0.005, 0.01)
TARGET_SAVED, TARGET_MEAN, TARGET_WORST = 0.25, -0.3, -1.0

Records = Sequence[EpochRecord]


def _values(records: Records, name: str) -> list[float]:
    return [r.metric(name) if r.metric(name) is not None else float("nan") for r in records]


def replay(policy: Any, records: Records) -> int | None:
    """The first epoch after which ``policy`` says stop, seeing only the epochs so far."""
    for n in range(1, len(records) + 1):
        if policy.decide(records[:n]).stop:
            return records[n - 1].epoch
    return None


DEFAULT = "DiminishingReturns() default"


def rules() -> dict[str, Callable[[Records], int | None]]:
    """Every rule as records -> stop epoch (None: ran to max_epochs)."""
    dr = DiminishingReturns
    return {
        "max_epochs": lambda rs: None,
        "EarlyStopping(val_loss)": lambda rs: early_stopping_epoch(_values(rs, "val_loss"), "min"),
        "EarlyStopping(val_acc)": lambda rs: early_stopping_epoch(_values(rs, MONITOR), "max"),
        "MarginalGain(per_epoch=0.002)": lambda rs: replay(
            MarginalGain(MONITOR, min_gain_per_epoch=0.002), rs
        ),
        DEFAULT: lambda rs: replay(dr(MONITOR), rs),
        "  its patience net alone": lambda rs: replay(
            dr(MONITOR, max_loss=0.0, turn_window=None), rs
        ),
        "  its forecast alone (patience=None)": lambda rs: replay(dr(MONITOR, patience=None), rs),
        "DiminishingReturns(turn_window=6), trend test on": lambda rs: replay(
            dr(MONITOR, turn_window=6), rs
        ),
        "  net + trend test, no forecast": lambda rs: replay(
            dr(MONITOR, max_loss=0.0, turn_window=6), rs
        ),
        "DiminishingReturns(criterion='expected')": lambda rs: replay(
            dr(MONITOR, criterion="expected"), rs
        ),
        **{
            f"DiminishingReturns(max_loss={m:g})": (
                lambda rs, m=m: replay(dr(MONITOR, max_loss=m), rs)
            )
            for m in GRID
            if m != 0.002
        },
    }


@dataclass(frozen=True)
class Score:
    epochs: int
    energy_kwh: float
    best_val: float
    test: float


def score(records: Records, stop: int | None) -> Score:
    last = len(records) - 1 if stop is None else stop
    kept = records[: last + 1]
    vals = _values(kept, MONITOR)
    best = max(range(len(vals)), key=lambda i: (vals[i], -i))  # first best, as ModelCheckpoint
    return Score(last + 1, kept[-1].energy_kwh_total, vals[best], kept[best].metric("test_acc"))


def train_all(
    seeds: int, cache: str | None
) -> tuple[dict[tuple[str, int], list[EpochRecord]], int]:
    """Every (task, seed)'s records, and how many were read from ``cache`` (not trained)."""
    runs: dict[tuple[str, int], list[EpochRecord]] = {}
    cached = 0
    for name, task in TASKS.items():
        for seed in range(seeds):
            path = os.path.join(cache, f"{name}-{seed}.json") if cache else None
            if path and os.path.exists(path):
                with open(path) as f:
                    runs[name, seed] = [EpochRecord.from_dict(d) for d in json.load(f)]
                cached += 1
                continue
            t = time.perf_counter()
            records, _ = fit_task(task, seed)
            took = time.perf_counter() - t
            log(f"  trained {name} seed {seed}: {len(records)} epochs, {took:.1f} s")
            runs[name, seed] = records
            if path:
                os.makedirs(cache, exist_ok=True)
                with open(path, "w") as f:
                    json.dump([r.to_dict() for r in records], f)
    return runs, cached


def evaluate(
    runs: dict[tuple[str, int], list[EpochRecord]],
) -> dict[str, dict[tuple[str, int], tuple[int | None, Score]]]:
    out: dict[str, dict[tuple[str, int], tuple[int | None, Score]]] = {}
    for rule, stop_of in rules().items():
        out[rule] = {}
        for key, records in runs.items():
            stop = stop_of(records)
            out[rule][key] = (stop, score(records, stop))
    return out


def compare(
    results: dict[str, dict[tuple[str, int], tuple[int | None, Score]]],
    rule: str,
    keys: Sequence[tuple[str, int]],
    baseline: str = "EarlyStopping(val_loss)",
) -> dict[str, tuple[float, float, float]]:
    """Per task: (epochs, energy saved vs baseline, test-accuracy difference in points)."""
    per_task: dict[str, list[tuple[float, float, float]]] = {}
    for key in keys:
        mine, base = results[rule][key][1], results[baseline][key][1]
        saved = 1.0 - mine.energy_kwh / base.energy_kwh if base.energy_kwh > 0 else 0.0
        per_task.setdefault(key[0], []).append((mine.epochs, saved, 100 * (mine.test - base.test)))
    return {
        task: tuple(statistics.fmean(v[i] for v in vals) for i in range(3))  # type: ignore[misc]
        for task, vals in per_task.items()
    }


def summary(per_task: dict[str, tuple[float, float, float]]) -> tuple[float, float, float]:
    """(mean energy saved, mean test diff, worst task's test diff)."""
    saved = statistics.fmean(v[1] for v in per_task.values())
    diff = statistics.fmean(v[2] for v in per_task.values())
    return saved, diff, min(v[2] for v in per_task.values())


def paired_se(results: Any, rule: str, keys: Sequence[tuple[str, int]]) -> tuple[float, float]:
    """Standard errors of the mean energy saved and test difference, paired over runs."""
    saved, diff = [], []
    for key in keys:
        mine, base = results[rule][key][1], results["EarlyStopping(val_loss)"][key][1]
        saved.append(1.0 - mine.energy_kwh / base.energy_kwh if base.energy_kwh > 0 else 0.0)
        diff.append(100 * (mine.test - base.test))
    if len(keys) < 2:
        return 0.0, 0.0
    root = math.sqrt(len(keys))
    return statistics.stdev(saved) / root, statistics.stdev(diff) / root


def hindsight(runs: Any, results: Any, keys: Sequence[tuple[str, int]]) -> tuple[float, float]:
    """The ceiling: per run, the earliest stop whose test accuracy is within 0.3 pt of
    EarlyStopping(val_loss)'s (known only afterwards). (mean saved over tasks, mean epochs)."""
    per: dict[str, list[float]] = {}
    epochs = []
    for key in keys:
        records, base = runs[key], results["EarlyStopping(val_loss)"][key][1]
        stop = next(
            e for e in range(len(records)) if 100 * (score(records, e).test - base.test) >= -0.3
        )
        per.setdefault(key[0], []).append(1 - score(records, stop).energy_kwh / base.energy_kwh)
        epochs.append(stop + 1)
    return statistics.fmean(statistics.fmean(v) for v in per.values()), statistics.fmean(epochs)


def decide_time(records: Records) -> dict[int, float]:
    """Seconds of one default decision with 10, 100, 1,000 and 10,000 records (fastest of 21).

    The records are copies of a real run's with a still-rising val_acc and no val_loss, so
    every decision goes through the curve forecast (the costly part), not the patience net.
    """
    long = [
        dataclasses.replace(
            records[i % len(records)], epoch=i, metrics={MONITOR: 0.9 - 0.4 * math.exp(-i / 3e3)}
        )
        for i in range(10_000)
    ]
    sizes = (10, 100, 1_000, 10_000)
    # The same 1,000 epochs still to go at every size, so only the records seen differ.
    policies = {n: DiminishingReturns(MONITOR, max_epochs=n + 1_000) for n in sizes}
    times: dict[int, list[float]] = {n: [] for n in sizes}
    for _ in range(21):  # the sizes interleaved, so a burst of other work hits them alike
        for n in sizes:
            seen = long[:n]
            t = time.perf_counter()
            policies[n].decide(seen)
            times[n].append(time.perf_counter() - t)
    return {n: min(ts) for n, ts in times.items()}  # the fastest: the least disturbed


def meets(s: tuple[float, float, float]) -> bool:
    return s[0] >= TARGET_SAVED and s[1] >= TARGET_MEAN and s[2] >= TARGET_WORST


def leave_one_task_out(results: Any, keys: Sequence[tuple[str, int]]) -> list[list[str]]:
    """Pick max_loss on the other tasks (most energy saved among those within the accuracy
    targets, else the best mean test difference), then score it on the one left out."""
    names = {
        m: "DiminishingReturns() default" if m == 0.002 else f"DiminishingReturns(max_loss={m:g})"
        for m in GRID
    }
    rows = []
    for held in TASKS:
        train_keys = [k for k in keys if k[0] != held]
        test_keys = [k for k in keys if k[0] == held]
        scored = {m: summary(compare(results, names[m], train_keys)) for m in GRID}
        ok = [m for m in GRID if scored[m][1] >= TARGET_MEAN and scored[m][2] >= TARGET_WORST]
        pick = max(ok, key=lambda m: scored[m][0]) if ok else max(GRID, key=lambda m: scored[m][1])
        _, saved, diff = compare(results, names[pick], test_keys)[held]
        rows.append([held, f"{pick:g}", f"{saved:+.0%}", f"{diff:+.2f}"])
    return rows


def live_check(runs: dict[tuple[str, int], list[EpochRecord]], results: Any) -> list[list[str]]:
    rows = []
    for name in LIVE_TASKS:
        task = TASKS[name]
        replayed = results[DEFAULT][name, 0][1].epochs
        live_records, live_epochs = fit_task(task, 0, policy=DiminishingReturns(MONITOR))
        same_curve = _values(live_records, MONITOR) == _values(runs[name, 0], MONITOR)[:live_epochs]
        rows.append([name, "DiminishingReturns()", str(replayed), str(live_epochs),
                     "yes" if replayed == live_epochs and same_curve else "NO"])
        replayed = results["EarlyStopping(val_loss)"][name, 0][1].epochs
        _, live_epochs = fit_task(task, 0, early_stopping="val_loss")
        rows.append([name, "Lightning EarlyStopping(val_loss)", str(replayed), str(live_epochs),
                     "yes" if replayed == live_epochs else "NO"])
        log(f"  live check {name} done")
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--cache", default=None, help="keep/reuse the trained runs here")
    parser.add_argument("--no-live", action="store_true")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    runs, cached = train_all(args.seeds, args.cache)
    trained_s = time.perf_counter() - began
    t = time.perf_counter()
    results = evaluate(runs)
    replay_s = time.perf_counter() - t
    keys = sorted(runs)
    decisions = sum(len(r) for r in runs.values())
    live = [] if args.no_live else live_check(runs, results)

    design = [k for k in keys if k[1] in DESIGN_SEEDS and not TASKS[k[0]].held_out]
    held = [k for k in keys if k not in design]
    fresh = [k for k in keys if k[1] >= FRESH_SEED]
    out = ["## Stopping rules (bench_stopping.py)", ""]
    out.append(
        f"{len(TASKS)} tasks x {args.seeds} seeds, each trained once to max_epochs=40 with "
        "Lightning and our CarbonCallback (CPU, one thread; energy from this machine's meter), "
        "then every rule replayed causally on the records. Scored as a user with "
        "`ModelCheckpoint(monitor=\"val_acc\")` sees it: the test accuracy of the best-val_acc "
        "checkpoint up to the stop. Differences are against `EarlyStopping(monitor=\"val_loss\", "
        "patience=5)` on the same run (energy saved: 1 - energy to the rule's stop / energy to "
        "EarlyStopping's stop; test: points of accuracy), paired per run; 'mean' is the mean "
        "over tasks of the per-task means over seeds, and '± se' the standard error of the mean "
        "paired difference over all runs. Test sets: 5000 samples (797 for digits), so one "
        "sample is 0.02 pt; validation sets 1000 (500 digits, 100 tiny_val). "
        f"Training took {trained_s:.0f} s"
        + (f" ({cached} of {len(runs)} runs read from --cache, not trained here)" if cached else "")
        + f"; replaying {len(rules())} rules took {replay_s:.1f} s ({decisions} epochs each)."
    )
    out += ["", "| task | shape | used in design |", "|---|---|---|"]
    seeds = ", ".join(map(str, DESIGN_SEEDS))
    out += [
        f"| {t.name} | {t.shape} | {'no (held out entirely)' if t.held_out else 'seeds ' + seeds} |"
        for t in TASKS.values()
    ]
    out.append("")
    header = ["rule", "epochs", "energy saved", "test diff (pt)", "worst task (pt)", "target"]
    for title, subset in (
        ("All runs:", keys),
        ("Held out (seeds 2+ of the design tasks, and every seed of the held-out tasks):", held),
        (f"Fresh seeds ({FRESH_SEED}+, all tasks; trained after every default was fixed):", fresh),
        ("Design runs (seeds 0-1 of the seven design tasks):", design),
    ):
        if not subset:
            continue
        rows = []
        for rule in rules():
            s = summary(compare(results, rule, subset))
            se = paired_se(results, rule, subset)
            epochs = statistics.fmean(results[rule][k][1].epochs for k in subset)
            rows.append([f"`{rule}`", f"{epochs:.1f}", f"{s[0]:+.0%} ± {se[0]:.0%}",
                         f"{s[1]:+.2f} ± {se[1]:.2f}", f"{s[2]:+.2f}",
                         "met" if meets(s) else "not met"])
        ceiling, ceiling_epochs = hindsight(runs, results, subset)
        rows.append(["hindsight ceiling (earliest stop within 0.3 pt, known afterwards)",
                     f"{ceiling_epochs:.1f}", f"{ceiling:+.0%}", ">= -0.30", "", ""])
        out += [title, "", table(header, rows), ""]
    out.append("Per task, mean over seeds (epochs / energy saved / test diff in points):")
    out.append("")
    shown = ("EarlyStopping(val_loss)", "EarlyStopping(val_acc)", "MarginalGain(per_epoch=0.002)",
             DEFAULT)
    per = {rule: compare(results, rule, keys) for rule in shown}
    rows = []
    for name in TASKS:
        base = per["EarlyStopping(val_loss)"][name]
        test_base = statistics.fmean(results["EarlyStopping(val_loss)"][name, s][1].test
                                     for s in range(args.seeds))
        row = [name, f"{base[0]:.1f} ep, test {100 * test_base:.1f}%"]
        for rule in shown[1:]:
            e, saved, diff = per[rule][name]
            row.append(f"{e:.1f} / {saved:+.0%} / {diff:+.2f}")
        rows.append(row)
    out += [table(["task", "EarlyStopping(val_loss)", *shown[1:]], rows), ""]
    out += ["Leave one task out (max_loss chosen on the other tasks from "
            f"{', '.join(f'{m:g}' for m in GRID)}, scored on the one left out):", ""]
    out += [table(["left out", "max_loss chosen", "energy saved", "test diff (pt)"],
                  leave_one_task_out(results, keys)), ""]
    if live:
        out += ["Replay against live runs (seed 0; the rule inside the fit):", ""]
        out += [table(["task", "rule", "replayed epochs", "live epochs", "same"], live), ""]
    cost = decide_time(runs[keys[0]])
    out += [
        "Cost of one decision of the default rule, through the curve forecast (fastest of 21): "
        + ", ".join(f"{1e3 * t:.2f} ms with {n:,} records" for n, t in cost.items())
        + ". It reads at most `max_points` (100) records, so the cost stops growing there.",
        "",
    ]
    reasons = []
    for name in ("digits_cnn", "gru_order", "tabular_mlp", "steplr_mlp"):
        records = runs[name, 0]
        policy = DiminishingReturns(MONITOR)
        waiting = False
        for n in range(1, len(records) + 1):
            d = policy.decide(records[:n])
            if d.stop or (d.reason.startswith("waiting") and not waiting):
                reasons.append(f"- {name}, epoch {records[n - 1].epoch}: {d.reason}")
                waiting = True
            if d.stop:
                break
    out += ["What the rule says (seed 0):", "", *reasons, ""]
    s = summary(compare(results, DEFAULT, keys))
    se = paired_se(results, DEFAULT, keys)
    h = summary(compare(results, DEFAULT, held))
    verdict = "met" if meets(s) else "not met"
    headline(
        f"Stopping, {len(TASKS)} tasks x {args.seeds} seeds vs EarlyStopping(val_loss, patience=5):"
        f" DiminishingReturns() saves {s[0]:.0%} energy, test accuracy {s[1]:+.2f} pt mean "
        f"(± {se[1]:.2f}), {s[2]:+.2f} pt worst task; held-out runs {h[0]:.0%}, {h[1]:+.2f} pt "
        f"(target >= 25%, >= -0.3, >= -1: {verdict})."
    )
    out.append(
        f"Target (DiminishingReturns default vs EarlyStopping(val_loss)): >= 25% energy saved, "
        f"mean test diff >= -0.3 pt, no task < -1 pt: **{verdict}** ({s[0]:+.0%}, {s[1]:+.2f} pt, "
        f"worst {s[2]:+.2f} pt)."
    )
    print("\n".join(out))
    log(f"bench_stopping: {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
