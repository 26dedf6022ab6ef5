"""Training overhead: the same small Lightning fit with no tracker, ours, and CodeCarbon.

Fits run in fresh processes (fit_worker.py), as a real job does. CodeCarbon's fits are each the
first of their process, so its in-process hardware cache does not hide its cold start, and are
compared with a no-tracker fit that is also first in its process. Ours is compared with a
no-tracker fit run next to it in one process, in a shuffled order: adjacent fits in one process
differ less by chance, which a 1% target needs. Prints a markdown section.
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

ROUNDS = 3
PROCESSES = ("pair", "cc1", "ccdefault")
NAMES = {
    "none": "no tracker, cold (first fit of a fresh process)",
    "none_warm": "no tracker, warm (a later fit in the same process)",
    "ours": "ours: `CarbonCallback(intensity=\"FR\")`, warm, paired with the fit above",
    "cc1": "CodeCarbon `OfflineEmissionsTracker(measure_power_secs=1)`, cold",
    "ccdefault": "CodeCarbon `OfflineEmissionsTracker()` (default interval), cold",
}


def one(config: str, out: str, round_no: int) -> list[dict]:
    proc = subprocess.run([PYTHON, os.path.join(HERE, "fit_worker.py"), config, out,
                           str(round_no)], cwd=REPO, capture_output=True, text=True, timeout=300)
    try:
        with open(out) as f:
            return json.load(f)
    except (OSError, ValueError):
        return [{"config": config, "error": proc.stderr.strip()[-400:]}]


def hooks_section(ours: list[dict], none: list[dict]) -> tuple[str, str, str]:
    """Our callback's own time, measured inside its hooks: steadier than whole-fit ratios.

    Returns the paragraph, the implied ratio (hooks plus sampler thread over the median
    no-tracker fit) and the fixed and per-epoch costs, each as text.
    """
    once = ("__init__", "on_fit_start", "on_fit_end", "setup", "teardown")
    fixed = [sum(sum(v) for k, v in r["hook_s"].items() if k in once) * 1000 for r in ours]
    per_epoch = [sum(sum(v) for k, v in r["hook_s"].items() if k not in once) * 1000
                 / max(r["epochs"], 1) for r in ours]
    total = [sum(sum(v) for v in r["hook_s"].values()) for r in ours]
    sampler = [r["sampler_cpu_s"] for r in ours if r.get("sampler_cpu_s") is not None]
    base = sorted(r["total_s"] for r in none)
    median_base = base[len(base) // 2] if base else float("nan")
    implied = [1 + (t + (r.get("sampler_cpu_s") or 0.0)) / median_base
               for t, r in zip(total, ours, strict=True)]
    names = sorted({k for r in ours for k in r["hook_s"]})
    detail = ", ".join(
        f"`{k}` {spread([sum(r['hook_s'].get(k, [0])) * 1000 for r in ours], '{:.3g}', ' ms')}"
        for k in names)
    sampler_ms = spread([s * 1000 for s in sampler], "{:.3g}", " ms")
    sampler_text = (f"its sampler thread used {sampler_ms} of CPU over the fit (read from "
                    "/proc for that thread)" if sampler else
                    "its sampler thread's CPU time could not be read")
    costs = (f"fixed {spread(fixed, '{:.3g}', ' ms')} per fit (construction, fit start and "
             f"end) plus {spread(per_epoch, '{:.3g}', ' ms')} per epoch (the epoch hooks and "
             "the validation boundary marks)")
    text = (
        "Our callback's own cost, timed inside its hooks in the training thread (steadier "
        f"than whole-fit ratios on a shared machine): {costs}; {sampler_text}. Hooks plus "
        f"sampler thread over the median no-tracker fit give a ratio of "
        f"{spread(implied, '{:.4f}')}. Per hook, summed over the fit: {detail}.")
    return text, spread(implied, "{:.4f}"), costs


def ratios_of(rounds: list[list[dict]]) -> dict[str, list[float]]:
    """Per config, its time over its baseline's: ours over the warm no-tracker fit of the same
    pair (same process), CodeCarbon over the cold no-tracker fit of the same round."""
    out: dict[str, list[float]] = {c: [] for c in NAMES}
    for results in rounds:
        ok = [r for r in results if "error" not in r]
        cold = next((r["total_s"] for r in ok if r["config"] == "none"), None)
        for r in ok:
            if r["config"] in ("cc1", "ccdefault") and cold:
                out[r["config"]].append(r["total_s"] / cold)
            elif r["config"] == "ours":
                base = next((b["total_s"] for b in ok if b["config"] == "none_warm"
                             and b.get("pair") == r.get("pair")), None)
                if base:
                    out["ours"].append(r["total_s"] / base)
        if cold:
            out["none"].append(1.0)
    return out


def main() -> int:
    rng = random.Random(0)
    rounds: list[list[dict]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(ROUNDS):
            order = list(PROCESSES)
            rng.shuffle(order)
            results: list[dict] = []
            for c in order:
                results += one(c, os.path.join(tmp, f"{c}{i}.json"), i)
            rounds.append(results)
            log(f"overhead: round {i + 1}/{ROUNDS} ({', '.join(order)})")
    fits = [r for results in rounds for r in results]
    errors = sorted({f"- {r['config']} failed: {r['error']}" for r in fits if "error" in r})
    ok = [r for r in fits if "error" not in r]
    ratios = ratios_of(rounds)
    out = ["## Training overhead (Lightning)", ""]
    out.append(
        f"A {fit_worker.EPOCHS}-epoch fit of a 2-layer MLP on {fit_worker.SAMPLES} synthetic "
        f"samples (batch {fit_worker.BATCH}, one torch thread, CPU, validation every epoch). "
        f"{ROUNDS} rounds; each runs three fresh processes in a shuffled order: one with a "
        f"cold no-tracker fit followed by {fit_worker.PAIRS} pairs of (no tracker, ours) in a "
        "shuffled order, and one per CodeCarbon setting. Time: from constructing the "
        "callback/tracker to its stop (`fit()` for no tracker); imports are done before the "
        "clock starts, for every config alike. Ratios: ours over the no-tracker fit of its own "
        "pair (same process, adjacent in time, which halves the chance differences between "
        "fits); CodeCarbon, whose first start in a process probes the hardware for about a "
        "second, over the cold no-tracker fit of its round, both first fits of a fresh process. "
        "Target for ours: <= 1.01.")
    imports = []
    for tool, key, configs in (("ours", "ours", ("ours",)),
                               ("CodeCarbon", "codecarbon", ("cc1", "ccdefault"))):
        ms = [r["import_s"][key] * 1000 for r in ok if r["config"] in configs
              and key in r.get("import_s", {})]
        if ms:
            imports.append(f"{tool} {spread(ms, '{:.0f}', ' ms')}")
    if imports:
        out.append("")
        out.append("Import times, outside the timed span (each measured in its own tool's "
                   "process, with torch and Lightning already imported): "
                   + ", ".join(imports) + ".")
    out.append("")
    rows = []
    for config, name in NAMES.items():
        times = [r["total_s"] for r in ok if r["config"] == config]
        rows.append([name, spread(times, "{:.3f}", " s"), spread(ratios[config], "{:.3f}")
                     if config != "none_warm" else "(baseline of ours)"])
    out.append(table(["config", "time", "ratio"], rows))
    cold = [r["total_s"] for r in ok if r["config"] == "none"]
    chance = []
    for results in rounds:
        warm = [r["total_s"] for r in results if r.get("config") == "none_warm"]
        chance += [abs(a - b) / min(a, b) for a, b in zip(warm, warm[1:], strict=False)]
    if cold:
        out.append("")
        out.append(
            f"Chance differences: the cold no-tracker fits span {min(cold):.3f}-{max(cold):.3f} "
            f"s ({(max(cold) / min(cold) - 1) * 100:.1f}%), and two warm no-tracker fits of one "
            f"process differ by {spread([c * 100 for c in chance], '{:.1f}', '%')}: single "
            "ratios move by more than the 1% target, so the median over pairs, and the hook "
            "timings below, are what to read.")
    ours_ok = [r for r in ok if r["config"] == "ours"]
    implied = costs = None
    if ours_ok:
        out.append("")
        hooks, implied, costs = hooks_section(
            ours_ok, [r for r in ok if r["config"] == "none_warm"])
        out.append(hooks)
        out.append("")
        out.append("Keys our callback put in `trainer.callback_metrics`: "
                   + ", ".join(f"`{k}`" for k in ours_ok[0]["logged"]))
    base = spread(cold, "{:.2f}", " s")
    headline(f"Lightning fit overhead ({fit_worker.EPOCHS} epochs, {base} without a tracker): "
             f"ours {spread(ratios['ours'], '{:.3f}')} over {len(ratios['ours'])} paired fits "
             f"(target <= 1.01); CodeCarbon {spread(ratios['cc1'], '{:.3f}')} "
             f"(measure_power_secs=1) and {spread(ratios['ccdefault'], '{:.3f}')} (default), "
             f"{ROUNDS} rounds.")
    if implied:
        headline("Our callback's own time, inside its hooks plus its sampler thread, over the "
                 f"no-tracker fit: {implied}; {costs}.")
    if errors:
        out.append("")
        out += errors
    print("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
