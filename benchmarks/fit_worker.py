"""Small Lightning fits in a fresh process, with or without a tracker (run by bench_overhead.py).

Usage: ``python fit_worker.py TOOL OUT ROUND [OPTIONS_JSON]`` under the tool's own interpreter,
with TOOL a key of ``tools.TOOLS``: a cold no-tracker fit, then ``PAIRS`` pairs of a
no-tracker fit and a fit with the tool, each pair in an order drawn from ROUND. Ours is our
``CarbonCallback(intensity="FR")`` with its defaults, ledger included; a peer is driven as its
documentation shows (``tools.py``): built and started before the trainer, stopped after
``fit()``, with carbontracker's ``epoch_start()``/``epoch_end()`` in the epoch hooks. The
timed span runs from building the tracker or callback to its stop, so each tool's whole cost
to a job, once imported, is inside it; the tool's import is timed apart. OUT gets a JSON list
with one result per fit.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import tempfile
import threading
import time
import warnings

EPOCHS = 10
SAMPLES = 25600
BATCH = 64
PAIRS = 2
"""Pairs of (no tracker, tool) fits per process, after its cold no-tracker fit."""


def timed(callback: object, into: dict[str, list[float]]) -> None:
    """Time every Lightning hook our callback defines, in the training thread (per call)."""
    for name in dir(type(callback)):
        if not name.startswith(("on_", "setup", "teardown", "state_dict", "load_state_dict")):
            continue
        owner = next((k for k in type(callback).__mro__ if name in vars(k)), None)
        if owner is None or not owner.__module__.startswith("carbon_callbacks"):
            continue
        method = getattr(callback, name)
        if not callable(method):  # a hook set to None: Lightning skips it
            continue

        def wrapper(*args, _method=method, _name=name, **kwargs):
            t = time.perf_counter()
            try:
                return _method(*args, **kwargs)
            finally:
                into.setdefault(_name, []).append(time.perf_counter() - t)

        setattr(callback, name, wrapper)


def thread_cpu_s(prefix: str) -> float:
    """CPU-seconds used so far by this process's threads whose name starts with ``prefix``.

    Read from /proc/self/task/<tid>/schedstat (nanoseconds), else /proc/.../stat (clock ticks).
    """
    total = 0.0
    for thread in threading.enumerate():
        if not thread.name.startswith(prefix) or thread.native_id is None:
            continue
        task = f"/proc/self/task/{thread.native_id}"
        try:
            with open(f"{task}/schedstat") as f:
                total += int(f.read().split()[0]) / 1e9
                continue
        except (OSError, ValueError, IndexError):
            pass
        try:
            with open(f"{task}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            pass
    return total


def main() -> int:
    key, out = sys.argv[1], sys.argv[2]
    order_seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    options = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    tmp = tempfile.mkdtemp(prefix="ccb_fit_")
    os.environ["CARBON_CALLBACKS_LEDGER"] = os.path.join(tmp, "ledger.sqlite")
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.ERROR)
    for name in ("lightning", "lightning.pytorch", "codecarbon", "carbon_callbacks"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import lightning as L
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    import tools

    t = time.perf_counter()
    if key == "ours":
        from carbon_callbacks.integrations.lightning import CarbonCallback
    else:
        tool = tools.get(key, **options)
        tool.load()
    import_s = time.perf_counter() - t

    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.randn(SAMPLES, 32)
    y = x[:, :1] * 0.5 + 0.1 * torch.randn(SAMPLES, 1)
    train = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True)
    val = DataLoader(TensorDataset(x[:512], y[:512]), batch_size=256)

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 1))

        def training_step(self, batch, _):
            loss = nn.functional.mse_loss(self.net(batch[0]), batch[1])
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, _):
            self.log("val_loss", nn.functional.mse_loss(self.net(batch[0]), batch[1]))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    def fit(kind: str) -> dict:
        torch.manual_seed(1)  # the same weights and batch order in every fit
        model = Tiny()
        hook_s: dict[str, list[float]] = {}
        sampler: dict[str, float] = {}
        t0 = time.perf_counter()
        callbacks: list = []
        started = None
        if kind == "tool" and key == "ours":
            callback = CarbonCallback(intensity="FR")
            hook_s["__init__"] = [time.perf_counter() - t0]
            timed(callback, hook_s)
            # The meter thread's CPU time, read just before on_fit_end stops it (outside the
            # hook's timing). Not a callback of its own: Lightning would call an extra
            # callback's hooks at every batch, which costs more than what it measures.
            timed_fit_end = callback.on_fit_end

            def on_fit_end(trainer, pl_module):
                sampler["cpu_s"] = thread_cpu_s("carbon-callbacks-meter-")
                return timed_fit_end(trainer, pl_module)

            callback.on_fit_end = on_fit_end
            callbacks.append(callback)
        elif kind == "tool":
            if key == "carbontracker":
                tool.options.update(spans=EPOCHS, exact=True)
            tool.make()
            callbacks += tool.fit_callbacks()
            if key != "carbontracker":
                tool.begin()
                started = True
        trainer = L.Trainer(max_epochs=EPOCHS, accelerator="cpu", devices=1, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, callbacks=callbacks)
        t_fit = time.perf_counter()
        trainer.fit(model, train, val)
        fit_s = time.perf_counter() - t_fit
        described = ""
        if kind == "tool" and key != "ours":
            if started:
                tool.end()
            described = tool.describe()
            tool.close()
        total_s = time.perf_counter() - t0
        logged = sorted(k for k in trainer.callback_metrics if "energy" in k or "co2" in k)
        return {"config": kind, "total_s": total_s, "fit_s": fit_s, "logged": logged,
                "epochs": trainer.current_epoch, "hook_s": hook_s,
                "sampler_cpu_s": sampler.get("cpu_s"), "described": described}

    # A first no-tracker fit, cold as every fresh-process fit is; then PAIRS pairs of a
    # no-tracker fit and one with the tool, each pair in an order drawn from ROUND, in this
    # now warm process: a pair differs only by the tool.
    results = [fit("none")]
    rng = random.Random(order_seed)
    for i in range(PAIRS):
        kinds = ["none", "tool"]
        rng.shuffle(kinds)
        for kind in kinds:
            r = fit(kind)
            r["config"] = "none_warm" if kind == "none" else "tool"
            r["pair"] = i
            results.append(r)
    for r in results:
        r["import_s"] = import_s
    with open(out, "w") as f:
        json.dump(results, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
