"""Per-epoch energy and CO2e for the transformers ``Trainer``, logged through ``Trainer.log``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

try:
    import transformers
    from transformers import TrainerCallback
except ImportError as exc:  # say which extra to install, not just "No module named"
    raise ImportError(
        "carbon_callbacks.integrations.transformers needs transformers: "
        "pip install 'carbon-callbacks[transformers]'"
    ) from exc

from carbon_callbacks.integrations._common import (
    CarbonAdapter,
    document,
    override,
    stopped_by_framework,
    torch_distributed_sum,
)
from carbon_callbacks.integrations._lr_horizon import transformers_horizon
from carbon_callbacks.integrations._lr_schedule import first_lr
from carbon_callbacks.records import Horizon, RunEnd
from carbon_callbacks.tracking import find_caller_instance, scalar_metrics
from carbon_callbacks.tracking.endings import end_for_exception, find_frame

__all__ = ["CarbonCallback", "STATE_KEY"]

logger = logging.getLogger(__name__)

STATE_KEY = "carbon_callbacks"
"""Key of our totals in ``TrainerState.stateful_callbacks`` (saved in ``trainer_state.json``).

Not a class name, so ``restore_callback_states_from_checkpoint`` leaves our callback alone.
"""


# What a Trainer runs per epoch (data, steps, callbacks, evaluation, saving): an exception that
# leaves train() passes through it, and transformers has no exception event for callbacks.
# ``training_step`` for versions without ``_run_epoch``.
_TRAINER_WORK = ("_run_epoch",)
_TRAINER_WORK_FALLBACK = ("training_step",)


@document
class CarbonCallback(CarbonAdapter, TrainerCallback):
    """Logs each epoch's energy and CO2e like any Trainer metric and stops on a carbon policy.

    Once per epoch (after the epoch-end evaluation when there is one, so the record holds the
    eval metrics and validation's energy) it emits one log entry with ``energy_kwh``,
    ``energy_kwh_total``, ``co2_g``, ``co2_g_total``, ``power_w``, ``cpu_energy_kwh``,
    ``gpu_energy_kwh``, ``ram_energy_kwh``, ``intensity_g_per_kwh`` and ``eval_energy_kwh``
    (each with ``prefix``) through ``Trainer.log``, so they land in ``state.log_history`` and in
    every ``report_to`` integration (TensorBoard as ``train/co2_g``, W&B, MLflow). A user
    ``on_log`` that edits ``logs`` reaches neither, because ``Trainer.log`` copies the entry into
    the history and the integrations run first. Training stops with
    ``control.should_training_stop`` when ``policy`` says so. The totals are kept in
    ``TrainerState.stateful_callbacks`` (inside every checkpoint), so
    ``train(resume_from_checkpoint=...)`` continues them. At the end of training the run's
    summary (totals, intensity source, methods, how it ended) goes to the MLflow run (tags
    ``carbon.*``) and the W&B run (summary ``carbon/*``) active when training began, such as
    those ``report_to=["mlflow", "wandb"]`` opened. transformers has no event for an
    exception: for the fit's duration this callback wraps the Trainer's epoch on its instance,
    so an exception ends the run as failed (or interrupted) before it leaves ``train()``; SIGTERM
    records the run as interrupted, then ends the process as it would have without us. With
    ``measure_eval`` the Trainer's ``evaluate()`` and ``predict()`` outside training are
    measured too (pass the callback to ``Trainer(callbacks=...)`` so it sees the Trainer).

    Example::

        from carbon_callbacks.integrations.transformers import CarbonCallback
        from carbon_callbacks.policies import CarbonBudget

        carbon = CarbonCallback(intensity="gcp:europe-west1", policy=CarbonBudget(max_co2_g=200))
        trainer = Trainer(model, args, train_dataset=train, eval_dataset=val, callbacks=[carbon])
        trainer.train()
        print(carbon.records[-1].co2_g_total, trainer.state.log_history[-2]["co2_g"])

    Evaluation at epoch end is measured separately (``eval_energy_kwh``); evaluations in the
    middle of an epoch (``eval_strategy="steps"``) are part of that epoch's energy.
    """

    _framework = "transformers"

    def _init_state(self) -> None:
        self._trainer: Any = None
        self._horizon: Horizon | None = None
        self._epoch_lr: float | None = None
        self._metrics: dict[str, float] = {}
        self._epoch = 0
        self._eval_pending = False
        self._emitting = False

    # -------------------------------------------------------------- events

    @override
    def on_init_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._trainer = find_caller_instance(transformers.Trainer)
        if self.measure_eval:
            self._measure_passes(self._trainer)

    @override
    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # The Trainer does not hand itself to callbacks; its log() is the one channel that
        # reaches both log_history and the report_to integrations.
        self._trainer = find_caller_instance(transformers.Trainer) or self._trainer
        if self._trainer is None:
            logger.warning(
                "carbon-callbacks: the Trainer calling CarbonCallback was not found; energy "
                "keys go to state.log_history only, not to the report_to integrations"
            )
        saved = (state.stateful_callbacks or {}).get(STATE_KEY)
        if saved and state.global_step > 0:
            self.tracker.load_state_dict(saved)
        self._metrics = {}
        self._eval_pending = False
        metadata = {
            "model": type(kwargs.get("model")).__name__,
            "hyperparameters": {
                "learning_rate": args.learning_rate,
                "num_train_epochs": args.num_train_epochs,
                "per_device_train_batch_size": args.per_device_train_batch_size,
                "seed": args.seed,
            },
        }
        trainer = self._trainer
        work = _TRAINER_WORK if hasattr(trainer, _TRAINER_WORK[0]) else _TRAINER_WORK_FALLBACK
        self._begin_fit(
            metadata,
            primary=state.is_world_process_zero,
            frame=find_frame(transformers.Trainer),  # train(): on the stack until it returns
            watch=[(trainer, work)] if trainer is not None else [],
        )
        if self.measure_eval:
            self._measure_passes(trainer)

    @override
    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._eval_pending:  # the announced evaluation never reported: close the epoch
            self._finish_epoch(args, state, control)
        self._epoch = int(round(state.epoch or 0.0))
        self._epoch_lr = first_lr(kwargs.get("optimizer"))
        self.tracker.epoch_start(self._epoch)

    @override
    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        # DefaultFlowCallback (always first in the list) has just decided whether an evaluation
        # follows; if so the epoch closes when it ends, with its metrics and energy.
        if self.tracker.policy is not None:  # the schedule ahead, for the policy
            self._horizon = transformers_horizon(
                args, state, self._epoch, self._epoch_lr, kwargs, self.tracker.warn_once
            )
        if control.should_evaluate:
            self._eval_pending = True
            self.tracker.eval_start()
            return control
        return self._finish_epoch(args, state, control)

    @override
    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        self._metrics.update(scalar_metrics(metrics))
        if self._eval_pending:
            self.tracker.eval_end()
            return self._finish_epoch(args, state, control)
        return control

    @override
    def on_log(
        self, args: Any, state: Any, control: Any, logs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not self._emitting:
            self._metrics.update(scalar_metrics(logs))

    @override
    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._eval_pending:  # an evaluation was announced but never reported
            self._finish_epoch(args, state, control)
        end: RunEnd | None = None
        if (
            self.tracker.stop_decision is None
            and control.should_training_stop
            and 0 < state.max_steps
            and state.global_step < state.max_steps
        ):
            handler = getattr(self._trainer, "callback_handler", None)
            end = stopped_by_framework(getattr(handler, "callbacks", ()),
                                       "control.should_training_stop")
        self._end_fit(end)

    # -------------------------------------------------------------- internals

    def _finish_epoch(self, args: Any, state: Any, control: Any) -> Any:
        self._eval_pending = False
        metrics = {k: v for k, v in self._metrics.items() if k not in ("epoch", "step")}
        reduce = torch_distributed_sum()
        self.tracker.epoch_end(self._epoch, metrics, reduce=reduce, horizon=self._horizon)
        self._emit(state, self.tracker.log_dict())
        # Saved with every checkpoint from here on; read back in on_train_begin when resuming.
        state.stateful_callbacks[STATE_KEY] = self.tracker.state_dict()

        def request_stop() -> None:
            control.should_training_stop = True
            if self._trainer is not None:
                self._trainer.control.should_training_stop = True

        self._after_epoch(request_stop, reduce)
        return control

    def _measure_passes(self, trainer: Any) -> None:
        """Wrap the Trainer's ``evaluate``/``predict`` so a call outside training is a pass."""
        if trainer is None or getattr(trainer, "_carbon_passes", None) is self:
            return
        trainer._carbon_passes = self
        for kind, name in (("evaluate", "evaluate"), ("predict", "predict")):
            setattr(trainer, name, self._measured(kind, getattr(trainer, name), trainer))

    def _measured(self, kind: str, fn: Callable[..., Any], trainer: Any) -> Callable[..., Any]:
        def measured(*args: Any, **kwargs: Any) -> Any:
            if self.tracker.run.active:  # evaluation inside training: part of its epoch
                return fn(*args, **kwargs)
            self.tracker.evaluation.start(kind, primary=trainer.is_world_process_zero())
            try:
                out = fn(*args, **kwargs)
            except BaseException as exc:
                self.tracker.evaluation.end(None, end_for_exception(exc))
                raise
            metrics = out if isinstance(out, Mapping) else getattr(out, "metrics", None)
            self.tracker.evaluation.end(metrics)
            return out

        return measured

    def _emit(self, state: Any, values: dict[str, float]) -> None:
        if self._trainer is None:
            state.log_history.append({**values, "epoch": state.epoch, "step": state.global_step})
            return
        self._emitting = True
        try:
            self._trainer.log(dict(values))
        except Exception as exc:  # noqa: BLE001 - a reporter failing must not end training
            logger.warning("carbon-callbacks: logging energy keys failed (%s)", exc)
        finally:
            self._emitting = False

