"""The ledger's costs that could grow with a run, and what a write costs the training loop.

1. ``carbon-callbacks show`` of a 200,000-epoch run, streamed, against the way it worked before
   (every record read into a list, every cell built, the whole text rendered, then printed:
   ``Ledger.epochs()`` + ``render(epochs_rows(...))``), each in a fresh interpreter with its
   output thrown away; wall time, CPU time and peak RSS from ``wait4``.
2. ``Ledger.add_epoch`` on a healthy SQLite ledger (the commit, the file check and the
   read-back) against the bare durable commit it wraps (one ``INSERT`` and ``COMMIT`` through
   ``sqlite3`` with the same WAL and ``synchronous=FULL``), in one process, alternating.

Prints a markdown section.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from figures import PYTHON, REPO, headline, log, spread, table  # noqa: E402

EPOCHS = 200_000
ROUNDS = 3
WRITES = 1000

# What `show` did before it streamed (carbon_callbacks/cli/commands.py, cmd_show).
BEFORE = """
import sys
from carbon_callbacks.ledger import Ledger
from carbon_callbacks.reports import epochs_rows, render, run_summary_text
ledger = Ledger.open(sys.argv[1])
run = ledger.run(sys.argv[2])
records = ledger.epochs(run.run_id)
if sys.argv[3] == "table":
    print(run_summary_text(run))
    print()
text = render(*epochs_rows(records, run.metadata.get("monitor")), sys.argv[3])
print(text, end="" if text.endswith("\\n") else "\\n")
"""


def _record(i: int):  # noqa: ANN202 - an EpochRecord; imported late, after the path is set
    from carbon_callbacks.records import EpochRecord

    kwh = 1e-3 * (1.0 + 0.1 * (i % 7))
    return EpochRecord.build(
        epoch=i,
        start_wall=1.7e9 + 10.0 * i,
        end_wall=1.7e9 + 10.0 * (i + 1),
        energy_kwh=kwh,
        energy_kwh_low=kwh * 0.9,
        energy_kwh_high=kwh * 1.1,
        co2_g=kwh * 300.0,
        energy_kwh_total=kwh * (i + 1),
        co2_g_total=kwh * 300.0 * (i + 1),
        intensity_source="fixed 300 g/kWh",
        cpu_energy_kwh=kwh * 0.7,
        ram_energy_kwh=kwh * 0.3,
        methods={"cpu": "model", "ram": "model"},
        metrics={"val_acc": 0.5 + 0.4 * i / EPOCHS, "train_loss": 1.0 / (1 + i)},
    )


def build(path: str) -> None:
    from carbon_callbacks.ledger import Ledger

    ledger = Ledger.open(path)
    meta = {"run_id": "long-run", "project": "bench", "monitor": "val_acc"}
    ledger.import_runs([(meta, [_record(i) for i in range(EPOCHS)])])
    ledger.close()


def measure(cmd: list[str]) -> dict[str, float]:
    """Wall seconds, CPU seconds and peak RSS (MB) of one fresh process, output discarded."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        assert proc.stderr is not None
        raise RuntimeError(f"{cmd} failed: {proc.stderr.read().decode()[-500:]}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss": usage.ru_maxrss / 1024}


def show_rounds(path: str, run_id: str) -> dict[str, dict[str, list[dict[str, float]]]]:
    out: dict[str, dict[str, list[dict[str, float]]]] = {}
    for fmt in ("table", "csv"):
        out[fmt] = {"before": [], "streamed": []}
        for i in range(ROUNDS):
            order = ("before", "streamed") if i % 2 == 0 else ("streamed", "before")
            for tool in order:
                if tool == "before":
                    cmd = [PYTHON, "-c", BEFORE, path, run_id, fmt]
                else:
                    cmd = [PYTHON, "-m", "carbon_callbacks", "show", run_id, "--ledger", path,
                           "--format", fmt]
                out[fmt][tool].append(measure(cmd))
            log(f"ledger: show --format {fmt}, round {i + 1}/{ROUNDS}")
    return out


