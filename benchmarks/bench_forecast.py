"""Forecasts of a run's total energy: carbontracker's after epoch 1 against our ``Forecast``.

Both watch the same Lightning fits at once (forecast_worker.py), on fake powercap trees with a
known trace (constant 42 W; 30/70 W phases of 8 s), for three run shapes: steady epochs, a
first epoch with 1.5 s of extra work (warm-up), and epochs growing by a quarter each (a
curriculum). The truth is the trace's energy from the first epoch's start to the last one's
end. Needs carbontracker installed (``peers.py``) and a private mount namespace, as the
accuracy benchmark does. Prints a markdown section.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peers  # noqa: E402
from bench_accuracy import can_unshare  # noqa: E402
from figures import HERE, PYTHON, REPO, headline, log, table  # noqa: E402
from traces import tree  # noqa: E402

TREES = ("constant", "phased")
SHAPES = ("steady", "warm-up", "growing")
EPOCHS = 6
SAMPLES = 100_000  # per epoch (before growth): about 1.7 s an epoch on a quiet 2-CPU machine
KWH = 3_600_000.0


def launch(spec: dict, root: str, env: dict) -> subprocess.Popen:
    path = spec["out"] + ".spec"
    with open(path, "w") as f:
        json.dump(spec, f)
    inner = ("mount -t tmpfs none /sys/class && mkdir /sys/class/powercap && "
             f"mount --bind '{os.path.join(root, spec['tree'])}' /sys/class/powercap && "
             f"exec '{PYTHON}' '{os.path.join(HERE, 'forecast_worker.py')}' '{path}'")
    return subprocess.Popen(["unshare", "-m", "sh", "-c", inner], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def run() -> list[dict]:
    site = subprocess.run([peers.python_of("carbontracker"), "-c",
                           "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True).stdout.strip()
    root = tempfile.mkdtemp(prefix="ccb_forecast_", dir="/dev/shm" if os.path.isdir(
        "/dev/shm") else None)
    t0 = time.monotonic()
    driver = subprocess.Popen([PYTHON, os.path.join(HERE, "powercap_driver.py"), root,
                               repr(t0), "1200", *TREES])
    while not os.path.exists(os.path.join(root, "ready")):
        time.sleep(0.05)
    env = dict(os.environ)
    results = []
    # One fit at a time: fits run together would speed up as others finish, which no
    # per-epoch forecast can know.
    for t in TREES:
        for shape in SHAPES:
            spec = {"tree": t, "shape": shape, "epochs": EPOCHS, "samples": SAMPLES, "t0": t0,
                    "ct_site": site, "out": os.path.join(root, f"{t}-{shape}.json")}
            proc = launch(spec, root, env)
            results.append(wait(spec, proc))
            log(f"forecast: {t}, {shape} done")
    driver.kill()
    driver.wait()
    return results


def wait(spec: dict, proc: subprocess.Popen) -> dict:
    """The worker's result, or the spec with why there is none."""
    try:
        _, err = proc.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    try:
        with open(spec["out"]) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {**spec, "error": err.strip()[-300:]}


