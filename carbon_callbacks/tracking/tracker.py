"""Per-epoch energy and CO2e bookkeeping shared by every training-loop adapter.

``EpochTracker`` is the one place where a training run becomes ``EpochRecord``s: it cuts the
meter's readings into contiguous epoch windows (so the epochs add up to the run, evaluation and
the gaps between epochs included), measures evaluation separately, turns energy into CO2e with
the resolved intensity, keeps the running totals, asks the stopping policy, writes each record to
the ledger as the epoch ends, reports to a trial sink (an Optuna trial, wrapped by the adapter),
and saves/restores its totals for resumed runs. It knows no ML framework: the Lightning, Keras
and transformers callbacks only call its hooks at their framework's events and log
``log_dict()`` through their own channel.

It never raises into training once constructed: a meter, intensity, ledger, trial or policy
failure logs one warning per cause and the epoch is recorded with what is known.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Collection, Mapping
from typing import Any

# The meter, ledger and intensity modules are imported here, with the adapter, not in the
# training loop's first hook: `import carbon_callbacks` alone stays light (it loads none of
# them), and an adapter's hooks do only per-fit work.
from carbon_callbacks.energy.meter import Meter
from carbon_callbacks.intensity import IntensitySpec, check_pue, resolve
from carbon_callbacks.ledger.location import run_location
from carbon_callbacks.policies import CONTINUE, Decision, Policy
from carbon_callbacks.records import (
    JOULES_PER_KWH,
    EpochRecord,
    Horizon,
    RunSummary,
    Window,
)
from carbon_callbacks.tracking.distributed import Reducer, sum_across_ranks
from carbon_callbacks.tracking.metrics import scalar_metrics
from carbon_callbacks.tracking.monitor_check import MonitorCheck
from carbon_callbacks.tracking.sinks import LedgerSink, LedgerSpec, TrialSink, is_ledger_arg
from carbon_callbacks.tracking.state import RunTotals, epoch_record
from carbon_callbacks.tracking.windows import EpochWindows, WindowCarbon

logger = logging.getLogger(__name__)

EVAL_ENERGY_KEY = "evaluation_energy_kwh"
"""Logged next to the record's own keys: the share of the epoch's energy spent in evaluation.

