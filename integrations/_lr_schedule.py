"""What a torch learning-rate scheduler will do next, read by stepping a copy of it.

The stopping rules cannot extrapolate a learning curve across a scheduled drop, so the adapters
pass the coming learning rates in ``EpochRecord.horizon``. A copy of the scheduler is stepped
against a stand-in optimizer that holds copies of the parameter groups (no tensors), so the
real optimizer and scheduler are never touched. A ``LambdaLR`` (every schedule the transformers
``Trainer`` builds) is evaluated in closed form instead, so a per-step schedule over a long run
costs one call per coming epoch. Schedulers that react to metrics (``ReduceLROnPlateau``,
transformers' ``GreedyLR``) have no readable future; those are reported as unknown.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from typing import Any

MAX_STEPS = 2000
"""Most scheduler steps simulated per epoch end: bounds the cost (~20 ms) of a per-batch
scheduler over a long run; the learning rates beyond are left out (the rule then sees a shorter
future, never a wrong one)."""


class _StandInOptimizer:
    """Holds parameter groups without parameters; ``step`` marked as the scheduler expects."""

    def __init__(self, groups: Sequence[dict[str, Any]]) -> None:
        self.param_groups = [{k: v for k, v in g.items() if k != "params"} for g in groups]
        for g in self.param_groups:
            g["params"] = []
        self.defaults: dict[str, Any] = {}
        self._opt_called = True

    def step(self, *args: Any, **kwargs: Any) -> None:
        return None

    # torch's LRScheduler warns unless optimizer.step carries this mark; a function attribute
    # mypy does not know of.
    step._wrapped_by_lr_sched = True  # type: ignore[attr-defined]


def first_lr(optimizer: Any) -> float | None:
    """The learning rate of the optimizer's first parameter group, as a float."""
    try:
        return float(optimizer.param_groups[0]["lr"])
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return None


def reacts_to_metrics(scheduler: Any) -> bool:
    """True for a scheduler driven by a metric (``ReduceLROnPlateau``): no readable future."""
    return type(scheduler).__name__ == "ReduceLROnPlateau" or hasattr(scheduler, "num_bad_epochs")


def lr_ahead(
    scheduler: Any, epochs: int, steps_per_epoch: int = 1, *, max_steps: int = MAX_STEPS
) -> tuple[float, ...] | None:
    """The first group's learning rate after each of the next ``epochs`` epochs' steps.

    Args:
        scheduler: A torch ``LRScheduler`` (anything with ``step()`` and ``optimizer``).
        epochs: How many epochs to look ahead.
        steps_per_epoch: Scheduler steps per epoch (1 for epoch-interval schedulers).
        max_steps: Stop simulating after this many steps in all.

    Returns:
        Up to ``epochs`` learning rates, or None when the scheduler cannot be simulated.
    """
    optimizer = getattr(scheduler, "optimizer", None)
    if optimizer is None or reacts_to_metrics(scheduler) or steps_per_epoch <= 0:
        return None
    if epochs <= 0:
        return ()
    if _is_lambda_lr(scheduler):
        return _lambda_ahead(scheduler, epochs, steps_per_epoch)
    stand_in = _StandInOptimizer(optimizer.param_groups)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            twin = copy.deepcopy(scheduler, memo={id(optimizer): stand_in})
            out: list[float] = []
            budget = max_steps
            for _ in range(epochs):
                if budget < steps_per_epoch:
                    break
                for _ in range(steps_per_epoch):
                    twin.step()
                budget -= steps_per_epoch
                lr = first_lr(stand_in)
                if lr is None:
                    return None
                out.append(lr)
    except Exception:  # noqa: BLE001 - a scheduler we cannot copy just has no known future
        return None
    return tuple(out)


def _is_lambda_lr(scheduler: Any) -> bool:
    """A plain ``LambdaLR``: its rate is ``base_lr * lambda(step)``, so any step can be read.

    Subclasses are left to the simulation: they may compute ``get_lr`` otherwise.
    """
    return (
        type(scheduler).__name__ == "LambdaLR"
        and type(scheduler).__module__.startswith("torch.")
        and bool(getattr(scheduler, "lr_lambdas", None))
        and bool(getattr(scheduler, "base_lrs", None))
    )


def _lambda_ahead(scheduler: Any, epochs: int, steps_per_epoch: int) -> tuple[float, ...] | None:
    """``LambdaLR``'s first-group rate after each coming epoch, without stepping anything."""
    base = float(scheduler.base_lrs[0])
    rule = scheduler.lr_lambdas[0]
    step = int(scheduler.last_epoch)
    try:
        return tuple(base * float(rule(step + k * steps_per_epoch)) for k in range(1, epochs + 1))
    except Exception:  # noqa: BLE001 - a lambda we cannot evaluate just has no known future
        return None
