"""Each epoch's ``Horizon`` for the Keras and transformers adapters: max_epochs and coming LRs.

The stopping rules cannot extrapolate a learning curve across a scheduled drop in the learning
rate, so the adapters report what they can read of the schedule (the Lightning adapter does the
same in ``_lightning_mixin``). Nothing here changes the run: a torch scheduler is read through a
copy or its closed form (``_lr_schedule``), a Keras schedule or ``LearningRateScheduler``
function is only evaluated. Reading a horizon must never end a fit, so each reader catches
everything, warns once through the tracker and reports no horizon.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from carbon_callbacks.integrations._lr_schedule import (
    MAX_STEPS,
    first_lr,
    lr_ahead,
    reacts_to_metrics,
)
from carbon_callbacks.records import Horizon
from carbon_callbacks.tracking import find_caller_instance

Warn = Callable[..., None]

_MAX_EPOCHS = 10**9
"""An epoch count above this is the Trainer's "until max_steps" (``sys.maxsize``): unknown."""


def transformers_horizon(
    args: Any, state: Any, epoch: int, epoch_lr: float | None, hook: dict[str, Any], warn: Warn
) -> Horizon | None:
    """The horizon at the end of a transformers ``Trainer`` epoch.

    Args:
        args: The ``TrainingArguments``.
        state: The ``TrainerState`` (``num_train_epochs``, ``max_steps`` are set by then).
        epoch: The finished epoch's index.
        epoch_lr: The learning rate the epoch started with (None: read the current one).
        hook: The keyword arguments of ``on_epoch_end`` (``lr_scheduler``, ``optimizer``,
            ``train_dataloader``).
        warn: The tracker's ``warn_once``.
    """
    try:
        return _transformers_horizon(args, state, epoch, epoch_lr, hook)
    except Exception as exc:  # noqa: BLE001 - the horizon is advice, never a failure
        warn("horizon", "could not read the Trainer's LR schedule (%s)", exc)
        return None


def _transformers_horizon(
    args: Any, state: Any, epoch: int, epoch_lr: float | None, hook: dict[str, Any]
) -> Horizon:
    steps = _update_steps_per_epoch(args, state, hook.get("train_dataloader"))
    epochs = int(getattr(state, "num_train_epochs", 0) or 0)
    if not 0 < epochs <= _MAX_EPOCHS:
        epochs = math.ceil(float(args.num_train_epochs or 0))
        if args.max_steps and args.max_steps > 0 and steps:
            epochs = math.ceil(args.max_steps / steps)
    max_epochs = epochs if 0 < epochs <= _MAX_EPOCHS else None
    scheduler = hook.get("lr_scheduler")
    # accelerate wraps the scheduler under DeepSpeed/FSDP; the torch one sits inside.
    if type(scheduler).__name__ == "AcceleratedScheduler":
        scheduler = getattr(scheduler, "scheduler", scheduler)
    optimizer = getattr(scheduler, "optimizer", None) or hook.get("optimizer")
    now = first_lr(optimizer) if optimizer is not None else None
    lr = epoch_lr if epoch_lr is not None else now
    if scheduler is None:
        return Horizon(max_epochs=max_epochs, lr=lr)
    name = type(scheduler).__name__
    if reacts_to_metrics(scheduler) or not steps or max_epochs is None or now is None:
        return Horizon(max_epochs=max_epochs, lr=lr, scheduler=name, lr_known=False)
    coming = max_epochs - 1 - epoch
    if coming <= 0:
        return Horizon(max_epochs=max_epochs, lr=lr, scheduler=name)
    # Stepped after every optimizer step: it has already set the next epoch's first rate.
    later = lr_ahead(scheduler, coming - 1, steps)
    ahead = None if later is None else (now, *later)
    return Horizon(
        max_epochs=max_epochs,
        lr=lr,
        lr_ahead=tuple(ahead or ()),
        scheduler=name,
        lr_known=ahead is not None,
    )


def _update_steps_per_epoch(args: Any, state: Any, dataloader: Any) -> int | None:
    """Optimizer steps per epoch, as the Trainer counts them (batches over accumulation)."""
    accumulation = max(int(getattr(args, "gradient_accumulation_steps", 1) or 1), 1)
    try:
        batches = len(dataloader)
    except TypeError:  # an iterable dataset: only what has run says how long an epoch is
        batches = 0
    if batches > 0:
        return max(math.ceil(batches / accumulation), 1)
    done = float(getattr(state, "epoch", 0.0) or 0.0)
    if done >= 1.0 and state.global_step > 0:
        return max(round(state.global_step / done), 1)
    return None


