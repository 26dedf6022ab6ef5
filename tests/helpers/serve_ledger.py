"""A small team ledger and an Optuna study for the serve tests, and the app served on 127.0.0.1
in a thread."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from carbon_callbacks.ledger import Ledger
from tests.helpers.ledger_records import make_record

HOSTILE_NAME = "<script>alert('run')</script>"
HOSTILE_METRIC = "<img src=x onerror=alert('metric')>"
HOSTILE_TAG = "<b>bold</b>"
START = 1_700_000_000.0  # 2023-11-14 UTC


def fill_team_ledger(path: Path | str, runs: int = 12) -> dict[str, str]:
    """Runs over three months, two teams, three projects and users, every ending.

    Every fourth run stops early (with a shoulder in its reason), one never ends, the rest
    complete; Lightning-style metadata records ``max_epochs`` so savings are known. Run 3 has a
    name, a metric and a tag value that are HTML.

    Returns:
        Run ids by role: ``hostile``, ``stopped``, ``completed``, ``running``.
    """
    ledger = Ledger.open(path)
    roles: dict[str, str] = {}
    for i in range(runs):
        start = START + i * 6 * 86400.0
        meta = {
            "project": ("digits", "vision", "speech")[i % 3],
            "team": ("ml", "nlp")[i % 2],
            "user": f"user{i % 3}",
            "framework": ("lightning", "keras")[i % 2],
            "start_wall": start,
            "variant": HOSTILE_TAG if i == 3 else ("baseline", "aware")[i % 2],
            "monitor": "val_acc",
            "max_epochs": 12,
            "name": HOSTILE_NAME if i == 3 else f"run {i}",
            "intensity_source": "fixed 400 g/kWh (test)",
            "methods": {"cpu": "model", "ram": "model"},
        }
        run_id = ledger.start_run(meta)
        stopped = i % 4 == 3
        n = 6 + i % 4 if stopped else 12
        kwh_total = co2_total = 0.0
        for e in range(n):
            # Half-hour epochs, so a run spans several hours of the intensity chart.
            rec = make_record(
                e, energy_kwh=0.001 * (1 + (i % 5)), start=start, seconds=1800.0,
                metric=0.9 * (1 - math.exp(-(e + 1) / 3.0)) + 0.005 * (i % 3),
            )  # fmt: skip
            kwh_total += rec.energy_kwh
            co2_total += rec.co2_g
            rec = dataclasses.replace(rec, energy_kwh_total=kwh_total, co2_g_total=co2_total)
            if i == 3:
                rec = dataclasses.replace(rec, metrics={**rec.metrics, HOSTILE_METRIC: 0.1 * e})
            ledger.add_epoch(run_id, rec)
        if i == runs - 1:
            roles["running"] = run_id  # never ended: running, or killed
        elif stopped:
            reason = f"gain fell; shoulder at epoch {n - 3}"
            ledger.end_run(run_id, stopped_early=True, stop_reason=reason)
            roles.setdefault("stopped", run_id)
        else:
            ledger.end_run(run_id)
            roles.setdefault("completed", run_id)
        if i == 3:
            roles["hostile"] = run_id
    ledger.close()
    return roles


@contextlib.contextmanager
def served(app: object) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 at a free port in a thread; yields its base URL."""
    from carbon_callbacks.serve.server import bind, make_server, url_of

    sock = bind("127.0.0.1", 0)
    server = make_server(app, sock)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def make_study(path: Path) -> str:
    """A 10-trial study whose trials report CO2e per step; trials 3, 6 and 9 are pruned."""
    import optuna

    from carbon_callbacks.integrations.optuna import report_carbon

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name="width-search", direction="maximize", storage=f"sqlite:///{path}"
    )

    def objective(trial: optuna.Trial) -> float:
        width = trial.suggest_int("width", 8, 256, log=True)
        per_step = 0.01 * width  # bigger models cost more per step
        value = 0.0
        for step in range(10):
            value = 0.95 * (1 - math.exp(-(step + 1) * math.log(width) / 20))
            report_carbon(trial, step, per_step * (step + 1), per_step * (step + 1) / 400, value)
            if trial.number % 3 == 0 and trial.number and step == 3:
                raise optuna.TrialPruned()
        return value

    study.optimize(objective, n_trials=10)
    return "width-search"

