"""Training overhead: the same small Lightning fit with no tracker, ours, and CodeCarbon.

Each fit is a fresh process (fit_worker.py), as a real job is, so CodeCarbon's in-process
hardware cache does not hide its cold start. Rounds run every config once in a shuffled order;
ratios to the no-tracker fit are taken within each round. Prints a markdown section.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fit_worker  # noqa: E402
from figures import HERE, PYTHON, REPO, headline, log, spread, table  # noqa: E402

ROUNDS = 5
CONFIGS = {
    "none": "no tracker",
    "ours": "ours: `CarbonCallback(intensity=\"FR\")`",
    "cc1": "CodeCarbon `OfflineEmissionsTracker(measure_power_secs=1)`",
    "ccdefault": "CodeCarbon `OfflineEmissionsTracker()` (default interval)",
}


def one(config: str, out: str) -> dict:
    proc = subprocess.run([PYTHON, os.path.join(HERE, "fit_worker.py"), config, out], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    try:
        with open(out) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {"config": config, "error": proc.stderr.strip()[-400:]}


def hooks_section(ours: list[dict], none: list[dict]) -> str:
    """Our callback's own time, measured inside its hooks: steadier than whole-fit ratios."""
    once = ("__init__", "on_fit_start", "on_fit_end", "setup", "teardown")
    fixed = [sum(sum(v) for k, v in r["hook_s"].items() if k in once) * 1000 for r in ours]
    per_epoch = [sum(sum(v) for k, v in r["hook_s"].items() if k not in once) * 1000
                 / max(r["epochs"], 1) for r in ours]
    total = [sum(sum(v) for v in r["hook_s"].values()) for r in ours]
    base = sorted(r["total_s"] for r in none)
    implied = [1 + t / base[len(base) // 2] for t in total] if base else []
    names = sorted({k for r in ours for k in r["hook_s"]})
    detail = ", ".join(
        f"`{k}` {spread([sum(r['hook_s'].get(k, [0])) * 1000 for r in ours], '{:.3g}', ' ms')}"
        for k in names)
    return (
        "Our callback's own cost, timed inside its hooks in the training thread (steadier "
        "than whole-fit ratios on a shared machine): fixed "
        f"{spread(fixed, '{:.3g}', ' ms')} per fit (construction, fit start and end) plus "
        f"{spread(per_epoch, '{:.3g}', ' ms')} per epoch (the epoch hooks and the validation "
        f"boundary marks); over this fit that is a ratio of {spread(implied, '{:.4f}')} to the "
        "median no-tracker fit. It does not include the sampler thread, which `bench_core.py` "
        f"measures. Per hook, summed over the fit: {detail}.")


def main() -> int:
    rng = random.Random(0)
    rounds: list[dict[str, dict]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(ROUNDS):
            order = list(CONFIGS)
            rng.shuffle(order)
            rounds.append({c: one(c, os.path.join(tmp, f"{c}{i}.json")) for c in order})
            log(f"overhead: round {i + 1}/{ROUNDS} ({', '.join(order)})")
    out = ["## Training overhead (Lightning)", ""]
    out.append(
        f"A {fit_worker.EPOCHS}-epoch fit of a 2-layer MLP on {fit_worker.SAMPLES} synthetic "
        f"samples (batch {fit_worker.BATCH}, one torch thread, CPU, validation every epoch), "
        f"each fit in a fresh process; {ROUNDS} rounds, configs shuffled within a round. "
        "Time: from constructing the callback/tracker to its stop (`fit()` for no tracker); "
        "imports are done before the clock starts, for every config alike. Ratio: config / "
        "no tracker within the same round. Target for ours: <= 1.01. The machine was shared "
        "with other work while this ran, so single fits vary by a few percent.")
    out.append("")
    rows, notes, summary = [], [], {}
    for config, name in CONFIGS.items():
        times, ratios = [], []
        for rnd in rounds:
            r, base = rnd[config], rnd["none"]
            if "error" in r:
                notes.append(f"- {config} failed: {r['error']}")
                continue
            times.append(r["total_s"])
            if "error" not in base:
                ratios.append(r["total_s"] / base["total_s"])
        rows.append([name, spread(times, "{:.3f}", " s"), spread(ratios, "{:.3f}")])
        summary[config] = spread(ratios, "{:.3f}")
    out.append(table(["config", "time", "ratio to no tracker"], rows))
    ours_ok = [rnd["ours"] for rnd in rounds if "error" not in rnd["ours"]]
    if ours_ok:
        out.append("")
        hooks = hooks_section(ours_ok, [rnd["none"] for rnd in rounds
                                        if "error" not in rnd["none"]])
        out.append(hooks)
        out.append("")
        out.append("Keys our callback put in `trainer.callback_metrics`: "
                   + ", ".join(f"`{k}`" for k in ours_ok[0]["logged"]))
    base = spread([rnd["none"]["total_s"] for rnd in rounds if "error" not in rnd["none"]],
                  "{:.2f}", " s")
    headline(f"Lightning fit overhead, ratio to no tracker in the same round ({ROUNDS} rounds, "
             f"{fit_worker.EPOCHS} epochs, {base}): ours {summary.get('ours')}, CodeCarbon "
             f"{summary.get('cc1')} (measure_power_secs=1) and {summary.get('ccdefault')} "
             "(default).")
    if ours_ok:
        headline("Our callback's own time inside its hooks: " + hooks.split(": ", 1)[1]
                 .split(" It does not include")[0])
    if notes:
        out.append("")
        out += sorted(set(notes))
    print("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
