"""Scores the accuracy benchmark's windows against the traces and writes its section.

Every window is scored against the exact integral of its trace between the instants that
bound it (``accuracy_worker.py``). What is compared, per tree:

- ``packages``: the tool's CPU figure against the package zones;
- ``DRAM`` (two-socket tree): the tool's DRAM figure, where it reads the DRAM zones apart;
- ``all zones`` (two-socket tree): CPU plus DRAM as the tool reports them, against every zone,
  which scores alike a tool that counts DRAM inside its CPU figure (carbontracker) and one
  that reports it apart; a tool that reads no DRAM zone is short by the DRAM share there;
- the GPU: its energy against the GPU trace, counter or power readings only.
"""

from __future__ import annotations

from figures import headline, pct, table
from traces import GPU_TRACE, TREES, tree

WINDOWS = (1, 10, 60)


def phantom_wraps(excess_j: float, trace: object, a: float, b: float) -> int:
    """How many whole counter ranges a window read too much, when the counter did not wrap.

    A tool that sees the counter go backwards adds one ``max_energy_range_uj``; if the counter
    did not wrap (a read out of order), the window is one range too high: 262 kJ here, which
    no power trace of these can explain. Returns 0 for an ordinary error.
    """
    rng = trace.wrap_j
    k = round(excess_j / rng)
    if k < 1 or trace.wraps_between(a, b) or abs(excess_j - k * rng) > 0.01 * rng:
        return 0
    return k


def score(results: list[dict], cols: list[dict]) -> tuple[dict, list, list, dict]:
    """errors[(label, row, seconds)] -> relative errors; plus phantoms, failures, methods."""
    lumps = {c["label"]: c["runner"].key == "carbontracker" for c in cols}
    errors: dict[tuple, list[float]] = {}
    phantom, failures, methods = [], [], {}
    covered: dict[tuple, list[bool]] = {}  # ours: does the window's range hold the truth

    def add(label: str, row: str, secs: int, got: float | None, true: float) -> None:
        if got is not None and true > 0:
            errors.setdefault((label, row, secs), []).append((got - true) / true)

    for res in results:
        spec = res["spec"]
        label = spec["label"]
        if res.get("error"):
            failures.append(f"{label} on {spec['trace']}: {res['error']}")
        if res.get("methods"):
            methods.setdefault(f"{label}, GPU {spec['gpu']}", res["methods"])
        t = tree(spec["trace"])
        for w in res["windows"]:
            a, b, secs = w["a"], w["b"], w["seconds"]
            pk, dr = t.joules(a, b), t.joules(a, b, dram=True)
            cpu, dram = w.get("cpu"), w.get("dram")
            if t.has_dram:
                if not lumps[label]:
                    add(label, f"{t.name}: packages", secs, cpu, pk)
                add(label, f"{t.name}: DRAM", secs, dram, dr)
                if cpu is not None:
                    add(label, f"{t.name}: all zones", secs, cpu + (dram or 0.0), pk + dr)
            elif cpu is not None:
                k = phantom_wraps(cpu - pk, t.package, a, b)
                if k:
                    # Scored apart: not a measurement error but a wrap that did not happen.
                    phantom.append((label, t.name, secs, k, (cpu - pk) / pk))
                else:
                    add(label, t.name, secs, cpu, pk)
            add(label, f"gpu-{spec['gpu']}", secs, w.get("gpu"), GPU_TRACE.joules(a, b))
            if w.get("gpu_range"):
                lo, hi = w["gpu_range"]
                covered.setdefault((spec["gpu"], secs), []).append(
                    lo <= GPU_TRACE.joules(a, b) <= hi)
    return errors, phantom, sorted(set(failures)), methods, covered


def worst(errors: dict, label: str, rows: list[str], secs: int) -> float | None:
    vals = [abs(e) for r in rows for e in errors.get((label, r, secs), [])]
    return max(vals) if vals else None


def best_peer(errors: dict, labels: list[str], rows: list[str]) -> str:
    """The peer with the smallest worst error at 1 s (then 10 s, 60 s), as text."""
    scored = []
    for lab in labels[1:]:
        w = [worst(errors, lab, rows, s) for s in WINDOWS]
        if all(v is not None for v in w):
            scored.append((w, lab))
    if not scored:
        return "no peer measured it"
    w, lab = min(scored)
    return f"{lab} " + " / ".join(f"{v * 100:.2f}%" for v in w)


