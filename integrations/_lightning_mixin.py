"""The Lightning callback's behaviour, shared by the ``lightning.pytorch`` and ``pytorch_lightning``
namespaces (their ``Callback`` base classes are different classes, so each namespace gets its own
``CarbonCallback`` built from this mixin and its own base).

It imports neither namespace: it only talks to the ``trainer``/``pl_module`` objects it is given.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from typing_extensions import override

from carbon_callbacks.integrations._common import CarbonAdapter, stopped_by_framework
from carbon_callbacks.integrations._lr_schedule import first_lr, lr_ahead, reacts_to_metrics
from carbon_callbacks.integrations._trackers import find_runs, logger_runs
from carbon_callbacks.records import Horizon, RunEnd
from carbon_callbacks.tracking.endings import end_for_exception, find_frame

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    # Type-checked as a lightning.pytorch Callback (pytorch_lightning's has the same hooks), so
    # @override checks each hook's name and signature. At run time the base is object: each
    # namespace's CarbonCallback adds its own Callback after this mixin.
    from lightning.pytorch import Callback as _CallbackBase
else:
    _CallbackBase = object


def _json_safe(values: Mapping[str, Any]) -> dict[str, Any]:
    """Hyperparameters that survive JSON (others as their repr), for the ledger."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        try:
            json.dumps(value)
            out[str(key)] = value
        except (TypeError, ValueError):
            out[str(key)] = repr(value)
    return out


def _fn(trainer: Any) -> str:
    """What the trainer is running: "fit", "validate", "test" or "predict"."""
    fn = getattr(getattr(trainer, "state", None), "fn", None)
    return str(getattr(fn, "value", fn) or "")


