"""Summing a process's epoch quantities across DDP ranks, and agreeing on a stop.

The framework adapters know how their processes talk (a Lightning strategy, ``torch.distributed``)
and hand over a ``Reducer`` that sums a vector; this module is the one place that says which
quantities are summed and in what order, and how the ranks agree that one of them said stop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from carbon_callbacks.tracking.sinks import Warn

Reducer = Callable[[Sequence[float]], Sequence[float]]
"""Sums a vector of per-process quantities across processes (DDP); same length back."""

ADDITIVE = (
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
"""Per-process quantities that add across ranks, in the order a ``Reducer`` receives them."""


def sum_across_ranks(
    local: Mapping[str, float], reduce: Reducer | None, warn: Warn
) -> Mapping[str, float]:
    """``local``'s additive quantities summed over every process by ``reduce``.

    Without ``reduce`` (one process) ``local`` itself; if ``reduce`` fails (or returns the
    wrong length) this process's share, after one warning: a record is never lost to DDP.
    """
    if reduce is None:
        return local
    try:
        values = [float(v) for v in reduce([local[k] for k in ADDITIVE])]
        return dict(zip(ADDITIVE, values, strict=True))
    except Exception as exc:  # noqa: BLE001 - fall back to this process's share
        warn("reduce", "summing energy across processes failed (%s)", exc)
        return local


def any_rank(flag: bool, reduce: Reducer | None) -> bool:
    """True if any process says ``flag``: every rank must leave the loop at the same epoch, or
    the next collective waits forever. Without ``reduce`` (one process), ``flag``."""
    if reduce is None:
        return flag
    return float(reduce([1.0 if flag else 0.0])[0]) > 0.0
