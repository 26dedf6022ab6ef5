"""Per-epoch energy and CO2e bookkeeping shared by every training-loop adapter.

``EpochTracker`` is the one place where a training run becomes ``EpochRecord``s: it cuts the
meter's readings into contiguous epoch windows (so the epochs add up to the run, evaluation and
the gaps between epochs included), measures evaluation separately, turns energy into CO2e with
the resolved intensity, keeps the running totals, asks the stopping policy, writes each record to
the ledger as the epoch ends, reports to an Optuna trial, and saves/restores its totals for
resumed runs. It knows no ML framework: the Lightning, Keras and transformers callbacks only call
its hooks at their framework's events and log ``log_dict()`` through their own channel.

It never raises into training once constructed: a meter, intensity, ledger, trial or policy
failure logs one warning per cause and the epoch is recorded with what is known.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from carbon_callbacks.energy.meter import EnergyMeter

# The meter, ledger and intensity modules are imported here, with the adapter, not in the
# training loop's first hook: `import carbon_callbacks` alone stays light (it loads none of
# them), and an adapter's hooks do only per-fit work.
from carbon_callbacks.intensity import check_pue, emissions, resolve
from carbon_callbacks.ledger import Ledger
from carbon_callbacks.policies import CONTINUE, Decision
from carbon_callbacks.records import (
    JOULES_PER_KWH,
    ComponentEnergy,
    EpochRecord,
    Reading,
    RunSummary,
    Window,
)

logger = logging.getLogger(__name__)

EVAL_ENERGY_KEY = "eval_energy_kwh"
"""Logged next to DESIGN.md's keys: the share of the epoch's energy spent in evaluation."""

LOG_KEYS: tuple[str, ...] = (*EpochRecord.LOG_KEYS, EVAL_ENERGY_KEY)
"""Every key an adapter logs per epoch (before the prefix)."""

STATE_VERSION = 1

Reducer = Callable[[Sequence[float]], Sequence[float]]
"""Sums a vector of per-process quantities across processes (DDP); same length back."""

# Per-process quantities that add across ranks, in the order a ``Reducer`` receives them.
_ADDITIVE = (
    "joules",
    "low",
    "high",
    "cpu",
    "gpu",
    "ram",
    "co2_g",
    "co2_low",
    "co2_high",
    "eval_joules",
)


def _scalar(value: Any) -> float | None:
    """A plain float from a number or a one-element tensor/array; None for anything else."""
    if isinstance(value, (bool, int, float)):
        return float(value)
    numel = getattr(value, "numel", None)  # torch tensors
    size = numel() if callable(numel) else getattr(value, "size", 1)  # numpy arrays
    if size != 1:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def scalar_metrics(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    """The finite scalar entries of a framework's metrics mapping, as floats."""
    out: dict[str, float] = {}
    for name, value in (metrics or {}).items():
        number = _scalar(value)
        if number is not None and math.isfinite(number):
            out[str(name)] = number
    return out


def find_caller_instance(kind: type, max_depth: int = 16) -> Any | None:
    """The nearest ``self`` of type ``kind`` up the call stack, or None.

    Adapters use it once per fit to reach the framework object that called them (Keras'
    ``CallbackList``, transformers' ``Trainer``), which neither framework hands to a callback,
    so that our keys can reach the loggers that run in the same event.
    """
    frame = sys._getframe(1)
    for _ in range(max_depth):
        if frame is None:
            return None
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, kind):
            return candidate
        frame = frame.f_back
    return None


def _open_ledger(ledger: Any) -> tuple[Any, bool]:
    """The ``ledger=`` argument as a Ledger object and whether we opened (and must close) it."""
    if ledger is False:
        return None, False
    if ledger is None or isinstance(ledger, (str, os.PathLike)):
        return Ledger.open(ledger), True
    return ledger, False