def render(results: list[dict], cols: list[dict], drivers: list, versions: str) -> str:
    labels = [c["label"] for c in cols]
    errors, phantom, failures, methods, covered = score(results, cols)
    rows = []
    for t in TREES:
        names = ([f"{t.name}: packages", f"{t.name}: DRAM", f"{t.name}: all zones"]
                 if t.has_dram else [t.name])
        for name in names:
            for secs in WINDOWS:
                what = t.what if name == t.name or name.endswith("all zones") else ""
                rows.append([f"{name}{': ' + what if what else ''}", f"{secs} s"] + [
                    pct(errors.get((lab, name, secs), [])) for lab in labels])
    for gpu, how in (("counter", "energy counter"), ("polled", "power readings only")):
        for secs in WINDOWS:
            rows.append([f"GPU ({how}): {GPU_TRACE.what}", f"{secs} s"] + [
                pct(errors.get((lab, f"gpu-{gpu}", secs), [])) for lab in labels])
    rate = min(d[0] for d in drivers)
    late = sum(d[1] for d in drivers)
    realtime = all(d[2] for d in drivers)
    out = ["## Accuracy on known power traces", ""]
    out.append(
        "Relative error of the reported joules against the exact integral of the trace over the "
        "same window, as median (min..max) over windows. Every tool ran at the same time on the "
        "same fake trees, each process in a private mount namespace with its tree bind-mounted "
        "over `/sys/class/powercap` (`unshare -m`), under its own interpreter (each peer in its "
        "own virtualenv), the GPU a fake `pynvml` following a known trace, with its energy "
        "counter (processes on every tree but one) or power readings only (the spikes "
        "tree). Three phases of about three minutes, so that fewer "
        "processes share the 2 CPUs: the 60 s windows on every tree, then the short windows "
        "on three trees and on the other two; ours runs in every phase. Ours: one "
        "`EnergyMeter(scope=\"machine\")`, a `mark()` every second for 60 s; each peer: one "
        "process with a 60 s window and one with three 10 s and ten 1 s windows, each a "
        "start/stop (or epoch, for carbontracker; or a call of a `@perun.perun` function, for "
        "perun) of the tool with its defaults, except CodeCarbon also at "
        "`measure_power_secs=1`, and eco2AI, which reads no RAPL counter, only on the constant and "
        "spikes trees. carbontracker's figures are divided by its PUE (1.58). A "
        "window is bounded by the instant the start returned and the instant the stop was "
        "called (for consecutive marks, the instant each `mark()` read the counters). On a "
        "loaded machine a start or stop call can wait for the CPU between reading and "
        "returning, which moves 1 s windows by a few percent for any tool; errors under about "
        "0.2% on 1 s windows are below what this harness resolves even when quiet. "
        f"Driver: {rate:.0f} counter updates per second per zone or more "
        f"({'real-time priority' if realtime else 'normal priority'}, {late} resynchronisations "
        "after falling behind by over 50 ms).")
    out.append("")
    out.append(versions)
    out.append("")
    out.append(table(["trace", "window"] + labels, rows))
    out.append("")
    out.append("`n/a`: the tool gave no such figure (eco2AI reads no RAPL counter: its CPU figure "
               "is TDP x this process's load, near 0 W for the idle measuring process; "
               "carbontracker counts DRAM zones inside its CPU figure, so only its `all zones` "
               "row is comparable; only ours, Zeus and perun read DRAM zones apart).")
    out.append("")
    counts = {lab: sum(len(v) for k, v in errors.items() if k[0] == lab) for lab in labels}
    out.append("Windows scored per tool: " + ", ".join(f"{k}: {v}" for k, v in counts.items()))
    out.append("")
    steady = ["constant", "square", "spikes", "sockets: packages", "gpu-counter"]
    short = {lab: lab for lab in labels}
    headline("Accuracy with hardware energy counters (RAPL constant/square/spikes/two sockets' "
             "packages, NVML energy), worst |error| over 1 s / 10 s / 60 s windows: " + "; ".join(
                 f"{short[lab]} " + " / ".join(
                     f"{v * 100:.2f}%" if (v := worst(errors, lab, steady, s)) is not None
                     else "n/a" for s in WINDOWS) for lab in labels)
             + " (the harness resolves about 0.2% at 1 s).")
    zones = [pct(errors.get((lab, "sockets: all zones", 60), [])).split(" ")[0] for lab in labels]
    headline("Two sockets with DRAM zones, all zones, 60 s windows (median error): " + "; ".join(
        f"{lab} {z}" for lab, z in zip(labels, zones, strict=True)) + ".")
    wrap = [pct(errors.get((lab, "wrap", 60), [])).split(" ")[0] for lab in labels]
    headline("A RAPL counter wrapping every 5 s, 60 s windows (median error): " + "; ".join(
        f"{lab} {w}" for lab, w in zip(labels, wrap, strict=True)) + ".")
    headline("GPU with power readings only (no energy counter), worst |error| over 1 s / 10 s / "
             "60 s windows: " + "; ".join(
                 f"{lab} " + " / ".join(
                     f"{v * 100:.2f}%" if (v := worst(errors, lab, ["gpu-polled"], s))
                     is not None else "n/a" for s in WINDOWS) for lab in labels) + ".")
    out.append("Best peer per family, worst |error| at 1 s / 10 s / 60 s: energy counters "
               f"{best_peer(errors, labels, steady)}; polled GPU "
               f"{best_peer(errors, labels, ['gpu-polled'])}; ours "
               + " / ".join(f"{v * 100:.2f}%" if (v := worst(errors, 'ours', steady, s))
                            is not None else "n/a" for s in WINDOWS)
               + " and " + " / ".join(
                   f"{v * 100:.2f}%" if (v := worst(errors, 'ours', ['gpu-polled'], s))
                   is not None else "n/a" for s in WINDOWS) + ".")
    out.append("")
    ahead = []
    for row in sorted({k[1] for k in errors}):
        for secs in WINDOWS:
            mine = worst(errors, "ours", [row], secs)
            if mine is None:
                continue
            n_mine = len(errors.get(("ours", row, secs), []))
            for lab in labels[1:]:
                theirs = worst(errors, lab, [row], secs)
                if theirs is not None and theirs < mine:
                    n = len(errors.get((lab, row, secs), []))
                    ahead.append(f"{lab} on {row} {secs} s ({theirs * 100:.2f}% over {n} "
                                 f"windows vs ours {mine * 100:.2f}% over {n_mine})")
    out.append("Rows where a peer's worst |error| is below ours: "
               + ("; ".join(ahead) if ahead else "none") + ". (Ours has more windows per row "
               "than each peer, 60 a process from its marks, and the worst of more windows is "
               "larger by chance; the medians and ranges in the table give the rest.)")
    out.append("")
    if ahead:
        headline("Accuracy rows where a peer's worst |error| is below ours: "
                 + "; ".join(ahead) + ".")
    if phantom:
        out.append(
            f"Scored apart ({len(phantom)} window(s)): windows that read whole counter ranges too "
            "much while the counter did not wrap, that is, a wrap counted after a read out of "
            "order: " + "; ".join(f"{lab} on {tr}, a {secs} s window, {k} range(s), "
                                  f"{err * 100:+,.0f}%" for lab, tr, secs, k, err in phantom)
            + ". For CodeCarbon, `benchmarks/codecarbon_race.py` reproduces it alone, with the "
            "threads involved.")
        out.append("")
    held = covered.get(("polled", 1), [])
    if held:
        out.append("Our polled GPU windows carry a range (the sampling error bound: half of each "
                   "step between samples times its interval): it held the true energy in "
                   + ", ".join(f"{sum(covered.get(('polled', s), []))} of "
                               f"{len(covered.get(('polled', s), []))} {s} s windows"
                               for s in WINDOWS) + ".")
        out.append("")
    marks = [r["mark_ms_max"] for r in results if r.get("mark_ms_max") is not None]
    if marks:
        out.append(f"Longest `mark()` call seen (bounds our boundary timing): {max(marks):.2f} ms.")
        out.append("")
    out.append("What each tool used:")
    out.append("")
    out += [f"- {k}: {v}" for k, v in sorted(methods.items())]
    if failures:
        out.append("")
        out.append("Failures:")
        out += [f"- {f}" for f in failures]
    return "\n".join(out) + "\n"
