"""The tracker's constructor arguments, checked at construction: a mistake fails before ``fit``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from carbon_callbacks.tracking.sinks import TrialSink, is_ledger_arg


def check_arguments(
    prefix: Any, monitor: Any, policy: Any, meter: Any, ledger: Any, trial: Any, metadata: Any
) -> None:
    """Refuse, at construction, an argument of the wrong kind, naming it.

    Raises:
        TypeError: an argument of the wrong kind.
        ValueError: an empty ``monitor``.
    """
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
