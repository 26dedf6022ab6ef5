"""Whether a run stops after an epoch, and who asked: the policy, a trial or the framework."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from carbon_callbacks.policies import CONTINUE, Decision
from carbon_callbacks.records import EpochRecord, RunEnd
from carbon_callbacks.tracking.sinks import TrialSink, Warn

logger = logging.getLogger(__name__)


class Stopping:
    """Asks the stopping policy and the trial after each epoch, and remembers the first stop.

    Args:
        policy: an object with ``decide(records) -> Decision``, or None.
        trial: the trial sink, or None.
        warn: the tracker's warn-once, told of a policy or trial that fails.
    """

    def __init__(self, policy: Any, trial: TrialSink | None, warn: Warn) -> None:
        self.policy = policy
        self.trial = trial
        self._warn = warn
        self.reset()

    def reset(self) -> None:
        """A new fit: nothing has asked to stop."""
        self.decision: Decision | None = None
        """The decision that stopped the run (None while it goes on)."""
        self.by = ""
        """Who made it: one of ``records.STOPPED_BY``."""

    @property
    def pruned(self) -> bool:
        """True when the trial asked to be pruned."""
        return self.by == "pruning"

    def decide(self, records: Sequence[EpochRecord], *, ask_trial: bool) -> Decision:
        """The policy's decision on ``records``, else the trial's (when ``ask_trial``)."""
        if self.decision is not None:
            return self.decision
        if not records:
            return CONTINUE
        decision = CONTINUE
        if self.policy is not None:
            try:
                decision = self.policy.decide(tuple(records))
            except Exception as exc:  # noqa: BLE001 - a broken rule must not end training
                self._warn("policy", "stopping policy failed (%s); training goes on", exc)
                decision = CONTINUE
        if decision.stop:
            self.stop(decision, "policy")
            return decision
        if self.trial is not None and ask_trial:
            try:
                if self.trial.should_prune():
                    number = getattr(self.trial, "number", "?")
                    reason = f"Optuna pruned trial {number} at epoch {records[-1].epoch}"
                    decision = Decision(True, reason)
                    self.stop(decision, "pruning")
            except Exception as exc:  # noqa: BLE001
                self._warn("trial-prune", "cannot ask the Optuna trial to prune (%s)", exc)
        return decision

    def stop(self, decision: Decision, by: str) -> None:
        """Record that the run stops for ``decision``, asked by ``by`` (the first stop wins)."""
        if self.decision is None:
            self.decision = decision
            self.by = by
            logger.info("carbon-callbacks: stopping training (%s): %s", by, decision.reason)

    def end(self) -> RunEnd:
        """How the run ends if nothing else happens: stopped as decided, else completed."""
        if self.decision is None:
            return RunEnd("completed")
        return RunEnd("stopped", self.by, self.decision.reason)

    def report(self, record: EpochRecord, monitor: str | None) -> None:
        """Tell the trial the epoch's cumulative CO2e (and the monitored metric's value)."""
        if self.trial is None:
            return
        try:
            self.trial.report(record, record.metric(monitor) if monitor else None)
        except Exception as exc:  # noqa: BLE001
            self._warn("trial", "reporting CO2e to the Optuna trial failed (%s)", exc)

    def check_pruned(self) -> None:
        """Raise the trial's "pruned" exception if it asked to be pruned."""
        if self.pruned and self.trial is not None:
            self.trial.raise_pruned(self.decision.reason if self.decision else "pruned")