class EpochTracker:
    """Turns a training run into per-epoch energy/CO2e records, totals and stop decisions.

    Call ``fit_start()`` once, then per epoch ``epoch_start()``, optionally
    ``eval_start()``/``eval_end()`` around evaluation, ``epoch_end()`` (which returns the
    record) and ``decide()``; ``fit_end()`` at the end. Each epoch's window runs from the
    previous epoch's end (or fit start) to this epoch's end, so the epochs' energies add up to
    the whole run, sanity checks, evaluation and data loading included.

    Args:
        intensity: Carbon intensity: None (environment, else world average with a warning), a
            number in gCO2e/kWh, a country/zone/cloud-region code such as ``"FR"`` or
            ``"gcp:europe-west1"``, or an ``IntensitySource``.
        policy: A stopping rule with ``decide(records) -> Decision`` (see
            ``carbon_callbacks.policies``), or None to never stop.
        monitor: The metric to record with each epoch's energy (e.g. ``"val_accuracy"``); a
            warning at the first epoch names the metrics that exist if it is never logged.
        prefix: Prepended to every logged key (``"carbon/"`` gives ``carbon/co2_g``).
        pue: Data-centre power usage effectiveness applied to CO2e (1.0: measured energy only).
        meter: An ``EnergyMeter`` (or any object with ``start/stop/mark/window/running``);
            None builds a process-scope ``EnergyMeter`` at ``fit_start``.
        ledger: None for the default ledger (``$CARBON_CALLBACKS_LEDGER`` or the per-user
            file), a path or database URL, a ``Ledger``, or False for no ledger.
        framework: Recorded in the ledger (``"lightning"``, ``"keras"``...).
        trial: An Optuna trial to report cumulative CO2e (and the monitored metric) to, and to
            ask whether it should be pruned.
        metadata: Extra run metadata for the ledger (project, team, hyperparameters...).

    Raises:
        TypeError: An argument of the wrong kind (the message names it).
        ValueError: An unknown intensity code, a PUE outside 1-5, an empty monitor.

    Example::

        tracker = EpochTracker(intensity="FR", policy=CarbonBudget(max_co2_g=50))
        tracker.fit_start({"framework": "mine"})
        for epoch in range(10):
            tracker.epoch_start(epoch)
            train_one_epoch()
            tracker.eval_start(); acc = evaluate(); tracker.eval_end()
            record = tracker.epoch_end(epoch, {"val_accuracy": acc})
            my_logger.log(tracker.log_dict())
            if tracker.decide().stop:
                break
        summary = tracker.fit_end()
    """

    def __init__(
        self,
        *,
        intensity: Any = None,
        policy: Any = None,
        monitor: str | None = None,
        prefix: str = "",
        pue: float = 1.0,
        meter: Any = None,
        ledger: Any = None,
        framework: str = "",
        trial: Any = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a string such as 'carbon/', got {prefix!r}")
        if monitor is not None and (not isinstance(monitor, str) or not monitor.strip()):
            raise ValueError(
                f"monitor must be the name of a logged metric such as 'val_accuracy', "
                f"or None; got {monitor!r}"
            )
        if policy is not None and not callable(getattr(policy, "decide", None)):
            raise TypeError(
                "policy must have a decide(records) -> Decision method (see "
                f"carbon_callbacks.policies, e.g. CarbonBudget), got {type(policy).__name__}"
            )
        if meter is not None and not all(
            callable(getattr(meter, name, None)) for name in ("start", "mark", "window")
        ):
            raise TypeError(
                "meter must be an EnergyMeter (an object with start(), mark() and "
                f"window(a, b)), got {type(meter).__name__}"
            )
        if not (
            ledger is None
            or ledger is False
            or isinstance(ledger, (str, os.PathLike))
            or all(callable(getattr(ledger, n, None)) for n in ("start_run", "add_epoch"))
        ):
            raise TypeError(
                "ledger must be None (default ledger), a path or database URL, a Ledger, or "
                f"False (no ledger); got {type(ledger).__name__}"
            )
        if trial is not None and not callable(getattr(trial, "set_user_attr", None)):
            raise TypeError(
                "trial must be an optuna.Trial (the objective's argument), "
                f"got {type(trial).__name__}"
            )
        if metadata is not None and not isinstance(metadata, Mapping):
            raise TypeError(f"metadata must be a mapping, got {type(metadata).__name__}")
        self.pue = check_pue(pue)
        self.source = resolve(intensity)
        self.policy = policy
        self.monitor = monitor
        self.prefix = prefix
        self.framework = framework
        self.trial = trial
        self.metadata: dict[str, Any] = dict(metadata or {})
        self._ledger_arg = ledger
        self._meter = meter
        self._warned: set[str] = set()
        self._records: list[EpochRecord] = []
        self._eval_kwh: list[float] = []
        self._energy_total = 0.0
        self._co2_total = 0.0
        self._local_energy_total = 0.0
        self._active = False
        self._restored = False
        self._resumed_from = ""
        self._reset_fit()

    def _reset_fit(self) -> None:
        self._started_meter = False
        self._start_reading: Reading | None = None
        self._boundary: Reading | None = None
        self._eval_reading: Reading | None = None
        self._eval_joules = 0.0
        self._epoch = -1
        self._ledger: Any = None
        self._owns_ledger = False
        self._run_id = ""
        self._primary = True
        self._monitor_checked = False
        self._stop: Decision | None = None
        self._pruned = False
        self._fit_start_wall = time.time()
        self._last_intensity = (float("nan"), "")
        self._summary: RunSummary | None = None

    # ------------------------------------------------------------------ state

    @property
    def records(self) -> tuple[EpochRecord, ...]:
        """The run's training epoch records so far (summed over processes under DDP)."""
        return tuple(self._records)

    @property
    def energy_kwh_total(self) -> float:
        """kWh since fit start (all processes), resumed runs included."""
        return self._energy_total

    @property
    def co2_g_total(self) -> float:
        """Grams CO2e since fit start (all processes), resumed runs included."""
        return self._co2_total

    @property
    def local_energy_kwh_total(self) -> float:
        """kWh measured by this process alone since fit start (before any cross-rank sum)."""
        return self._local_energy_total

    @property
    def run_id(self) -> str:
        """The ledger run id ("" without a ledger or on non-zero ranks)."""
        return self._run_id

    @property
    def stop_decision(self) -> Decision | None:
        """The decision that stopped the run, or None while it goes on."""
        return self._stop

    @property
    def pruned(self) -> bool:
        """True when the Optuna trial asked to be pruned."""
        return self._pruned

    @property
    def keys(self) -> tuple[str, ...]:
        """The logged key names, prefix included."""
        return tuple(self.prefix + k for k in LOG_KEYS)

    @property
    def monitors(self) -> tuple[str, ...]:
        """Metric names this run depends on: ``monitor`` and the policy's ``monitor``."""
        names = [self.monitor, getattr(self.policy, "monitor", None)]
        return tuple(dict.fromkeys(n for n in names if isinstance(n, str) and n))

    def run_window(self) -> Window | None:
        """This process's energy from fit start to the last epoch end, in one window.

        The per-epoch windows are contiguous, so their energies add up to this one.
        """
        if self._meter is None or self._start_reading is None or self._boundary is None:
            return None
        try:
            return self._meter.window(self._start_reading, self._boundary)
        except Exception as exc:  # noqa: BLE001 - a diagnostic must not fail training
            self._warn("meter", "energy meter failed (%s); the run window is unknown", exc)
            return None

    def state_dict(self) -> dict[str, Any]:
        """Totals, records and the policy's state, JSON-ready, for checkpoints."""
        policy_state: Any = None
        state_fn = getattr(self.policy, "state_dict", None)
        if callable(state_fn):
            try:
                policy_state = state_fn()
                json.dumps(policy_state)
            except Exception as exc:  # noqa: BLE001 - a checkpoint must not fail on our part
                self._warn("policy-state", "policy state not saved (%s)", exc)
                policy_state = None
        return {
            "version": STATE_VERSION,
            "records": [r.to_dict() for r in self._records],
            "eval_kwh": list(self._eval_kwh),
            "energy_kwh_total": self._energy_total,
            "co2_g_total": self._co2_total,
            "local_energy_kwh_total": self._local_energy_total,
            "run_id": self._run_id or self._resumed_from,
            "policy": policy_state,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore totals and records saved by ``state_dict()`` (resume from a checkpoint).

        Works before or after ``fit_start()``: the next epoch continues the totals.

        Raises:
            ValueError: A state written by a newer, incompatible version.
        """
        version = int(state.get("version", 0))
        if version > STATE_VERSION:
            raise ValueError(
                f"checkpoint carbon state has version {version}; this carbon-callbacks reads "
                f"up to {STATE_VERSION}: upgrade carbon-callbacks to resume it"
            )
        self._records = [EpochRecord.from_dict(r) for r in state.get("records", [])]
        self._eval_kwh = [float(x) for x in state.get("eval_kwh", [0.0] * len(self._records))]
        self._energy_total = float(state.get("energy_kwh_total", 0.0))
        self._co2_total = float(state.get("co2_g_total", 0.0))
        self._local_energy_total = float(state.get("local_energy_kwh_total", 0.0))
        self._resumed_from = str(state.get("run_id", ""))
        load_fn = getattr(self.policy, "load_state_dict", None)
        if state.get("policy") is not None and callable(load_fn):
            try:
                load_fn(state["policy"])
            except Exception as exc:  # noqa: BLE001
                self._warn("policy-state", "policy state not restored (%s)", exc)
        self._restored = not self._active

    # ------------------------------------------------------------------ hooks

    def fit_start(self, metadata: Mapping[str, Any] | None = None, *, primary: bool = True) -> None:
        """Start measuring a run (restarts the meter if this tracker owns it).

        Args:
            metadata: Run metadata for the ledger, merged over the constructor's.
            primary: False on non-zero DDP ranks: they measure and reduce but do not write the
                ledger or report to the trial.
        """
        if self._active:
            self.fit_end()
        if not self._restored:
            self._records, self._eval_kwh = [], []
            self._energy_total = self._co2_total = self._local_energy_total = 0.0
            self._resumed_from = ""
            self._reset_policy()
        self._restored = False
        self._reset_fit()
        self._active = True
        self._primary = primary
        self._start_meter()
        if primary:
            self._start_ledger(metadata)

    def _reset_policy(self) -> None:
        """Clear the policy's counts from an earlier run (a second fit(), the next trial).

        A resumed run skips this: its policy state came from the checkpoint.
        """
        reset = getattr(self.policy, "reset", None)
        if callable(reset):
            try:
                reset()
            except Exception as exc:  # noqa: BLE001 - a user policy must not fail training
                self._warn("policy-reset", "stopping policy reset failed (%s)", exc)

    def _start_meter(self) -> None:
        try:
            if self._meter is None:
                self._meter = EnergyMeter()
            if not getattr(self._meter, "running", False):
                self._meter.start()
                self._started_meter = True
        except Exception as exc:  # noqa: BLE001 - training goes on unmeasured
            self._warn("meter", "energy meter could not start (%s); energy is logged as 0", exc)
            return
        self._start_reading = self._boundary = self._mark()

    def _start_ledger(self, metadata: Mapping[str, Any] | None) -> None:
        try:
            self._ledger, self._owns_ledger = _open_ledger(self._ledger_arg)
            if self._ledger is None:
                return
            meta: dict[str, Any] = {"framework": self.framework, **self.metadata}
            meta.update(metadata or {})
            meta.setdefault("intensity_source", str(self.source))
            meta.setdefault("pue", self.pue)
            if self.monitor:
                meta.setdefault("monitor", self.monitor)
            if self.policy is not None:
                meta.setdefault("policy", repr(self.policy))
            if self._resumed_from:
                meta.setdefault("resumed_from", self._resumed_from)
            methods = getattr(self._meter, "methods", None)
            if isinstance(methods, Mapping):
                meta.setdefault("methods", dict(methods))
            describe = getattr(self._meter, "describe", None)
            if callable(describe):
                meta.setdefault("hardware", {"sensors": list(describe())})
            self._run_id = self._ledger.start_run(meta)
        except Exception as exc:  # noqa: BLE001 - the ledger must not take training down
            self._warn("ledger", "ledger unavailable (%s); this run is not recorded", exc)
            self._ledger = None

    def epoch_start(self, epoch: int) -> None:
        """Mark the start of a training epoch (starts the run if ``fit_start`` was missed)."""
        if not self._active:
            self.fit_start()
        self._epoch = epoch

    def eval_start(self) -> None:
        """Mark the start of evaluation; its energy is reported as ``eval_energy_kwh``."""
        if self._active:
            self._eval_reading = self._mark()

    def eval_end(self) -> None:
        """Mark the end of evaluation started by ``eval_start()``."""
        start, self._eval_reading = self._eval_reading, None
        if start is None:
            return
        end = self._mark()
        if end is None:
            return
        try:
            self._eval_joules += self._meter.window(start, end).joules
        except Exception as exc:  # noqa: BLE001
            self._warn("meter", "energy meter failed (%s); evaluation energy unknown", exc)

    def epoch_end(
        self,
        epoch: int,
        metrics: Mapping[str, Any] | None = None,
        *,
        reduce: Reducer | None = None,
    ) -> EpochRecord:
        """Close the epoch's window and return its record (also written to the ledger).

        Args:
            epoch: The epoch index (0-based, as the framework counts).
            metrics: The framework's metrics at this point (tensors are fine); scalars are kept.
            reduce: Under DDP, a function summing a vector of floats across processes; the
                record then holds the sum over all processes (never the average).

        Returns:
            The epoch's record (all processes).
        """
        if not self._active:
            self.fit_start()
        if self._eval_reading is not None:  # evaluation still open: close it at the boundary
            self.eval_end()
        window = self._close_window()
        local = self._local_quantities(window)
        self._local_energy_total += local["joules"] / JOULES_PER_KWH
        summed = local
        if reduce is not None:
            try:
                values = [float(v) for v in reduce([local[k] for k in _ADDITIVE])]
                summed = dict(zip(_ADDITIVE, values, strict=True))
            except Exception as exc:  # noqa: BLE001 - fall back to this process's share
                self._warn("reduce", "summing energy across processes failed (%s)", exc)
        record = self._record(epoch, window, summed, metrics)
        self._records.append(record)
        self._eval_kwh.append(summed["eval_joules"] / JOULES_PER_KWH)
        self._check_monitor(record)
        if self._primary:
            self._write_ledger(record)
            self._report_trial(record)
        return record

    def _mark(self) -> Reading | None:
        if self._meter is None:
            return None
        try:
            return self._meter.mark()
        except Exception as exc:  # noqa: BLE001
            self._warn("meter", "energy meter failed (%s); energy is logged as known so far", exc)
            return None

    def _close_window(self) -> Window:
        now = self._mark()
        if now is not None and self._boundary is not None:
            try:
                window = self._meter.window(self._boundary, now)
                self._boundary = now
                return window
            except Exception as exc:  # noqa: BLE001
                self._warn("meter", "energy meter failed (%s); energy is logged as 0", exc)
        # Nothing measured: an empty window; the boundary stays so the next epoch gets it all.
        start = self._boundary.wall if self._boundary is not None else self._fit_start_wall
        end = time.time()
        reason = "energy meter failed or never started; see the warning above"
        component = ComponentEnergy("cpu", 0.0, 0.0, 0.0, "unavailable", reason)
        return Window(start, end, max(end - start, 0.0), {"cpu": component})

    def _local_quantities(self, window: Window) -> dict[str, float]:
        joules = window.joules
        co2 = co2_low = co2_high = 0.0
        try:
            e = emissions(window, self.source, self.pue)
            co2, co2_low, co2_high = e.g, e.low, e.high
            self._last_intensity = (e.intensity_g_per_kwh, e.provenance)
        except Exception as exc:  # noqa: BLE001 - keep the energy, use the last intensity
            self._warn("intensity", "carbon intensity failed (%s); using the last value", exc)
            g_per_kwh = self._last_intensity[0]
            if math.isfinite(g_per_kwh):
                co2 = co2_low = co2_high = joules / JOULES_PER_KWH * g_per_kwh * self.pue
        return {
            "joules": joules,
            "low": window.low,
            "high": window.high,
            "cpu": window.component_joules("cpu"),
            "gpu": window.component_joules("gpu"),
            "ram": window.component_joules("ram"),
            "co2_g": co2,
            "co2_low": co2_low,
            "co2_high": co2_high,
            "eval_joules": min(self._pop_eval_joules(), joules),
        }

    def _pop_eval_joules(self) -> float:
        joules, self._eval_joules = self._eval_joules, 0.0
        return joules

    def _record(
        self,
        epoch: int,
        window: Window,
        q: Mapping[str, float],
        metrics: Mapping[str, Any] | None,
    ) -> EpochRecord:
        kwh = q["joules"] / JOULES_PER_KWH
        self._energy_total += kwh
        self._co2_total += q["co2_g"]
        own = set(self.keys) | set(LOG_KEYS)
        kept = {k: v for k, v in scalar_metrics(metrics).items() if k not in own}
        g_per_kwh, provenance = self._last_intensity
        return EpochRecord(
            epoch=int(epoch),
            start_wall=window.start_wall,
            end_wall=window.end_wall,
            seconds=window.seconds,
            energy_kwh=kwh,
            energy_kwh_low=q["low"] / JOULES_PER_KWH,
            energy_kwh_high=q["high"] / JOULES_PER_KWH,
            co2_g=q["co2_g"],
            co2_g_low=q["co2_low"],
            co2_g_high=q["co2_high"],
            energy_kwh_total=self._energy_total,
            co2_g_total=self._co2_total,
            power_w=q["joules"] / window.seconds if window.seconds > 0 else 0.0,
            intensity_g_per_kwh=g_per_kwh if math.isfinite(g_per_kwh) else 0.0,
            intensity_source=provenance,
            cpu_energy_kwh=q["cpu"] / JOULES_PER_KWH,
            gpu_energy_kwh=q["gpu"] / JOULES_PER_KWH,
            ram_energy_kwh=q["ram"] / JOULES_PER_KWH,
            methods=window.methods,
            metrics=kept,
            stage="train",
            pue=self.pue,
        )

    def _check_monitor(self, record: EpochRecord) -> None:
        if self._monitor_checked:
            return
        self._monitor_checked = True
        own = set(self.keys) | set(LOG_KEYS)
        for name in self.monitors:
            if name not in record.metrics and name not in own:
                available = ", ".join(sorted(record.metrics)) or "none"
                logger.warning(
                    "monitor %r was not logged by the end of epoch %d; the metrics that exist "
                    "are: %s. Log it, or pass one of these as monitor.",
                    name,
                    record.epoch,
                    available,
                )

    def _write_ledger(self, record: EpochRecord) -> None:
        if self._ledger is None or not self._run_id:
            return
        try:
            self._ledger.add_epoch(self._run_id, record)
        except Exception as exc:  # noqa: BLE001
            self._warn("ledger", "ledger write failed (%s); epochs are not recorded", exc)

    def _report_trial(self, record: EpochRecord) -> None:
        if self.trial is None:
            return
        value = record.metric(self.monitor) if self.monitor else None
        try:
            from carbon_callbacks.integrations.optuna import report_carbon

            report_carbon(
                self.trial,
                record.epoch,
                record.co2_g_total,
                record.energy_kwh_total,
                value=value,
            )
        except Exception as exc:  # noqa: BLE001
            self._warn("trial", "reporting CO2e to the Optuna trial failed (%s)", exc)

    def log_dict(self, record: EpochRecord | None = None) -> dict[str, float]:
        """The keys to log for an epoch (the last one by default), prefix included."""
        if record is None:
            if not self._records:
                return {}
            record = self._records[-1]
        out = record.log_dict(self.prefix)
        position = len(self._records) - 1
        for i, r in enumerate(self._records):
            if r is record:
                position = i
        eval_kwh = self._eval_kwh[position] if 0 <= position < len(self._eval_kwh) else 0.0
        out[self.prefix + EVAL_ENERGY_KEY] = eval_kwh
        return out

    def decide(self) -> Decision:
        """Ask the policy (and the Optuna trial) whether to stop after the last epoch.

        Returns:
            ``Decision(stop=True, reason)`` to stop; the reason is logged once and stored in
            the ledger at ``fit_end``. A pruned trial also sets ``pruned``.
        """
        if self._stop is not None:
            return self._stop
        decision = CONTINUE
        if self.policy is not None and self._records:
            try:
                decision = self.policy.decide(tuple(self._records))
            except Exception as exc:  # noqa: BLE001 - a broken rule must not end training
                self._warn("policy", "stopping policy failed (%s); training goes on", exc)
                decision = CONTINUE
        if not decision.stop and self.trial is not None and self._primary and self._records:
            try:
                from carbon_callbacks.integrations.optuna import should_prune

                if should_prune(self.trial):
                    epoch = self._records[-1].epoch
                    number = getattr(self.trial, "number", "?")
                    decision = Decision(True, f"Optuna pruned trial {number} at epoch {epoch}")
                    self._pruned = True
            except Exception as exc:  # noqa: BLE001
                self._warn("trial-prune", "cannot ask the Optuna trial to prune (%s)", exc)
        if decision.stop:
            self.stopped(decision)
        return decision

    def stopped(self, decision: Decision) -> None:
        """Record that the run stops for ``decision`` (adapters call it for agreed stops)."""
        if self._stop is None:
            self._stop = decision
            logger.info("carbon-callbacks: stopping training: %s", decision.reason)

    def check_pruned(self) -> None:
        """Raise ``optuna.TrialPruned`` if the trial asked to be pruned (call after fit).

        Raises:
            optuna.TrialPruned: The trial was pruned.
        """
        if self._pruned:
            import optuna

            raise optuna.TrialPruned(self._stop.reason if self._stop else "pruned")

    def fit_end(self) -> RunSummary:
        """Finish the run: stop the meter if this tracker started it, close the ledger run.

        Returns:
            The run's summary (totals are the sum of the epochs, resumed epochs included).
        """
        if not self._active:
            if self._summary is None:
                self._summary = self._make_summary()
            return self._summary
        self._active = False
        if self._started_meter:
            try:
                self._meter.stop()
            except Exception as exc:  # noqa: BLE001
                self._warn("meter", "energy meter failed to stop (%s)", exc)
            self._started_meter = False
        if self._ledger is not None and self._run_id:
            stop = self._stop
            try:
                end_run = getattr(self._ledger, "end_run", None)
                if callable(end_run):
                    end_run(
                        self._run_id,
                        stopped_early=stop is not None,
                        stop_reason=stop.reason if stop else "",
                    )
                if self._owns_ledger:
                    self._ledger.close()
            except Exception as exc:  # noqa: BLE001
                self._warn("ledger", "ledger end of run failed (%s)", exc)
        self._summary = self._make_summary()
        return self._summary

    def _make_summary(self) -> RunSummary:
        stop = self._stop
        return RunSummary(
            run_id=self._run_id,
            start_wall=self._records[0].start_wall if self._records else self._fit_start_wall,
            end_wall=self._records[-1].end_wall if self._records else time.time(),
            epochs=tuple(self._records),
            energy_kwh=self._energy_total,
            co2_g=self._co2_total,
            stopped_early=stop is not None,
            stop_reason=stop.reason if stop else "",
            metadata={"framework": self.framework, **self.metadata},
        )

    def warn_once(self, cause: str, message: str, *args: Any) -> None:
        """Log a warning the first time ``cause`` fails in this tracker, and never again.

        Adapters use it for failures that must not end training (a logger refusing our keys).
        """
        self._warn(cause, message, *args)

    def _warn(self, cause: str, message: str, *args: Any) -> None:
        if cause in self._warned:
            return
        self._warned.add(cause)
        logger.warning("carbon-callbacks: " + message, *args)
