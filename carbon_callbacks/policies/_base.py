"""The policy interface, the decision it returns, and the arithmetic the rules share.

Every adapter (Lightning, Keras, transformers) calls ``policy.decide(records)`` once after each
training epoch with all of the run's training ``EpochRecord``s so far, and stops training with
its framework's own mechanism when the returned ``Decision`` says ``stop``.

Policies are stateless, as Optuna's pruners are: each decision is computed from the records
alone (which the adapters already checkpoint), so a resumed run, a second ``fit()`` and the
next Optuna trial need no reset and no saved policy state, and calling ``decide`` twice with the
same records gives the same answer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, overload, runtime_checkable

from carbon_callbacks.records import EpochRecord


@dataclass(frozen=True)
class Decision:
    """What a policy says after an epoch: stop or go on, why in words, and why as data.

    ``details`` carries the same facts as ``reason`` for programs (plots, reports, the
    benchmark), so nothing has to parse the sentence. Keys the built-in rules use:
    ``epoch`` (the epoch decided on), ``best_epoch`` (the checkpoint to keep),
    ``shoulder_epoch`` (where more epochs stopped paying), ``gain``/``gain_low``/``gain_high``
    (forecast gain to the horizon, in the metric's units), ``remaining_co2_g``,
    ``horizon_epoch``, ``waiting_for`` (why a rule holds off) and ``rule`` (the rule's name).
    """

    stop: bool
    reason: str = ""
    details: Mapping[str, Any] = field(default_factory=dict, compare=False)


CONTINUE = Decision(stop=False)


@runtime_checkable
class Policy(Protocol):
    """The interface every stopping rule implements; write your own by providing ``decide``.

    ``decide`` is called once after every training epoch with all of the run's training
    ``EpochRecord``s so far (oldest first). Make it a function of the records only (no count
    kept between calls: the records are what a resumed run gets back), cheap, and not raising
    for ordinary input (a missing metric, a run whose energy could not be measured): return
    ``CONTINUE`` and log a warning instead.

    Example::

        class StopAtGrams:
            def __init__(self, grams: float) -> None:
                self.grams = grams

            def decide(self, records):
                if records and records[-1].co2_g_total >= self.grams:
                    return Decision(True, f"{records[-1].co2_g_total:.1f} g CO2e spent")
                return CONTINUE

        policy = AnyOf(StopAtGrams(50.0), DiminishingReturns("val_acc", max_loss=0.002))
    """

    def decide(self, records: Sequence[EpochRecord]) -> Decision:
        """Return ``Decision(stop=True, reason=...)`` to end training after this epoch."""
        ...


@overload
def positive(name: str, value: float, *, allow_zero: bool = False) -> float: ...
@overload
def positive(name: str, value: float | None, *, allow_zero: bool = False) -> float | None: ...
def positive(name: str, value: float | None, *, allow_zero: bool = False) -> float | None:
    """``value`` as a float after checking it is a finite number > 0 (or >= 0); None passes."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}.")
    value = float(value)
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"{name} must be a finite number, got {value}.")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value:g}.")
    return value


def count(name: str, value: int, minimum: int) -> int:
    """``value`` after checking it is an int >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}.")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    return value


def increments(totals: Sequence[float]) -> list[float]:
    """Per-epoch costs from cumulative totals (so evaluation between epochs is counted too)."""
    out: list[float] = []
    previous = 0.0
    for total in totals:
        out.append(max(total - previous, 0.0))
        previous = total
    return out


def span(epochs: Sequence[int]) -> str:
    """``"3-7"`` for a run of epochs, ``"3"`` for one, ``"none"`` for none."""
    if not epochs:
        return "none"
    return str(epochs[0]) if len(epochs) == 1 else f"{epochs[0]}-{epochs[-1]}"


def check_mode(monitor: str, mode: str, enabled: bool) -> None:
    """Refuse a bad ``mode`` or one that contradicts a well-known metric name."""
    from carbon_callbacks.policies.metric_names import metric_direction

    if not isinstance(monitor, str) or not monitor:
        raise ValueError("monitor must be the name of a logged metric, e.g. 'val_accuracy'.")
    if mode not in ("min", "max"):
        raise ValueError(
            f"mode must be 'min' or 'max', got {mode!r}: 'max' when higher {monitor} is "
            "better (accuracy), 'min' when lower is better (loss)."
        )
    if not enabled:
        return
    direction = metric_direction(monitor)
    if mode == "max" and direction == "min":
        raise ValueError(
            f"mode='max' does not fit monitor={monitor!r}, which reads as lower-is-better;"
            " pass mode='min' (or check_mode=False if higher really is better)."
        )
    if mode == "min" and direction == "max":
        raise ValueError(
            f"mode='min' does not fit monitor={monitor!r}, which reads as "
            "higher-is-better; pass mode='max' (or check_mode=False if lower really "
            "is better)."
        )


def best_epoch(records: Sequence[EpochRecord], monitor: str, mode: str) -> int | None:
    """The epoch with the best value of ``monitor`` (the first of equals), None without one."""
    best: tuple[float, int] | None = None
    for r in records:
        v = r.metric(monitor)
        if v is None or math.isnan(v):
            continue
        score = v if mode == "max" else -v
        if best is None or score > best[0]:
            best = (score, r.epoch)
    return None if best is None else best[1]