Not ``eval_...``: transformers' TensorBoard and W&B integrations file every ``eval_`` key under
``eval/`` (``eval/energy_kwh``), as if it were an evaluation metric; this key is part of the
training epoch's energy, so it belongs beside the others (``train/evaluation_energy_kwh``).
"""

LOG_KEYS: tuple[str, ...] = (*EpochRecord.LOG_KEYS, EVAL_ENERGY_KEY)
"""Every key an adapter logs per epoch (before the prefix)."""


def _check_arguments(
    prefix: object,
    monitor: object,
    policy: object,
    meter: object,
    ledger: object,
    trial: object,
    metadata: object,
) -> None:
    """Refuse, at construction, an argument of the wrong kind, naming it."""
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
    if not is_ledger_arg(ledger):
        raise TypeError(
            "ledger must be None (default ledger), a path or database URL, a Ledger, or "
            f"False (no ledger); got {type(ledger).__name__}"
        )
    if trial is not None and not isinstance(trial, TrialSink):
        raise TypeError(
            "trial must be a TrialSink (report, should_prune, raise_pruned); the framework "
            "callbacks wrap an optuna.Trial into one, "
            f"got {type(trial).__name__}"
        )
    if metadata is not None and not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a mapping, got {type(metadata).__name__}")


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
        policy: A stopping rule, any ``Policy`` (``decide(records) -> Decision``; see
            ``carbon_callbacks.policies``), or None to never stop.
        monitor: The metric to record with each epoch's energy (e.g. ``"val_accuracy"``); a
            warning at the first epoch names the metrics that exist if it is never logged.
        prefix: Prepended to every logged key (``"carbon/"`` gives ``carbon/co2_g``).
        pue: Data-centre power usage effectiveness applied to CO2e (1.0: measured energy only).
        meter: A ``Meter`` such as ``EnergyMeter``; None builds a process-scope
            ``EnergyMeter`` at ``fit_start``.
        ledger: None for the default ledger (``$CARBON_CALLBACKS_LEDGER`` or the per-user
            file), a path or database URL, a ``Ledger`` (any ``RunRecorder``), or False for
            no ledger.
        framework: Recorded in the ledger (``"lightning"``, ``"keras"``...).
        trial: A ``TrialSink`` (an Optuna trial as the framework callbacks wrap it) to report
            cumulative CO2e (and the monitored metric) to, and to ask whether to prune.
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
        intensity: IntensitySpec = None,
        policy: Policy | None = None,
        monitor: str | None = None,
        prefix: str = "",
        pue: float = 1.0,
        meter: Meter | None = None,
        ledger: LedgerSpec = None,
        framework: str = "",
        trial: TrialSink | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        _check_arguments(prefix, monitor, policy, meter, ledger, trial, metadata)
        self.pue = check_pue(pue)
        self.source = resolve(intensity)
        self.policy = policy
        self.monitor = monitor
        self.prefix = prefix
        self.framework = framework
        self.trial = trial
        self.metadata: dict[str, Any] = dict(metadata or {})
        self._ledger_arg = ledger
        self._warned: set[str] = set()
        self._windows = EpochWindows(meter, self._warn)
        self._totals = RunTotals()
        self._active = False
        self._restored = False
        self._reset_fit()

    def _reset_fit(self) -> None:
        self._windows.reset()
        self._carbon = WindowCarbon(self.source, self.pue, self._warn)
        self._ledger = LedgerSink(self._ledger_arg, self._warn)
        self._primary = True
        self._monitor_check = MonitorCheck(self.monitors, {*self.keys, *LOG_KEYS})
        self._evaluated = False
        self._epoch = 0
        self._stop: Decision | None = None
        self._pruned = False
        self._summary: RunSummary | None = None

    # ------------------------------------------------------------------ state

    @property
    def records(self) -> tuple[EpochRecord, ...]:
        """The run's training epoch records so far (summed over processes under DDP)."""
        return tuple(self._totals.records)

    @property
    def energy_kwh_total(self) -> float:
        """kWh since fit start (all processes), resumed runs included."""
        return self._totals.energy_kwh

    @property
    def co2_g_total(self) -> float:
        """Grams CO2e since fit start (all processes), resumed runs included."""
        return self._totals.co2_g

    @property
    def local_energy_kwh_total(self) -> float:
        """kWh measured by this process alone since fit start (before any cross-rank sum)."""
        return self._totals.local_energy_kwh

    @property
    def run_id(self) -> str:
        """The ledger run id ("" without a ledger or on non-zero ranks)."""
        return self._ledger.run_id

    @property
    def stop_decision(self) -> Decision | None:
        """The decision that stopped the run, or None while it goes on."""
        return self._stop

    @property
    def pruned(self) -> bool:
        """True when the trial asked to be pruned."""
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
        return self._windows.run_window()

    def state_dict(self) -> dict[str, Any]:
        """Totals and records, JSON-ready, for checkpoints.

        The policies keep no state of their own: they decide from these records, so a resumed
        run decides as an uninterrupted one would.
        """
        return self._totals.to_state(self.run_id)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore totals and records saved by ``state_dict()`` (resume from a checkpoint).

        Works before or after ``fit_start()``: the next epoch continues the totals.

        Raises:
            ValueError: A state written by a newer, incompatible version.
        """
        self._totals.load(state)
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
            self._totals.clear()
        self._restored = False
        self._reset_fit()
        self._active = True
        self._primary = primary
        self._windows.start()
        if primary:
            self._ledger.start(lambda: self._run_metadata(metadata))

    def _run_metadata(self, metadata: Mapping[str, Any] | None) -> dict[str, Any]:
        meta: dict[str, Any] = {"framework": self.framework, **self.metadata}
        meta.update(metadata or {})
        meta.setdefault("intensity_source", str(self.source))
        location = run_location(self.source)
        if location:
            meta.setdefault("location", location)
        meta.setdefault("pue", self.pue)
        if self.monitor:
            meta.setdefault("monitor", self.monitor)
        if self.policy is not None:
            meta.setdefault("policy", repr(self.policy))
        if self._totals.resumed_from:
            meta.setdefault("resumed_from", self._totals.resumed_from)
        meter = self._windows.meter
        methods = getattr(meter, "methods", None)
        if isinstance(methods, Mapping):
            meta.setdefault("methods", dict(methods))
        describe = getattr(meter, "describe", None)
        if callable(describe):
            meta.setdefault("hardware", {"sensors": list(describe())})
        return meta

    def epoch_start(self, epoch: int) -> None:
        """Mark the start of a training epoch (starts the run if ``fit_start`` was missed)."""
        if not self._active:
            self.fit_start()
        self._epoch = int(epoch)

    def eval_start(self) -> None:
        """Mark the start of evaluation; its energy is reported as ``evaluation_energy_kwh``."""
        if self._active:
            self._evaluated = True
            self._windows.eval_start()

    def eval_end(self) -> None:
        """Mark the end of evaluation started by ``eval_start()``."""
        self._windows.eval_end()

    def epoch_end(
        self,
        epoch: int,
        metrics: Mapping[str, Any] | None = None,
        *,
        reduce: Reducer | None = None,
        horizon: Horizon | None = None,
        evaluated: bool | None = None,
    ) -> EpochRecord:
        """Close the epoch's window and return its record (also written to the ledger).

        Args:
            epoch: The epoch index (0-based, as the framework counts).
            metrics: The framework's metrics at this point (tensors are fine); scalars are kept.
            reduce: Under DDP, a function summing a vector of floats across processes; the
                record then holds the sum over all processes (never the average).
            horizon: What the adapter read of the run's future (max_epochs, the learning
                rates its schedule will set), kept on the record for the policy.
            evaluated: Whether an evaluation producing metrics ran in this epoch; None: whether
                ``eval_start()`` opened one since the last epoch end. Until one has, a monitor
                missing from the metrics is not warned about (it may be an evaluation metric).

        Returns:
            The epoch's record (all processes).
        """
        if not self._active:
            self.fit_start()
        if self._windows.evaluating:  # evaluation still open: close it at the boundary
            self._windows.eval_end()
        window, eval_joules = self._windows.close()
        local = self._carbon.quantities(window, eval_joules)
        totals = self._totals
        totals.local_energy_kwh += local["joules"] / JOULES_PER_KWH
        summed = self._sum(local, reduce)
        totals.energy_kwh += summed["joules"] / JOULES_PER_KWH
        totals.co2_g += summed["co2_g"]
        own = set(self.keys) | set(LOG_KEYS)
        kept = {k: v for k, v in scalar_metrics(metrics).items() if k not in own}
        record = epoch_record(epoch, window, summed, totals, self._carbon.last, self.pue, kept)
        if horizon is not None:
            record = dataclasses.replace(record, horizon=horizon)
        totals.records.append(record)
        totals.eval_kwh.append(summed["eval_joules"] / JOULES_PER_KWH)
        evaluated = self._evaluated if evaluated is None else evaluated
        self._evaluated = False
        self._monitor_check.epoch(record, evaluated)
        if self._primary:
            self._ledger.add(record)
            self._report_trial(record)
        return record

    def _sum(self, local: dict[str, float], reduce: Reducer | None) -> dict[str, float]:
        if reduce is None:
            return local
        try:
            return sum_across_ranks(local, reduce)
        except Exception as exc:  # noqa: BLE001 - fall back to this process's share
            self._warn("reduce", "summing energy across processes failed (%s)", exc)
            return local

    def _report_trial(self, record: EpochRecord) -> None:
        if self.trial is None:
            return
        value = record.metric(self.monitor) if self.monitor else None
        try:
            self.trial.report(record, value)
        except Exception as exc:  # noqa: BLE001
            self._warn("trial", "reporting CO2e to the Optuna trial failed (%s)", exc)

    def log_dict(
        self, record: EpochRecord | None = None, *, theirs: Collection[str] = ()
    ) -> dict[str, float]:
        """The keys to log for an epoch (the last one by default), prefix included.

        Args:
            record: the epoch; None for the last one.
            theirs: names the fit's own metrics hold this epoch: a key among them is left out
                (with one warning) rather than written over the user's value.
        """
        if record is None:
            if not self._totals.records:
                return {}
            record = self._totals.records[-1]
        out = record.log_dict(self.prefix)
        out[self.prefix + EVAL_ENERGY_KEY] = self._totals.eval_kwh_of(record)
        return self._beside(out, theirs)

    def _beside(self, ours: dict[str, float], theirs: Collection[str]) -> dict[str, float]:
        clash = sorted(k for k in ours if k in theirs)
        if not clash:
            return ours
        self._warn(
            "clash",
            "the fit logs its own %s; its values are kept and the callback's left out "
            "(pass prefix='carbon/' to log both)",
            ", ".join(clash),
        )
        return {k: v for k, v in ours.items() if k not in clash}

    def interim_log_dict(
        self, *, reduce: Reducer | None = None, theirs: Collection[str] = ()
    ) -> dict[str, float]:
        """The keys for the epoch so far, without closing it, prefix included.

        For a validation in the middle of an epoch (Lightning's ``val_check_interval=0.5``),
        where ``EarlyStopping`` and ``ModelCheckpoint`` read the monitored key: the ``*_total``
        keys are the run's totals up to now, the other keys cover the epoch so far. Nothing is
        recorded; ``epoch_end`` still closes the epoch. Under DDP every rank must call it with
        ``reduce`` at the same point, as for ``epoch_end``. ``theirs`` as for ``log_dict``.
        """
        if not self._active:
            return {}
        window, eval_joules = self._windows.peek()
        summed = self._sum(self._carbon.quantities(window, eval_joules), reduce)
        totals = self._totals
        record = epoch_record(
            self._epoch, window, summed, totals, self._carbon.last, self.pue, {}
        )
        record = dataclasses.replace(
            record,
            energy_kwh_total=totals.energy_kwh + record.energy_kwh,
            co2_g_total=totals.co2_g + record.co2_g,
        )
        out = record.log_dict(self.prefix)
        out[self.prefix + EVAL_ENERGY_KEY] = summed["eval_joules"] / JOULES_PER_KWH
        return self._beside(out, theirs)

    def decide(self) -> Decision:
        """Ask the policy (and the Optuna trial) whether to stop after the last epoch.

        Returns:
            ``Decision(stop=True, reason)`` to stop; the reason is logged once and stored in
            the ledger at ``fit_end``. A pruned trial also sets ``pruned``.
        """
        if self._stop is not None:
            return self._stop
        decision = CONTINUE
        if self.policy is not None and self._totals.records:
            try:
                decision = self.policy.decide(tuple(self._totals.records))
            except Exception as exc:  # noqa: BLE001 - a broken rule must not end training
                self._warn("policy", "stopping policy failed (%s); training goes on", exc)
                decision = CONTINUE
        if not decision.stop and self.trial is not None and self._primary and self._totals.records:
            try:
                if self.trial.should_prune():
                    epoch = self._totals.records[-1].epoch
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
        """Raise the trial's "pruned" exception if it asked to be pruned (call after fit).

        Raises:
            optuna.TrialPruned: The (Optuna) trial was pruned.
        """
        if self._pruned and self.trial is not None:
            self.trial.raise_pruned(self._stop.reason if self._stop else "pruned")

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
        self._monitor_check.run_end(self._totals.records)
        self._windows.stop()
        self._ledger.end(self._stop)
        self._summary = self._make_summary()
        return self._summary

    def _make_summary(self) -> RunSummary:
        stop = self._stop
        records = self._totals.records
        return RunSummary(
            run_id=self.run_id,
            start_wall=records[0].start_wall if records else self._windows.fit_start_wall,
            end_wall=records[-1].end_wall if records else time.time(),
            epochs=tuple(records),
            energy_kwh=self._totals.energy_kwh,
            co2_g=self._totals.co2_g,
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