def main() -> int:
    out = ["## Forecast of a run's energy: carbontracker vs ours", ""]
    why = can_unshare()
    st = peers.status("carbontracker")
    if why or not st.get("ok"):
        out.append(f"Not run: {why or 'carbontracker: ' + str(st.get('why'))}.")
        print("\n".join(out) + "\n")
        return 0
    results = run()
    rows, errs, fails = [], {"ct": [], "o0": [], "o1": []}, []
    cover = {"o0": [], "o1": []}
    for r in results:
        if r.get("error") or not r.get("ct_epochs") or not r.get("ours_span"):
            fails.append(f"- {r.get('tree')} / {r.get('shape')}: {r.get('error', 'no data')}")
            continue
        trace = tree(r["tree"])
        # What each forecast aims at: carbontracker's epochs; ours, the run from its first
        # record's start to its last's end (epochs and what lies between them).
        truth_ct = sum(trace.joules(a, b) for a, b in r["ct_epochs"])
        truth_ours = trace.joules(*r["ours_span"])
        pred = next((e for d, _, e in r["printed"] if d.startswith("Predicted")), None)
        actual = next((e for d, _, e in r["printed"] if d.startswith("Actual")), None)
        cells = [f"{r['tree']}, {r['shape']}",
                 f"{truth_ct / 1000:.2f} / {truth_ours / 1000:.2f} kJ",
                 " / ".join(f"{b - a:.1f}" for a, b in r["ct_epochs"])]
        if pred is not None:
            e = pred * KWH / truth_ct - 1
            errs["ct"].append(e)
            own = f" (its final figure {actual * KWH / truth_ct - 1:+.1%})" if actual else ""
            cells.append(f"{e:+.1%}{own}")
        else:
            cells.append("no prediction")
        for w, key in (("0", "o0"), ("1", "o1")):
            p = r["ours"].get(w)
            if p is None:
                cells.append("no prediction")
                continue
            e = p["kwh"] * KWH / truth_ours - 1
            inside = p["low"] * KWH <= truth_ours <= p["high"] * KWH
            errs[key].append(e)
            cover[key].append(inside)
            cells.append(f"{e:+.1%} [{p['low'] * KWH / truth_ours - 1:+.0%}, "
                         f"{p['high'] * KWH / truth_ours - 1:+.0%}] "
                         f"{'covers' if inside else 'misses'}")
        if r.get("ours_total_kwh"):
            cells.append(f"{r['ours_total_kwh'] * KWH / truth_ours - 1:+.2%}")
        rows.append(cells)

    def summary(key: str) -> str:
        if not errs[key]:
            return "n/a"
        text = (f"median |error| {statistics.median(abs(e) for e in errs[key]):.1%}, worst "
                f"{max(abs(e) for e in errs[key]):.1%}")
        if key in cover:
            text += f", interval covers the truth in {sum(cover[key])} of {len(cover[key])}"
        return text

    out.append(
        f"{len(TREES) * len(SHAPES)} Lightning fits of {EPOCHS} epochs (CPU, one torch thread, "
        f"{SAMPLES:,} samples an epoch before growth, one fit at a time), each watched by both "
        "tools in one process, on fake RAPL trees (constant 42 W; 30/70 W phases of 8 s), "
        "inside a private mount namespace. Truth: the trace's energy over what each tool "
        "predicts: carbontracker's epochs (it measures from `epoch_start()` to `epoch_end()`), "
        "our run (from the first epoch record's start to the last one's end, which includes "
        "what Lightning does between epochs). carbontracker (`CarbonTracker(epochs=6)`, "
        "epoch hooks) prints its prediction after epoch 1 (its figures divided by its PUE of "
        "1.58). Ours: `Forecast(max_epochs=6)` (warm-up 1: first forecast after epoch 2) and "
        "`Forecast(max_epochs=6, warmup=0)` (after epoch 1, the same information as "
        "carbontracker), from the records of `CarbonCallback(meter=EnergyMeter(sensors="
        "[RaplSensor(\"cpu\", scope=\"machine\")]))` (the package counter alone, as the "
        "trace holds); an interval is the forecast's low-high range. Errors are the predicted "
        "total over the truth; carbontracker gives no interval.")
    out.append("")
    out.append(table(["run", "true energy (carbontracker's epochs / our run)", "epoch seconds",
                      "carbontracker, after epoch 1", "ours, warm-up 0, after epoch 1",
                      "ours, warm-up 1, after epoch 2", "our final figure"], rows))
    out.append("")
    out.append(f"- carbontracker: {summary('ct')}")
    out.append(f"- ours, warm-up 0 (after epoch 1): {summary('o0')}")
    out.append(f"- ours, warm-up 1 (after epoch 2, the default): {summary('o1')}")
    out += fails
    if errs["ct"] and errs["o0"] and statistics.median(abs(e) for e in errs["ct"]) < \
            statistics.median(abs(e) for e in errs["o0"]):
        out.append("")
        out.append("carbontracker's epoch-1 forecast is closer than ours from the same epoch "
                   "(median |error|).")
        headline("carbontracker's epoch-1 forecast is closer than ours from the same epoch.")
    headline("Forecast of a run's total energy (6 fits, 3 shapes x 2 power traces): "
             f"carbontracker after epoch 1 {summary('ct')}; ours after epoch 1 {summary('o0')}; "
             f"ours after epoch 2 (default) {summary('o1')}.")
    print("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
