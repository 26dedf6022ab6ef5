"""What a learning-rate schedule means for a curve forecast.

A scheduled drop still ahead makes the curve's past a poor guide to its future, so the forecast
waits for it; after a drop only the epochs since it belong to the current regime.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from carbon_callbacks.policies._base import Decision
from carbon_callbacks.records import EpochRecord


def lr_drop_ahead(
    last: EpochRecord, lr_drop: float, cost_g: float, net_on: str | None
) -> Decision | None:
    """A ``CONTINUE`` that says why, when the schedule lowers the LR before the horizon.

    Args:
        last: The latest record; its ``horizon`` holds the schedule read by the adapter.
        lr_drop: A scheduled learning rate below this fraction of today's counts as a drop.
        cost_g: The CO2e of a typical epoch, to say how far away the drop is.
        net_on: The metric the patience net watches, or None when the net is off.
    """
    h = last.horizon
    if h is None or not h.lr or not h.lr_ahead:
        return None
    for k, lr in enumerate(h.lr_ahead, start=1):
        if lr < lr_drop * h.lr:
            epoch = last.epoch + k
            reason = (
                f"waiting: the {h.scheduler or 'learning-rate'} schedule lowers the learning "
                f"rate from {h.lr:.3g} to {lr:.3g} by epoch {epoch} ({k} epochs, about "
                f"{k * cost_g:.3g} g CO2e away), so the curve's past does not forecast its "
                "future"
                + (f"; the patience net on {net_on} still applies" if net_on is not None else "")
            )
            details = {"rule": "DiminishingReturns", "epoch": last.epoch, "waiting_for": epoch}
            return Decision(False, reason, details)
    return None


def fit_segment(
    records: Sequence[EpochRecord], monitor: str, warmup: int, max_points: int, lr_drop: float
) -> list[EpochRecord]:
    """The recent records with the metric, back to the warm-up or the last LR drop."""
    out: list[EpochRecord] = []
    lr_now = records[-1].horizon.lr if records[-1].horizon else None
    for r in reversed(records):
        if r.epoch < warmup or len(out) == max_points:
            break
        lr = r.horizon.lr if r.horizon else None
        if lr_now and lr and lr_now < lr_drop * lr:
            break  # before the last drop: another regime
        v = r.metric(monitor)
        if v is not None and not math.isnan(v):
            out.append(r)
    return out[::-1]
