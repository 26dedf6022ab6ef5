"""Optuna pruners on a 20-trial search, replayed on configurations trained to max_epochs once.

Protocol. For each sampler seed, a ``RandomSampler(seed)`` proposes 20 configurations of the
tabular MLP task (hidden units, learning rate, weight decay, batch size); each is trained once to
``max_epochs`` with Lightning and our CarbonCallback. Each pruner then runs the same 20-trial
study on those logged curves: at every epoch the trial reports its CO2e and ``val_acc``
(``report_carbon``) and asks ``should_prune``; a pruned trial spends only the epochs it ran.
RandomSampler's proposals do not depend on pruning (checked: the same parameters in every
replay), so every pruner sees the same configurations. A completed trial's value is its best
``val_acc`` (the ModelCheckpoint a user keeps); the study's best trial is scored by the test
accuracy of that checkpoint.

Usage: ``python benchmarks/bench_pruning.py [--seeds N] [--trials N] [--cache DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from figures import headline, log, table  # noqa: E402
from stopping_tasks import MONITOR, TASKS, Config, fit_task  # noqa: E402

from carbon_callbacks.records import EpochRecord  # noqa: E402

TASK = "tabular_mlp"
MAX_EPOCHS = 30
TARGET_SAVED, TARGET_BEST = 0.30, -0.3
MATCHED = "MedianPruner(n_warmup_steps=5)"
OURS = "CarbonPruner(MedianPruner(n_warmup_steps=5), forecast + equal CO2e)"
"""The documented configuration; every CarbonPruner row has n_warmup_steps=5 (matched)."""


def suggest(trial: Any) -> Config:
    return Config(
        hidden=trial.suggest_int("hidden", 8, 128, log=True),
        lr=trial.suggest_float("lr", 1e-4, 3e-2, log=True),
        weight_decay=trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
        batch_size=trial.suggest_categorical("batch_size", [16, 32, 64]),
    )


def pruners(optuna: Any) -> dict[str, Callable[[], Any]]:
    from carbon_callbacks.integrations.optuna import CarbonPruner

    median, warm = optuna.pruners.MedianPruner, 5
    halving = optuna.pruners.SuccessiveHalvingPruner

    def carbon(base: Any = None, **kwargs: Any) -> Callable[[], Any]:
        return lambda: CarbonPruner(
            base() if base else None, n_warmup_steps=warm, max_steps=MAX_EPOCHS, **kwargs
        )

    def median_warm() -> Any:
        return median(n_warmup_steps=warm)

    return {
        "NopPruner": optuna.pruners.NopPruner,
        "MedianPruner()": median,
        MATCHED: median_warm,
        "SuccessiveHalvingPruner()": halving,
        "CarbonPruner(forecast only)": carbon(equal_co2=False),
        "CarbonPruner(forecast only, noise-blind: noise_sds=0)": carbon(
            equal_co2=False, noise_sds=0.0
        ),
        "CarbonPruner(equal CO2e only)": lambda: CarbonPruner(n_warmup_steps=warm),
        "CarbonPruner(MedianPruner(n_warmup_steps=5), forecast)": carbon(
            median_warm, equal_co2=False
        ),
        OURS: carbon(median_warm),
        "CarbonPruner(SuccessiveHalvingPruner(), forecast)": carbon(halving, equal_co2=False),
    }


def train_configs(
    seed: int, trials: int, cache: str | None
) -> list[tuple[dict, list[EpochRecord]]]:
    import optuna

    path = os.path.join(cache, f"pruning-{seed}-{trials}.json") if cache else None
    if path and os.path.exists(path):
        with open(path) as f:
            return [(p, [EpochRecord.from_dict(d) for d in rs]) for p, rs in json.load(f)]
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed))
    task = TASKS[TASK]
    data = task.data(0)  # one dataset; the sampler seed varies the configurations
    out = []
    for i in range(trials):
        trial = study.ask()
        config = suggest(trial)
        t = time.perf_counter()
        records, _ = fit_task(task, seed * 1000 + i, config=config, max_epochs=MAX_EPOCHS,
                              data=data)
        log(f"  seed {seed} trial {i}: {config} {time.perf_counter() - t:.1f} s")
        study.tell(trial, max(r.metric(MONITOR) or 0.0 for r in records))
        out.append((dict(trial.params), records))
    if path:
        os.makedirs(cache, exist_ok=True)
        with open(path, "w") as f:
            json.dump([(p, [r.to_dict() for r in rs]) for p, rs in out], f)
    return out


def replay(optuna: Any, seed: int, make_pruner: Callable[[], Any], configs: list) -> dict:
    from carbon_callbacks.integrations.optuna import report_carbon

    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.RandomSampler(seed), pruner=make_pruner()
    )
    energy = seconds = 0.0
    epochs = 0
    outcome = []
    cpu0 = time.process_time()
    for params, records in configs:
        trial = study.ask()
        suggest(trial)
        if trial.params != params:
            raise RuntimeError("the sampler proposed different parameters under this pruner")
        pruned = False
        for r in records:
            value = r.metric(MONITOR)
            report_carbon(trial, r.epoch, r.co2_g_total, r.energy_kwh_total, value=value)
            epochs += 1
            if trial.should_prune():
                pruned = True
                break
        energy += r.energy_kwh_total
        seconds += r.end_wall - records[0].start_wall
        ran = records[: r.epoch + 1]
        if pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, max(x.metric(MONITOR) or 0.0 for x in ran))
        outcome.append((pruned, ran))
    pruner_cpu = time.process_time() - cpu0
    done = [(i, ran) for i, (pruned, ran) in enumerate(outcome) if not pruned]
    best_i, best_ran = max(done, key=lambda x: max(r.metric(MONITOR) or 0.0 for r in x[1]))
    ckpt = max(best_ran, key=lambda r: (r.metric(MONITOR) or 0.0, -r.epoch))
    return {
        "energy": energy,
        "epochs": epochs,
        "train_s": seconds,
        "pruner_cpu_s": pruner_cpu,
        "best": best_i,
        "best_test": ckpt.metric("test_acc"),
        "completed": {i for i, _ in done},
    }


def main(argv: list[str]) -> int:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--cache", default=None)
    args = parser.parse_args(argv)
    began = time.perf_counter()
    configs = {s: train_configs(s, args.trials, args.cache) for s in range(args.seeds)}
    trained_s = time.perf_counter() - began
    results = {name: {s: replay(optuna, s, make, configs[s]) for s in configs}
               for name, make in pruners(optuna).items()}
    nop = results["NopPruner"]
    rows = []
    for name, per_seed in results.items():
        energy = [per_seed[s]["energy"] for s in configs]
        saved_nop = [1 - per_seed[s]["energy"] / nop[s]["energy"] for s in configs]
        kept = sum(nop[s]["best"] in per_seed[s]["completed"] for s in configs)
        rows.append([
            f"`{name}`",
            f"{statistics.fmean(energy) * 1e3:.3g} Wh",
            f"{statistics.fmean(saved_nop):+.0%}",
            f"{statistics.fmean(per_seed[s]['epochs'] for s in configs):.0f}",
            f"{statistics.fmean(per_seed[s]['train_s'] for s in configs):.0f} s",
            f"{statistics.fmean(per_seed[s]['pruner_cpu_s'] for s in configs):.2f} s",
            f"{100 * statistics.fmean(per_seed[s]['best_test'] for s in configs):.2f}%",
            f"{kept}/{len(configs)}",
        ])
    matched = results[MATCHED]
    vs_rows = []
    for name, per_seed in results.items():
        saved_m = [1 - per_seed[s]["energy"] / matched[s]["energy"] for s in configs]
        diff_m = [100 * (per_seed[s]["best_test"] - matched[s]["best_test"]) for s in configs]
        vs_rows.append([
            f"`{name}`",
            f"{statistics.fmean(saved_m):+.0%}",
            f"{statistics.fmean(diff_m):+.2f} (worst seed {min(diff_m):+.2f})",
        ])
    ours = results[OURS]
    saved = statistics.fmean(1 - ours[s]["energy"] / matched[s]["energy"] for s in configs)
    diff = 100 * statistics.fmean(ours[s]["best_test"] - matched[s]["best_test"] for s in configs)
    verdict = "met" if saved >= TARGET_SAVED and diff >= TARGET_BEST else "not met"
    out = [
        "## Optuna pruners (bench_pruning.py)",
        "",
        f"{args.trials}-trial studies on `{TASK}` ({MAX_EPOCHS} epochs max; validation 1000 "
        "samples, test 5000), RandomSampler seeds "
        f"0-{args.seeds - 1}; every configuration trained once to max_epochs with Lightning and "
        "our CarbonCallback, then each pruner replayed causally (RandomSampler's proposals do not "
        "depend on pruning: the same parameters in every replay). Means over seeds. 'train time' "
        "is the training time of the epochs the study ran; 'pruner CPU' the replay loop's own "
        "CPU time (pruner and storage). Best test: test accuracy of the best trial's best-val_acc "
        f"checkpoint. Training the {args.trials * args.seeds} configurations took "
        f"{trained_s:.0f} s.",
        "",
        table(["pruner", "study energy", "vs NopPruner", "epochs", "train time", "pruner CPU",
               "best test", "unpruned best kept"], rows),
        "",
        f"Against the matched `{MATCHED}` (energy saved; best test difference, points, mean "
        "over seeds):",
        "",
        table(["pruner", "energy saved", "best test diff (pt)"], vs_rows),
        "",
        f"Target: {OURS} vs "
        f"MedianPruner(n_warmup_steps=5): >= 30% less study energy at equal best test accuracy "
        f"(within 0.3 pt): **{verdict}** ({saved:+.0%} energy, {diff:+.2f} pt).",
    ]
    headline(
        f"Optuna, {args.trials} trials x {args.seeds} seeds: CarbonPruner (forecast + equal CO2e, "
        f"warm-up 5) vs MedianPruner(n_warmup_steps=5): {saved:.0%} less study energy, best test "
        f"{diff:+.2f} pt (target >= 30% within 0.3 pt: {verdict})."
    )
    print("\n".join(out))
    log(f"bench_pruning: {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
