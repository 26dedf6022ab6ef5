"""Summing a process's epoch quantities across DDP ranks.

The framework adapters know how their processes talk (a Lightning strategy, ``torch.distributed``)
and hand the tracker a ``Reducer``; this module says which quantities are summed and in what
order, so every adapter reduces the same vector.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

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


def sum_across_ranks(local: Mapping[str, float], reduce: Reducer) -> dict[str, float]:
    """``local``'s additive quantities summed over every process by ``reduce``.

    Raises:
        Exception: whatever ``reduce`` raises, or ValueError if it returns the wrong length;
            the caller keeps this process's share then.
    """
    values = [float(v) for v in reduce([local[k] for k in ADDITIVE])]
    return dict(zip(ADDITIVE, values, strict=True))
