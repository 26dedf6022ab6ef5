"""Fallback sanity on a machine with no energy counters: what each tool reports under load.

One process per load level (idle, 1 thread, 2 threads of torch matmul), both tools watching
the same windows (fallback_worker.py). Prints a markdown section.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from figures import HERE, PYTHON, REPO, headline, log, spread, table  # noqa: E402

SECONDS = 5.0
REPS = 3
LEVELS = (0, 1, 2)


def main() -> int:
    out = ["## Fallback sanity (no counters on this machine)", ""]
    rows, notes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for threads in LEVELS:
            path = os.path.join(tmp, f"{threads}.json")
            proc = subprocess.run([PYTHON, os.path.join(HERE, "fallback_worker.py"), str(threads),
                                   str(SECONDS), str(REPS), path], cwd=REPO, capture_output=True,
                                  text=True, timeout=300)
            log(f"fallback: {threads} thread(s) done")
            try:
                with open(path) as f:
                    res = json.load(f)
            except (OSError, ValueError):
                notes.append(f"- {threads} thread(s) failed: {proc.stderr.strip()[-300:]}")
                continue
            reps, describe = res, res[0]["ours_describe"]

            def col(key: str, reps: list = reps) -> str:
                return spread([r[key] for r in reps], "{:.2f}", " W")

            rows.append([
                "idle" if threads == 0 else f"{threads} thread(s)",
                spread([r["cores_used"] for r in reps], "{:.2f}"),
                col("ours_process_cpu_w") + " [range " + spread(
                    [r["ours_process_range"][0] for r in reps], "{:.2f}") + " to " + spread(
                    [r["ours_process_range"][1] for r in reps], "{:.2f}") + " W]",
                col("ours_machine_cpu_w"), col("cc_cpu_w"),
                col("ours_process_ram_w"), col("ours_machine_ram_w"), col("cc_ram_w"),
            ])
            if threads == LEVELS[-1]:
                notes.append(f"- ours, method per component: {reps[0]['ours_methods']}")
                notes += [f"- ours: {line}" for line in describe]
                notes.append(f"- CodeCarbon: {reps[0]['cc_mode']}")
    if rows:
        headline("No counters (this machine), CPU watts for " + " / ".join(
            f"{r[0]} ({r[1].split(' ')[0]} cores busy)" for r in rows) + ": ours " + " / ".join(
            r[2].split(" (")[0] for r in rows) + " (load x TDP model, process scope); "
            "CodeCarbon " + " / ".join(r[4].split(" (")[0] for r in rows) +
            " (its load x TDP model, whole machine).")
    out.append(f"Torch float32 matmul on N threads for {SECONDS:.0f} s inside the measuring "
               f"process, {REPS} windows per level; both tools started and stopped around the "
               "same window. `cores used` is this process's CPU time / wall time (the machine "
               "has 2 logical CPUs, shared with other work while this ran). Ours `process` is "
               "the default scope (this process tree's share), `machine` the whole machine; "
               "CodeCarbon's figures are for the whole machine. Watts are joules / seconds of "
               "each window.")
    out.append("")
    out.append(table(["load", "cores used", "ours CPU W (process)", "ours CPU W (machine)",
                      "CodeCarbon CPU W", "ours RAM W (process)", "ours RAM W (machine)",
                      "CodeCarbon RAM W"], rows))
    out.append("")
    out += notes
    print("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
