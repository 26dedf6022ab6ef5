"""An Optuna trial as the tracker's ``TrialSink``: the adapters wrap the ``trial=`` they are given.

Optuna is imported only when a trial is reported to, so an adapter without a trial needs none.
"""

from __future__ import annotations

from typing import Any, NoReturn

from carbon_callbacks.records import EpochRecord


class OptunaTrialSink:
    """Reports each epoch's cumulative CO2e to an Optuna trial and asks it whether to prune.

    Args:
        trial: the objective's ``optuna.Trial``.
    """

    def __init__(self, trial: Any) -> None:
        self.trial = trial

    @property
    def number(self) -> Any:
        return getattr(self.trial, "number", "?")

    def report(self, record: EpochRecord, value: float | None) -> None:
        from carbon_callbacks.integrations.optuna import report_carbon

        report_carbon(
            self.trial, record.epoch, record.co2_g_total, record.energy_kwh_total, value=value
        )

    def should_prune(self) -> bool:
        from carbon_callbacks.integrations.optuna import should_prune

        return should_prune(self.trial)

    def raise_pruned(self, reason: str) -> NoReturn:
        import optuna

        raise optuna.TrialPruned(reason)

    def __repr__(self) -> str:
        return f"OptunaTrialSink(trial {self.number})"


def trial_sink(trial: Any) -> OptunaTrialSink | None:
    """``trial`` as a sink (None stays None).

    Raises:
        TypeError: if ``trial`` is not an Optuna trial, naming the argument.
    """
    if trial is None:
        return None
    if isinstance(trial, OptunaTrialSink):
        return trial
    if not callable(getattr(trial, "set_user_attr", None)):
        raise TypeError(
            f"trial must be an optuna.Trial (the objective's argument), got {type(trial).__name__}"
        )
    return OptunaTrialSink(trial)
