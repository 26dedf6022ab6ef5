"""Per-epoch energy and CO2e bookkeeping shared by every training-loop adapter.

``EpochTracker`` is the one place where a training run becomes ``EpochRecord``s: it cuts the
meter's readings into contiguous epoch windows (``windows.py``), so the epochs add up to the run,
evaluation and the gaps between epochs included; keeps the totals (``state.py``); asks the
stopping policy and the trial (``stopping.py``); writes each record to the ledger as the epoch
ends and reports to a trial sink (``sinks.py``); and ends the run as completed, stopped, failed
or interrupted, recording the epoch it ended inside (``endings.py``). It knows no ML framework:
the adapters call its hooks at their framework's events and log ``log_dict()`` their own way.

It never raises into training once constructed: a meter, intensity, ledger, trial or policy
failure logs one warning per cause and the epoch is recorded with what is known.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any

from carbon_callbacks._warn import WarnOnce

# The meter, ledger and intensity modules are imported here, with the adapter, not in the
# training loop's first hook: `import carbon_callbacks` alone stays light (it loads none of
# them), and an adapter's hooks do only per-fit work.
from carbon_callbacks.energy.meter import Meter
from carbon_callbacks.intensity import IntensitySpec, check_pue, resolve
from carbon_callbacks.policies import Decision, Policy
from carbon_callbacks.records import EpochRecord, Horizon, RunEnd, RunSummary, Window
from carbon_callbacks.tracking.arguments import check_arguments
from carbon_callbacks.tracking.distributed import Reducer, sum_across_ranks
from carbon_callbacks.tracking.endings import end_for_exception
from carbon_callbacks.tracking.lifecycle import FitRun
from carbon_callbacks.tracking.metrics import MissingMonitors, scalar_metrics
from carbon_callbacks.tracking.passes import EvalPasses
from carbon_callbacks.tracking.sinks import LedgerSpec, TrialSink, Warn, run_metadata
from carbon_callbacks.tracking.state import EVAL_ENERGY_KEY, RunTotals, run_summary
from carbon_callbacks.tracking.stopping import Stopping
from carbon_callbacks.tracking.windows import EpochWindows, WindowCarbon

logger = logging.getLogger(__name__)

LOG_KEYS: tuple[str, ...] = (*EpochRecord.LOG_KEYS, EVAL_ENERGY_KEY)
"""Every key an adapter logs per epoch (before the prefix)."""


class EpochTracker:
    """Turns a training run into per-epoch energy/CO2e records, totals, stops and an ending.

    Call ``fit_start()``, then per epoch ``epoch_start()``, optionally ``eval_start()``/
    ``eval_end()`` around evaluation, ``epoch_end()`` (which returns the record) and
    ``decide()``; ``fit_end()`` at the end, or ``fail(exc)`` when an exception ends the fit.
    Each epoch's window runs from the previous epoch's end (or fit start) to this epoch's end,
    so the epochs add up to the run; the epoch a run ends inside becomes a ``partial`` record,
    so a failed or interrupted run still adds up to what the meter saw until it ended.

    A fit whose first epoch follows this tracker's last record (``fit`` again on the same
    trainer, Keras ``initial_epoch``) continues the ``*_total`` figures, as a resumed one does;
    in the ledger each fit is a run, whose ``parent_run`` is the run it continues.

    Args:
        intensity: None (environment, else world average with a warning), gCO2e/kWh, a
            country/zone/cloud-region code such as ``"FR"``, or an ``IntensitySource``.
        policy: A stopping rule with ``decide(records) -> Decision``, or None to never stop.
        monitor: The metric to record with each epoch's energy (e.g. ``"val_accuracy"``).
        prefix: Prepended to every logged key (``"carbon/"`` gives ``carbon/co2_g``).
        pue: Data-centre power usage effectiveness applied to CO2e (1.0: measured energy only).
        meter: An ``EnergyMeter``; None builds a process-scope one at ``fit_start``.
        ledger: None for the default ledger, a path or database URL, a ``Ledger``, or False.
        framework: Recorded in the ledger (``"lightning"``, ``"keras"``...).
        trial: A ``TrialSink`` to report cumulative CO2e to and ask whether to prune.
        metadata: Extra run metadata for the ledger (project, team, hyperparameters...).

    Raises:
        TypeError: An argument of the wrong kind (the message names it).
        ValueError: An unknown intensity code, a PUE outside 1-5, an empty monitor.

    Example::

        tracker = EpochTracker(intensity="FR", policy=CarbonBudget(max_co2_g=50))
        tracker.fit_start({"framework": "mine"})
        for epoch in range(10):  # on an exception: tracker.fail(exc), then raise it
            tracker.epoch_start(epoch)
            tracker.epoch_end(epoch, {"val_accuracy": train_and_evaluate()})
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
        check_arguments(prefix, monitor, policy, meter, ledger, trial, metadata)
        self.pue = check_pue(pue)
        self.source = resolve(intensity)
        self.monitor = monitor
        self.prefix = prefix
        self.framework = framework
        self.metadata: dict[str, Any] = dict(metadata or {})
        self._ledger_arg = ledger
        self._warn: Warn = _prefixed(WarnOnce(logger))
        self._carbon_for = functools.partial(WindowCarbon, self.source, self.pue, self._warn)
        self._windows = EpochWindows(meter, self._warn)
        self._totals = RunTotals()
        self._stopping = Stopping(policy, trial, self._warn)
        self.evaluation = EvalPasses(meter, self._carbon_for, ledger, self._warn, self._describe)
        """Evaluation passes after a fit, each measured as a run of its own."""
        self.run = FitRun(id(self), ledger, self._warn)
        """The current fit: ``active``, ``end``, its ledger run and its ``sections``."""
        self._carbon = self._carbon_for()
        self._monitors = MissingMonitors(logger)

    # ------------------------------------------------------------------ state

    @property
    def policy(self) -> Any:
        """The stopping rule (None: never stop)."""
        return self._stopping.policy

    @property
    def records(self) -> tuple[EpochRecord, ...]:
        """The run's epoch records (summed over processes under DDP), resumed ones included."""
        return tuple(self._totals.records)

    @property
    def totals(self) -> RunTotals:
        """The run's totals (``energy_kwh``, ``co2_g``, ``local_energy_kwh``); read only."""
        return self._totals

    @property
    def run_id(self) -> str:
        """The fit's ledger run id ("" without a ledger, on non-zero ranks, or before epoch 0)."""
        return self.run.ledger.run_id

    @property
    def stop_decision(self) -> Decision | None:
        """The decision that stopped the run, or None while it goes on."""
        return self._stopping.decision

    @property
    def pruned(self) -> bool:
        """True when the trial asked to be pruned."""
        return self._stopping.pruned

    def run_window(self) -> Window | None:
        """This process's energy from fit start to the last boundary (the epochs add up to it)."""
        return self._windows.run_window()

    def state_dict(self) -> dict[str, Any]:
        """Totals and records, JSON-ready, for checkpoints (policies decide from the records)."""
        return self._totals.to_state(self.run_id)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore ``state_dict()``'s totals (resume): the run's first epoch continues them.

        Raises:
            ValueError: A state written by a newer, incompatible version.
        """
        self._totals.load(state)
        self.run.restored()

    # ------------------------------------------------------------------ hooks

    def fit_start(
        self, metadata: Mapping[str, Any] | None = None, *, primary: bool = True,
        frame: FrameType | None = None, ender: Callable[[RunEnd], Any] | None = None,
    ) -> None:
        """Start measuring a fit; runs whose fit is gone (this tracker's included) are ended.

        Args:
            metadata: Run metadata for the ledger, merged over the constructor's.
            primary: False on non-zero DDP ranks (they write no ledger, report to no trial).
            frame: The framework's frame running the fit: once it is gone, a run no hook
                ended is ended by the next fit start (or at exit).
            ender: What ends the fit then (default ``fit_end``): an adapter's own, to undo
                what it set up for the fit as well.
        """
        with self.run.sections.section():
            self.run.start(ender or self.fit_end, frame, primary=primary, metadata=metadata)
            self._windows.reset()
            self._carbon = self._carbon_for()
            self._stopping.reset()
            self._monitors.rearm()
            self._windows.start()

    def epoch_start(self, epoch: int) -> None:
        """Mark the start of a training epoch; the fit's first opens its ledger run."""
        if not self.run.active:
            self.fit_start()
        if not self.run.opened:
            self.run.open(epoch, self._totals, self._describe)
        self.run.in_epoch, self.run.epoch = True, int(epoch)

    def _describe(self, kind: str, metadata: Mapping[str, Any] | None, **extra: Any) -> dict:
        base = {"framework": self.framework, **self.metadata, **(metadata or {})}
        if kind != "fit":  # an evaluation pass: of the last fit, after its last epoch
            last = self._totals.next_epoch - 1
            extra.update(parent_run=self.run.previous_run, after_epoch=last if last >= 0 else None)
        policy = repr(self.policy) if self.policy is not None else None
        return run_metadata(base, self.source, self.pue, self._windows.meter, kind=kind,
                            monitor=self.monitor, policy=policy, **extra)

    def eval_start(self) -> None:
        """Mark the start of evaluation; its energy is reported as ``eval_energy_kwh``."""
        if self.run.active:
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
    ) -> EpochRecord:
        """Close the epoch's window and return its record (also written to the ledger).

        Args:
            epoch: The epoch index (0-based, as the framework counts).
            metrics: The framework's metrics at this point (tensors are fine); scalars are kept.
            reduce: Under DDP, sums a vector of floats across processes (the record is the sum).
            horizon: What the adapter read of the run's future (max_epochs, the learning
                rates its schedule will set), kept on the record for the policy.
        """
        if not self.run.active or not self.run.opened:
            self.epoch_start(epoch)
        with self.run.sections.section():
            own = {self.prefix + k for k in LOG_KEYS} | set(LOG_KEYS)
            kept = {k: v for k, v in scalar_metrics(metrics).items() if k not in own}
            record = self._close_window(epoch, kept, reduce)
            if horizon is not None:
                record = self._totals.records[-1] = dataclasses.replace(record, horizon=horizon)
            if self.run.primary:
                self.run.ledger.add(record)
            self._monitors.check(record, (self.monitor, getattr(self.policy, "monitor", None)), own)
            if self.run.primary:
                self._stopping.report(record, self.monitor)
            return record

    def _close_window(
        self, epoch: int, metrics: dict[str, float], reduce: Reducer | None, partial: bool = False
    ) -> EpochRecord:
        if self._windows.evaluating:  # evaluation still open: close it at the boundary
            self._windows.eval_end()
        window, eval_joules = self._windows.close()
        local = self._carbon.quantities(window, eval_joules)
        summed = sum_across_ranks(local, reduce, self._warn)
        record = self._totals.add(epoch, window, local, summed, self._carbon.last, self.pue,
                                  metrics, partial=partial)
        self.run.in_epoch = False
        return record

    def log_dict(self, record: EpochRecord | None = None) -> dict[str, float]:
        """The keys to log for an epoch (the last one by default), prefix included."""
        return self._totals.log_dict(record, self.prefix)

    def decide(self) -> Decision:
        """Ask the policy (then the trial, on the primary process) whether to stop now."""
        return self._stopping.decide(self._totals.records, ask_trial=self.run.primary)

    def stopped(self, decision: Decision, by: str = "policy") -> None:
        """Record that the run stops for ``decision``, asked by ``by`` (``records.STOPPED_BY``)."""
        self._stopping.stop(decision, by)

    def check_pruned(self) -> None:
        """Raise the trial's "pruned" exception (``optuna.TrialPruned``) if it asked to be."""
        self._stopping.check_pruned()

    def fail(self, exc: BaseException) -> RunSummary:
        """End the fit for ``exc`` (failed, interrupted, or pruned) and return the summary."""
        return self.fit_end(end_for_exception(exc))

    def fit_end(self, end: RunEnd | None = None) -> RunSummary:
        """End the fit: close the epoch it ended inside, stop the meter, end the ledger run.

        Args:
            end: How it ended; default: stopped as ``decide()``/``stopped()`` said, else
                completed. Only the first call of a fit counts.
        """
        run = self.run
        if run.active:
            with run.sections.section():
                end = end or self._stopping.end()
                if not run.opened:
                    run.open(None, self._totals, self._describe)
                partial = None
                if run.in_epoch or end.status in ("failed", "interrupted"):
                    epoch = run.epoch if run.in_epoch else self._totals.next_epoch
                    partial = self._close_window(epoch, {}, None, partial=True)  # not reduced:
                self._windows.stop()  # other ranks may be gone; the meter stops before we write
                if partial is not None and run.primary:
                    run.ledger.add(partial)
                run.finish(end)
        return run_summary(self.run_id, self._totals, self._windows.fit_start_wall,
                           run.end or RunEnd(), {"framework": self.framework, **self.metadata})

    def warn_once(self, cause: str, message: str, *args: Any) -> None:
        """Log a warning the first time ``cause`` fails in this tracker (adapters' failures)."""
        self._warn(cause, message, *args)


def _prefixed(warned: WarnOnce) -> Warn:
    """The tracker's warn-once with the package's prefix (it holds no reference to the tracker)."""

    def warn(cause: str, message: str, *args: Any) -> None:
        warned(cause, "carbon-callbacks: " + message, *args)

    return warn
