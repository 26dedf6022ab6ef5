"""Training overhead: the same small Lightning fit with no tracker and with each tool.

Every tool gets the same protocol, in fresh processes of its own interpreter (fit_worker.py):
a cold no-tracker fit, then pairs of (no tracker, tool) fits in a shuffled order; a ratio is a
tool fit over the no-tracker fit of its own pair (same process, adjacent in time, which halves
the chance differences between fits). The first pair's tool fit is also the tool's first start
in the process (CodeCarbon probes the hardware then, Zeus and perun start helpers), so it is
reported apart from the later pairs. Prints a markdown section.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fit_worker  # noqa: E402
import peers  # noqa: E402
from figures import HERE, REPO, headline, log, spread, table  # noqa: E402

ROUNDS = 2

HOW = {
    "ours": "`CarbonCallback(intensity=\"FR\")` in `callbacks=`",
    "codecarbon": "`OfflineEmissionsTracker(...)` `start()` before the trainer, `stop()` after",
    "carbontracker": "`CarbonTracker(epochs=10)` built before the trainer, `epoch_start()`/"
                     "`epoch_end()` in the epoch hooks, `stop()` after",
    "zeus": "`ZeusMonitor()` and `begin_window()` before the trainer, `end_window()` after",
    "perun": "`fit()` runs while a `@perun.perun` function is running",
    "eco2ai": "`Tracker(...)` `start()` before the trainer, `stop()` after",
}


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


def configs(found: list[peers.Runner]) -> list[tuple[str, peers.Runner, dict]]:
    out = []
    for r in found:
        if r.key == "codecarbon":
            out.append(("CodeCarbon", r, {}))
        else:
            out.append((r.label, r, {}))
    return out


def one(runner: peers.Runner, options: dict, out: str, round_no: int) -> list[dict]:
    proc = subprocess.run([runner.python, os.path.join(HERE, "fit_worker.py"), runner.key, out,
                           str(round_no), json.dumps(options)], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env=dict(os.environ, PYTHONPATH=HERE))
    try:
        with open(out) as f:
            return json.load(f)
    except (OSError, ValueError):
        return [{"config": "error", "error": proc.stderr.strip()[-400:]}]


def main() -> int:
    found, missing = peers.runners()
    cfgs = configs(found)
    rng = random.Random(0)
    fits: dict[str, list[list[dict]]] = {name: [] for name, _, _ in cfgs}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(ROUNDS):
            order = list(cfgs)
            rng.shuffle(order)
            for n, (name, runner, options) in enumerate(order):
                fits[name].append(one(runner, options, os.path.join(tmp, f"{i}-{n}.json"), i))
            log(f"overhead: round {i + 1}/{ROUNDS}")
    rows, errors, first, later, imports = [], [], {}, {}, {}
    cold_all = []
    for name, runner, _ in cfgs:
        first[name], later[name] = [], []
        for proc in fits[name]:
            ok = [r for r in proc if "error" not in r]
            errors += [f"- {name} failed: {r['error']}" for r in proc if "error" in r]
            cold_all += [r["total_s"] for r in ok if r["config"] == "none"]
            for r in ok:
                if r["config"] != "tool":
                    continue
                base = next((b["total_s"] for b in ok if b["config"] == "none_warm"
                             and b["pair"] == r["pair"]), None)
                if base:
                    (first if r["pair"] == 0 else later)[name].append(r["total_s"] / base)
            imports[name] = [r["import_s"] * 1000 for r in ok[:1]]
        tool_times = [r["total_s"] for proc in fits[name] for r in proc
                      if r.get("config") == "tool"]
        rows.append([f"{name}: {HOW.get(runner.key, '')}", spread(tool_times, "{:.3f}", " s"),
                     spread(first[name], "{:.3f}"), spread(later[name], "{:.3f}"),
                     spread(first[name] + later[name], "{:.3f}"),
                     spread(imports[name], "{:.0f}", " ms")])
    out = ["## Training overhead (Lightning)", ""]
    out.append(
        f"A {fit_worker.EPOCHS}-epoch fit of a 2-layer MLP on {fit_worker.SAMPLES} synthetic "
        f"samples (batch {fit_worker.BATCH}, one torch thread, CPU, validation every epoch), "
        f"the same Lightning and torch for every tool. {ROUNDS} rounds; in each, one fresh "
        "process per tool (in a shuffled order) runs a cold no-tracker fit, then "
        f"{fit_worker.PAIRS} pairs of (no tracker, tool) in a shuffled order. Time: from "
        "building the tracker or callback to its stop; the tool's import is done before the "
        "clock starts and shown apart. Ratio: the tool's fit over the no-tracker fit of its "
        "pair. `first` is the first pair of each process (the tool's first start in it), "
        "`later` the others. Target for ours: <= 1.01.")
    out.append("")
    out.append(peers.versions_line(found, missing))
    out.append("")
    out.append(table(["tool", "fit time with it", "ratio, first", "ratio, later",
                      "ratio, all pairs", "import"], rows))
    warm = [r["total_s"] for name in fits for proc in fits[name] for r in proc
            if r.get("config") == "none_warm"]
    if cold_all and warm:
        out.append("")
        out.append(f"No-tracker fits: cold {spread(cold_all, '{:.3f}', ' s')}, warm "
                   f"{spread(warm, '{:.3f}', ' s')}: single ratios move by a few percent by "
                   "chance on this shared machine; the medians, and our hook timings below, "
                   "are what to read.")
    seen = {name: next((r["described"] for proc in fits[name] for r in proc
                        if r.get("described")), "") for name in fits}
    if any(seen.values()):
        out.append("")
        out.append("What each peer measured during the fit on this machine (no RAPL, no GPU: a "
                   "tool with no source does little, which its ratio shows):")
        out.append("")
        out += [f"- {name}: {text}" for name, text in seen.items() if text]
    ours = [r for proc in fits.get("ours", []) for r in proc if r.get("config") == "tool"]
    implied = costs = None
    if ours:
        out.append("")
        text, implied, costs = hooks_section(
            ours, [r for proc in fits["ours"] for r in proc if r.get("config") == "none_warm"])
        out.append(text)
        out.append("")
        out.append("Keys our callback put in `trainer.callback_metrics`: "
                   + ", ".join(f"`{k}`" for k in ours[0]["logged"]))
    every = {name: first[name] + later[name] for name in first}
    if every.get("ours"):
        mine = statistics.median(every["ours"])
        ahead = [f"{name} {statistics.median(v):.3f}" for name, v in every.items()
                 if name != "ours" and v and statistics.median(v) < mine]
        out.append("")
        out.append(f"Where a peer's median ratio is below ours ({mine:.3f}): "
                   + (", ".join(ahead) if ahead else "none") + " (see what each measured).")
    peers_done = [(statistics.median(v), name) for name, v in every.items()
                  if v and name != "ours"]
    best = min(peers_done) if peers_done else None
    headline(f"Lightning fit overhead ({fit_worker.EPOCHS} epochs, "
             f"{spread(cold_all, '{:.2f}', ' s')} without a tracker), median ratio over "
             f"{ROUNDS * fit_worker.PAIRS} paired fits (first pair / all): " + "; ".join(
                 f"{name} {spread(first[name], '{:.3f}').split(' ')[0]} / "
                 f"{spread(every[name], '{:.3f}').split(' ')[0]}" for name in every)
             + (f"; best peer {best[1]} {best[0]:.3f}" if best else "") + ".")
    if implied:
        headline("Our callback's own time, inside its hooks plus its sampler thread, over the "
                 f"no-tracker fit: {implied}; {costs}.")
    if errors:
        out.append("")
        out += sorted(set(errors))
    print("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
