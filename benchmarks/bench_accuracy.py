"""Accuracy on known power traces: every tool's joules against the exact integral of the trace.

A driver process (powercap_driver.py) writes fake powercap trees (``traces.TREES``: one package
on a constant, square, spiky or fast-wrapping trace, and two packages with DRAM zones),
advancing every ``energy_uj`` at 1 kHz; a fake ``pynvml`` (fake_gpu/) makes one GPU follow a
known trace, with its energy counter or with power readings only. Every tool runs at once on
the same trees, each process inside a private mount namespace where its tree is bind-mounted
over ``/sys/class/powercap`` (the fixed path the peers read; ours reads it by default too),
under its own interpreter (peers in their venvs, ``peers.py``).

Ours: one meter, a ``mark()`` every second for 60 s, giving 1 s, 10 s and 60 s windows. Each
peer: one process with a 60 s window, one with three 10 s and ten 1 s windows, each window a
``begin()``/``end()`` of the tool as ``tools.py`` drives it. Three phases, so that fewer processes
share the 2 CPUs at once: every tool's 60 s windows on every tree, then the peers' short windows
on three trees and on the other two. Ours runs in each phase, so that its windows meet the same
load as the peers'. Processes on the spikes tree see a GPU with power readings only, the others
its energy counter. Prints a markdown section; the raw windows go to
``$TMPDIR/ccb_accuracy_raw.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import accuracy_report  # noqa: E402
import peers  # noqa: E402
from figures import HERE, PYTHON, REPO, log  # noqa: E402

# (which peer processes, trees) per phase; ours runs on the phase's trees in each.
PHASES = (("long", ("constant", "square", "spikes", "wrap", "sockets")),
          ("short", ("constant", "square", "spikes")), ("short", ("wrap", "sockets")))
# Processes on this tree see a GPU with power readings only; the others its energy counter.
GPU_POLLED_ON = ("spikes",)
LEAD_S = 45.0  # time for every process of a phase to import before the windows begin
SPAN_S = 62.0  # ours: 61 marks; a 60 s window
TAIL_S = 90.0  # the slowest peer's short schedule runs past SPAN_S (perun: ~2 s per window)


def columns(found: list[peers.Runner]) -> list[dict]:
    """Each column of the table: a tool with its settings and the processes it runs."""
    out = []
    for r in found:
        if r.key == "ours":
            out.append({"label": "ours", "runner": r, "options": {"scope": "machine"},
                        "modes": ["marks"]})
        elif r.key == "codecarbon":
            for secs in (15, 1):
                out.append({"label": f"CodeCarbon {secs} s", "runner": r,
                            "options": {"measure_power_secs": secs}, "modes": ["long", "short"],
                            "setting": f"measure_power_secs={secs}"
                            + (" (its default)" if secs == 15 else "")})
        else:
            out.append({"label": r.label, "runner": r, "options": {},
                        "modes": ["long", "short"], "setting": "defaults"})
            if r.key == "eco2ai":
                # It reads no RAPL counter (its CPU figure is TDP x load): one tree of each
                # GPU kind shows all it measures, at less load on the 2 CPUs.
                out[-1]["trees"] = ("constant", "spikes")
    return out


def can_unshare() -> str:
    """'' when a private mount namespace with a tmpfs over /sys/class can be made, else why."""
    if shutil.which("unshare") is None:
        return "`unshare` is not installed"
    try:
        proc = subprocess.run(
            ["unshare", "-m", "sh", "-c", "mount -t tmpfs none /sys/class && echo ok"],
            capture_output=True, text=True, timeout=20,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unshare failed: {exc}"
    if proc.stdout.strip() != "ok":
        return f"unshare -m / mount refused (needs root or CAP_SYS_ADMIN): {proc.stderr.strip()}"
    return ""


def launch(spec: dict, python: str, tree: str, env: dict) -> subprocess.Popen:
    """Start one worker in its own mount namespace with ``tree`` over /sys/class/powercap."""
    spec_path = spec["out"] + ".spec"
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    script = os.path.join(HERE, "accuracy_worker.py")
    inner = (
        "mount -t tmpfs none /sys/class && mkdir /sys/class/powercap && "
        f"mount --bind '{tree}' /sys/class/powercap && "
        f"exec '{python}' '{script}' '{spec_path}'"
    )
    return subprocess.Popen(["unshare", "-m", "sh", "-c", inner], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def run_phase(cols: list[dict], kind: str, trees: tuple[str, ...], env: dict) -> tuple:
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    root = tempfile.mkdtemp(prefix="ccb_bench_", dir=shm)
    t0 = time.monotonic()
    total = LEAD_S + SPAN_S + TAIL_S
    driver = subprocess.Popen([PYTHON, os.path.join(HERE, "powercap_driver.py"), root, repr(t0),
                               str(total), *trees])
    while not os.path.exists(os.path.join(root, "ready")):
        time.sleep(0.05)
    start_at = time.monotonic() + LEAD_S
    runs = []
    for tree in trees:
        gpu = "polled" if tree in GPU_POLLED_ON else "counter"
        penv = dict(env, CCB_T0=repr(t0), CCB_GPU_COUNTER="0" if gpu == "polled" else "1")
        for col in cols:
            if tree not in col.get("trees", (tree,)):
                continue
            for mode in col["modes"]:
                if mode not in ("marks", kind):
                    continue
                n = len(runs)
                spec = {"tool": col["runner"].key, "options": col["options"], "mode": mode,
                        "label": col["label"], "start_at": start_at, "t0": t0, "trace": tree,
                        "gpu": gpu, "out": os.path.join(root, f"{tree}-{n}.json")}
                runs.append((spec, launch(spec, col["runner"].python, os.path.join(root, tree),
                                          penv)))
    log(f"accuracy: {len(runs)} measuring processes ({kind} windows) on {', '.join(trees)}, "
        f"about {LEAD_S + SPAN_S:.0f} s or more")
    results = []
    for spec, proc in runs:
        left = max(10.0, start_at + SPAN_S + TAIL_S + 60 - time.monotonic())
        try:
            _, err = proc.communicate(timeout=left)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        try:
            with open(spec["out"]) as f:
                results.append(json.load(f))
        except (OSError, ValueError):
            results.append({"spec": spec, "windows": [],
                            "error": f"worker exited {proc.returncode}: {err.strip()[-300:]}"})
    driver.wait(timeout=total + 60)
    with open(os.path.join(root, "driver_stats")) as f:
        ticks, seconds, late, realtime = f.read().split()
    shutil.rmtree(root, ignore_errors=True)
    return results, int(ticks) / float(seconds), int(late), realtime == "1"


def main() -> int:
    why_not = can_unshare()
    if why_not:
        print("## Accuracy on known power traces\n")
        print(f"Not run: {why_not}. The peers read the fixed path /sys/class/powercap, so they "
              "cannot be pointed at a fake tree without a private mount namespace.")
        return 0
    found, missing = peers.runners()
    cols = columns(found)
    fake = os.path.join(HERE, "fake_gpu")
    env = dict(os.environ, PYTHONPATH=fake + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PATH=os.path.join(fake, "bin") + os.pathsep + os.environ.get("PATH", ""))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    results, drivers = [], []
    for kind, trees in PHASES:
        res, rate, late, realtime = run_phase(cols, kind, trees, env)
        results += res
        drivers.append((rate, late, realtime))
    raw = os.path.join(tempfile.gettempdir(), "ccb_accuracy_raw.json")
    with open(raw, "w") as f:
        json.dump(results, f)
    log(f"accuracy: raw windows in {raw}")
    print(accuracy_report.render(results, cols, drivers, peers.versions_line(found, missing)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