class LightningCarbonMixin(CarbonAdapter, _CallbackBase):
    """Per-epoch energy and CO2e logged with Lightning's loggers and a carbon-aware stop.

    See ``carbon_callbacks.integrations.lightning.CarbonCallback`` for the user documentation.
    """

    _framework = "lightning"
    _sigterm = False  # the Trainer turns SIGTERM into SIGTERMException, seen by on_exception

    @property
    @override
    def state_key(self) -> str:
        """Where a checkpoint keeps this callback's totals: two callbacks with different
        ``prefix`` or ``monitor`` in one trainer keep theirs apart (as ``EarlyStopping`` does)."""
        return self._generate_state_key(prefix=self.tracker.prefix, monitor=self.tracker.monitor)

    # -------------------------------------------------------------- fit

    @override
    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        hparams = getattr(pl_module, "hparams", None) or {}
        metadata = {
            "hyperparameters": _json_safe(dict(hparams)),
            "model": type(pl_module).__name__,
            "max_epochs": trainer.max_epochs,
            "world_size": trainer.world_size,
        }
        frame = find_frame(type(trainer))  # Trainer._run: on the stack for the whole fit
        self._begin_fit(metadata, primary=trainer.is_global_zero, frame=frame)
        self._trainer = trainer

    def _summary_runs(self) -> list[Any]:
        """The MLflow and W&B runs behind the trainer's loggers (rank 0 only)."""
        trainer = getattr(self, "_trainer", None)
        if trainer is None or not trainer.is_global_zero:
            return []
        loggers = list(getattr(trainer, "loggers", None) or [])
        return find_runs(lambda: logger_runs(loggers), self.tracker.warn_once)

    @override
    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self.tracker.epoch_start(trainer.current_epoch)
        # Epoch-interval schedulers have stepped by the epoch's end: keep the LR it trained with.
        optimizers = getattr(trainer, "optimizers", None) or []
        self._epoch_lr = first_lr(optimizers[0]) if optimizers else None

    @override
    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        reduce = self._reducer(trainer) if trainer.world_size > 1 else None
        horizon = self._horizon(trainer) if self.tracker.policy is not None else None
        self.tracker.epoch_end(
            trainer.current_epoch, trainer.callback_metrics, reduce=reduce, horizon=horizon
        )
        self._publish(trainer, self.tracker.log_dict())

        def request_stop() -> None:
            trainer.should_stop = True

        self._after_epoch(request_stop, reduce)

    @override
    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self._end_fit(self._ending(trainer))

    def _ending(self, trainer: Any) -> RunEnd | None:
        """Stopped by the framework when ``should_stop`` ended the fit before its limits."""
        if self.tracker.stop_decision is not None or not trainer.should_stop:
            return None
        max_steps = trainer.max_steps if trainer.max_steps not in (None, -1) else None
        max_epochs = trainer.max_epochs if trainer.max_epochs not in (None, -1) else None
        if max_steps is not None and trainer.global_step >= max_steps:
            return None
        if max_epochs is not None and trainer.current_epoch >= max_epochs:
            return None
        return stopped_by_framework(trainer.callbacks, "trainer.should_stop")

    @override
    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if self.tracker.run.active:
            self._end_fit(end_for_exception(exception))
        self.tracker.evaluation.end(None, end_for_exception(exception))

    # -------------------------------------------------------------- evaluation

    @override
    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        if _fn(trainer) == "fit":
            self.tracker.eval_start()
        elif self.measure_eval:
            self.tracker.evaluation.start("validate", primary=trainer.is_global_zero)

    @override
    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if _fn(trainer) == "fit":
            self.tracker.eval_end()
        else:
            self.tracker.evaluation.end(trainer.callback_metrics)

    @override
    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        if self.measure_eval:
            self.tracker.evaluation.start("test", primary=trainer.is_global_zero)

    @override
    def on_test_end(self, trainer: Any, pl_module: Any) -> None:
        self.tracker.evaluation.end(trainer.callback_metrics)

    @override
    def on_predict_start(self, trainer: Any, pl_module: Any) -> None:
        if self.measure_eval:
            self.tracker.evaluation.start("predict", primary=trainer.is_global_zero)

    @override
    def on_predict_end(self, trainer: Any, pl_module: Any) -> None:
        self.tracker.evaluation.end(None)

    # -------------------------------------------------------------- checkpoints

    @override
    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        # Checkpoints written before the state key named prefix and monitor used the class name.
        states = checkpoint.get("callbacks") or {}
        legacy = type(self).__qualname__
        if self.state_key not in states and isinstance(states.get(legacy), Mapping):
            self.load_state_dict(states[legacy])

    # -------------------------------------------------------------- policy

    def _horizon(self, trainer: Any) -> Horizon | None:
        """max_epochs and the first scheduler's coming learning rates, for the policy.

        Read only when a policy is set (stepping a scheduler's copy costs up to ~20 ms).
        """
        try:
            max_epochs = trainer.max_epochs if (trainer.max_epochs or 0) > 0 else None
            configs = list(getattr(trainer, "lr_scheduler_configs", None) or [])
            optimizers = getattr(trainer, "optimizers", None) or []
            now = first_lr(optimizers[0]) if optimizers else None
            lr = getattr(self, "_epoch_lr", None) or now
            if not configs:
                return Horizon(max_epochs=max_epochs, lr=lr)
            config = configs[0]
            scheduler = config.scheduler
            name = type(scheduler).__name__
            remaining = (max_epochs - 1 - trainer.current_epoch) if max_epochs else 0
            if reacts_to_metrics(scheduler):
                return Horizon(max_epochs=max_epochs, lr=lr, scheduler=name, lr_known=False)
            frequency = max(int(getattr(config, "frequency", 1) or 1), 1)
            if getattr(config, "interval", "epoch") == "step":
                batches = int(getattr(trainer, "num_training_batches", 0) or 0)
                if batches <= 0 or batches == float("inf"):
                    return Horizon(max_epochs=max_epochs, lr=lr, scheduler=name, lr_known=False)
                ahead = lr_ahead(scheduler, remaining - 1, max(batches // frequency, 1))
                # The per-step scheduler already set the next epoch's first learning rate.
                ahead = None if ahead is None or now is None else (now, *ahead)
            elif frequency == 1:
                # The epoch's scheduler step has happened: ``now`` is the next epoch's LR.
                ahead = lr_ahead(scheduler, remaining - 1)
                ahead = None if ahead is None or now is None else (now, *ahead)
            else:
                ahead = None  # a step every few epochs: not simulated
            if remaining <= 0:
                ahead = ()
            return Horizon(
                max_epochs=max_epochs,
                lr=lr,
                lr_ahead=tuple(ahead or ()),
                scheduler=name,
                lr_known=ahead is not None,
            )
        except Exception as exc:  # noqa: BLE001 - the horizon is advice, never a failure
            self.tracker.warn_once("horizon", "could not read the LR schedule (%s)", exc)
            return None

    # -------------------------------------------------------------- logging

    def _publish(self, trainer: Any, values: Mapping[str, float]) -> None:
        """Put the epoch's keys in ``callback_metrics``, ``logged_metrics`` and every logger.

        This is what ``pl_module.log(..., on_epoch=True)`` ends in, without its cost: a key
        logged that way joins the training loop's result collection, which Lightning scans after
        every batch; with ten keys a fit of 1 ms batches ran about 3% slower when we measured it
        (and 2.5 ms per epoch went in the ``log`` calls themselves).
        Lightning's own ``LearningRateMonitor`` and ``DeviceStatsMonitor`` also log through
        ``logger.log_metrics``. The tracker already summed the ranks under DDP, so every rank
        holds the same values (``EarlyStopping`` agrees across ranks) and the loggers, which
        write on rank 0 only, get one row per epoch at the step of Lightning's own epoch row.
        """
        if not values:
            return
        import torch

        tensors = {k: torch.tensor(float(v), dtype=torch.float64) for k, v in values.items()}
        trainer.callback_metrics.update(tensors)
        trainer.logged_metrics.update(tensors)
        loggers = list(getattr(trainer, "loggers", None) or [])
        if not loggers:
            return
        row: dict[str, float] = {k: float(v) for k, v in values.items()}
        row["epoch"] = trainer.current_epoch
        # Lightning logs epoch-end metrics at the step of the epoch's last batch (its fit loop
        # steps _batches_that_stepped back by one for that row).
        stepped = getattr(trainer.fit_loop.epoch_loop, "_batches_that_stepped", None)
        step = max((stepped if isinstance(stepped, int) else trainer.global_step) - 1, 0)
        for lg in loggers:
            try:
                lg.log_metrics(row, step=step)
                lg.save()
            except Exception as exc:  # noqa: BLE001 - a failing logger must not end training
                self.tracker.warn_once(
                    "logger", "%s could not log the carbon keys (%s)", type(lg).__name__, exc
                )

    @staticmethod
    def _reducer(trainer: Any) -> Any:
        """The sum across ranks through the trainer's strategy (whatever its backend)."""

        def reduce(values: Any) -> list[float]:
            import torch

            device = trainer.strategy.root_device
            tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
            summed = trainer.strategy.reduce(tensor, reduce_op="sum")
            return [float(v) for v in summed.cpu()]

        return reduce


# Lightning calls every hook of every callback at every batch, overridden or not, each through
# its profiler's context manager: about 1.5 us a call, six calls a training batch, as much as
# all our own work in a fit of 1 ms batches. Its hook runner skips attributes that are not
# callable (``if callable(fn)`` in trainer/call.py, in both namespaces from 2.4.0 to 2.6.6 at
# least), so the per-batch hooks this callback does not use are None. (A subclass may still
# define them; it cannot call super() for them.) They are set after the class body because a
# None where Callback has a method is, to a type checker, a broken override.
_UNUSED_BATCH_HOOKS = (
    "on_train_batch_start",
    "on_train_batch_end",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
    "on_validation_batch_start",
    "on_validation_batch_end",
    "on_test_batch_start",
    "on_test_batch_end",
    "on_predict_batch_start",
    "on_predict_batch_end",
)
for _hook in _UNUSED_BATCH_HOOKS:
    setattr(LightningCarbonMixin, _hook, None)