def write_costs(folder: str) -> tuple[list[float], list[float]]:
    """Microseconds per ``add_epoch`` and per bare durable commit, alternating."""
    from carbon_callbacks.ledger import Ledger, schema

    ledger = Ledger.open(os.path.join(folder, "ours.sqlite"))
    run_id = ledger.start_run({"project": "bench"})
    bare = sqlite3.connect(os.path.join(folder, "bare.sqlite"), isolation_level=None)
    bare.execute("PRAGMA journal_mode=WAL")
    bare.execute("PRAGMA synchronous=FULL")
    for statement in schema.MIGRATIONS[1]:
        bare.execute(statement)
    ours, plain = [], []
    for i in range(WRITES):
        record = _record(i)
        t = time.perf_counter()
        ledger.add_epoch(run_id, record)
        ours.append((time.perf_counter() - t) * 1e6)
        op = schema.epoch_op(run_id, record, uid=None, position=i)
        t = time.perf_counter()
        bare.execute("BEGIN IMMEDIATE")
        bare.execute(schema.INSERT["epochs"], schema.row_values(op))
        bare.execute("COMMIT")
        plain.append((time.perf_counter() - t) * 1e6)
    assert ledger.spooled() == 0 and len(ledger.epochs(run_id)) == WRITES
    ledger.close()
    bare.close()
    return ours, plain


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "long.sqlite")
        t = time.perf_counter()
        # Built in a process of its own: a child's peak RSS counts its parent's memory at the
        # fork, so this process stays small while it measures the others.
        subprocess.run([PYTHON, os.path.abspath(__file__), "--build", path], check=True)
        run_id = "long-run"
        log(f"ledger: built a {EPOCHS:,}-epoch run in {time.perf_counter() - t:.0f} s")
        rounds = show_rounds(path, run_id)
    # In memory where there is a tmpfs: an fsync costs next to nothing there, so the figure
    # is our own work, not the disk's (which varies by milliseconds from one commit to the next).
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=shm) as tmp:
        ours, plain = write_costs(tmp)
        on = "tmpfs" if shm else "disk"

    out = ["## Ledger: `show` of a long run, and the cost of a write", ""]
    out.append(
        f"`carbon-callbacks show` of one {EPOCHS:,}-epoch run (SQLite), each run in a fresh "
        "interpreter with its output discarded, the two ways interleaved, "
        f"{ROUNDS} rounds per format. *Before*: every record read into a list and the whole "
        "text rendered before printing (`Ledger.epochs()` + `render(epochs_rows(...))`, what "
        "`show` did). *Streamed*: records read from the cursor and printed as they come "
        "(`Ledger.iter_epochs()`, at most 1,000 held). Ratios are before / streamed, within "
        "each round. Peak RSS is the whole process (interpreter and imports included)."
    )
    out.append("")
    rows = []
    for fmt, by_tool in rounds.items():
        before, streamed = by_tool["before"], by_tool["streamed"]
        pairs = list(zip(before, streamed, strict=True))
        for key, label, fmt_s, unit in (
            ("wall", "wall time", "{:.1f}", " s"),
            ("cpu", "CPU time", "{:.1f}", " s"),
            ("rss", "peak RSS", "{:.0f}", " MB"),
        ):
            rows.append([
                f"`--format {fmt}`, {label}",
                spread([r[key] for r in before], fmt_s, unit),
                spread([r[key] for r in streamed], fmt_s, unit),
                spread([b[key] / s[key] for b, s in pairs], "{:.2f}", "x"),
            ])
    out.append(table(["figure", "before", "streamed", "ratio"], rows))
    out.append("")
    ratio = [o / p for o, p in zip(ours, plain, strict=True)]
    out.append(
        f"`Ledger.add_epoch` on a healthy SQLite ledger on {on}, {WRITES} epochs in one "
        "process, each followed by the bare durable commit it wraps (the same row: "
        "`BEGIN IMMEDIATE`, `INSERT`, `COMMIT`, WAL, `synchronous=FULL`): "
        f"**{statistics.median(ours):.0f} us** per epoch against {statistics.median(plain):.0f} "
        f"us bare (ratio of each pair: {spread(ratio, '{:.2f}', 'x')}). The difference is building "
        "the row, the check that the file is still the one written (two `stat`s and a 100-byte "
        "read) and the read-back of the row through the writer's own read-only connection; on "
        "a disk, the commit's fsync (milliseconds) comes on top of both."
    )
    table_rounds = list(zip(rounds["table"]["before"], rounds["table"]["streamed"], strict=True))
    headline(
        f"`show` of a {EPOCHS:,}-epoch run: peak RSS "
        f"{statistics.median([s['rss'] for _, s in table_rounds]):.0f} MB streamed vs "
        f"{statistics.median([b['rss'] for b, _ in table_rounds]):.0f} MB before "
        f"({statistics.median([b['rss'] / s['rss'] for b, s in table_rounds]):.1f}x less), "
        f"CPU {statistics.median([b['cpu'] / s['cpu'] for b, s in table_rounds]):.2f}x "
        "(table format)"
    )
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--build"]:
        build(sys.argv[2])
        raise SystemExit(0)
    raise SystemExit(main())