def keras_horizon(callback: Any, epoch: int) -> Horizon | None:
    """The horizon at the end of a Keras 3 epoch, for the ``CarbonCallback`` ``callback``.

    Reads ``callback.params`` (``epochs``, ``steps``), the model's optimizer and the fit's
    callback list (found up the call stack, as the adapter finds it at train start): a
    ``ReduceLROnPlateau`` there makes the future unknown, a ``LearningRateScheduler``'s
    ``schedule(epoch, lr)`` is evaluated for the coming epochs, and an optimizer whose
    ``learning_rate`` is a ``LearningRateSchedule`` is evaluated at the coming epochs' first
    iterations.
    """
    try:
        return _keras_horizon(callback, epoch)
    except Exception as exc:  # noqa: BLE001 - the horizon is advice, never a failure
        callback.tracker.warn_once("horizon", "could not read the Keras LR schedule (%s)", exc)
        return None


def _keras_horizon(callback: Any, epoch: int) -> Horizon:
    import keras

    params = callback.params or {}
    max_epochs = int(params["epochs"]) if params.get("epochs") else None
    coming = min(max_epochs - 1 - epoch if max_epochs else 0, MAX_STEPS)
    optimizer = callback.model.optimizer
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer
    listed = find_caller_instance(keras.callbacks.CallbackList)
    others = list(listed.callbacks) if listed is not None else []
    plateau = next((c for c in others if isinstance(c, keras.callbacks.ReduceLROnPlateau)), None)
    scheduler = next(
        (c for c in others if isinstance(c, keras.callbacks.LearningRateScheduler)), None
    )
    rate = getattr(optimizer, "_learning_rate", None)
    if plateau is not None:
        lr = _keras_float(optimizer.learning_rate)
        return Horizon(max_epochs=max_epochs, lr=lr, scheduler=type(plateau).__name__,
                       lr_known=False)  # fmt: skip
    if scheduler is not None:
        lr = _keras_float(optimizer.learning_rate)
        ahead = _scheduler_ahead(scheduler.schedule, epoch, lr, coming, callback.tracker.warn_once)
        return Horizon(max_epochs=max_epochs, lr=lr, lr_ahead=tuple(ahead or ()),
                       scheduler=type(scheduler).__name__, lr_known=ahead is not None)  # fmt: skip
    if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
        return _schedule_horizon(rate, optimizer, params.get("steps"), max_epochs, coming)
    lr = _keras_float(optimizer.learning_rate)
    if callable(rate) and not isinstance(rate, keras.Variable):
        # A bare callable learning rate may depend on anything: its future cannot be read.
        return Horizon(max_epochs=max_epochs, lr=lr, scheduler=type(rate).__name__,
                       lr_known=False)  # fmt: skip
    return Horizon(max_epochs=max_epochs, lr=lr)


def _scheduler_ahead(
    schedule: Callable[..., Any], epoch: int, lr: float, coming: int, warn: Warn
) -> tuple[float, ...] | None:
    """``LearningRateScheduler``'s rate for each coming epoch, chained as it chains them.

    None (an unknown future) when the user's function fails on an epoch still to come.
    """
    out: list[float] = []
    try:
        for e in range(epoch + 1, epoch + 1 + coming):
            try:
                lr = float(schedule(e, lr))
            except TypeError:  # the one-argument form Keras also accepts
                lr = float(schedule(e))
            out.append(lr)
    except Exception as exc:  # noqa: BLE001 - a schedule we cannot evaluate has no known future
        warn("horizon-schedule", "LearningRateScheduler's schedule failed on epoch %d when "
             "read ahead (%s); its future is reported unknown", e, exc)  # fmt: skip
        return None
    return tuple(out)


def _schedule_horizon(
    schedule: Any, optimizer: Any, steps: Any, max_epochs: int | None, coming: int
) -> Horizon:
    """A ``LearningRateSchedule`` read at each coming epoch's first iteration."""
    name = type(schedule).__name__
    # The optimizer evaluates its schedule at the raw iteration count, one per batch.
    iterations = getattr(optimizer, "_iterations", None)
    iteration = int(_keras_float(iterations if iterations is not None else optimizer.iterations))
    if not steps:
        lr = _keras_float(schedule(iteration))
        return Horizon(max_epochs=max_epochs, lr=lr, scheduler=name, lr_known=False)
    steps = int(steps)
    lr = _keras_float(schedule(max(iteration - steps, 0)))
    ahead = tuple(_keras_float(schedule(iteration + k * steps)) for k in range(max(coming, 0)))
    return Horizon(max_epochs=max_epochs, lr=lr, lr_ahead=ahead, scheduler=name)


def _keras_float(value: Any) -> float:
    import keras

    return float(keras.ops.convert_to_numpy(value))
