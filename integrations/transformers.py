"""Per-epoch energy and CO2e for the transformers ``Trainer``, logged through ``Trainer.log``."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from typing_extensions import override

try:
    import transformers
    from transformers import TrainerCallback
except ImportError as exc:  # say which extra to install, not just "No module named"
    raise ImportError(
        "carbon_callbacks.integrations.transformers needs transformers: "
        "pip install 'carbon-callbacks[transformers]'"
    ) from exc

from carbon_callbacks.energy.meter import Meter
from carbon_callbacks.integrations._lr_horizon import transformers_horizon
from carbon_callbacks.integrations._lr_schedule import first_lr
from carbon_callbacks.integrations._trackers import active_runs, find_runs, publish_summary
from carbon_callbacks.integrations._trial import trial_sink
from carbon_callbacks.intensity import IntensitySpec
from carbon_callbacks.policies import Policy
from carbon_callbacks.records import EpochRecord, Horizon
from carbon_callbacks.tracking import EpochTracker, LedgerSpec, find_caller_instance, scalar_metrics

__all__ = ["CarbonCallback", "STATE_KEY"]

logger = logging.getLogger(__name__)

STATE_KEY = "carbon_callbacks"
"""Key of our totals in ``TrainerState.stateful_callbacks`` (saved in ``trainer_state.json``).

Not a class name, so ``restore_callback_states_from_checkpoint`` leaves our callback alone.
"""


class CarbonCallback(TrainerCallback):
    """Logs each epoch's energy and CO2e like any Trainer metric and stops on a carbon policy.

    Once per epoch it emits one log entry with ``energy_kwh``, ``energy_kwh_total``, ``co2_g``,
    ``co2_g_total``, ``power_w``, ``cpu_energy_kwh``, ``gpu_energy_kwh``, ``ram_energy_kwh``,
    ``intensity_g_per_kwh`` and ``evaluation_energy_kwh`` (each with ``prefix``) through
    ``Trainer.log``, so they land in ``state.log_history`` and in every ``report_to``
    integration (TensorBoard as ``train/co2_g``, W&B, MLflow). The entry follows the Trainer's
    own epoch-end log and evaluation, when they happen, so the epoch's record holds that epoch's
    ``loss`` and eval metrics (and only that epoch's: a metric not logged in an epoch is absent
    from its record) and evaluation's energy; the Trainer's own entries are left as they would
    be without this callback. A user ``on_log`` that edits ``logs`` reaches neither the history
    nor the integrations, because ``Trainer.log`` copies the entry into the history and the
    integrations run first. Training stops with
    ``control.should_training_stop`` when ``policy`` says so. The totals are kept in
    ``TrainerState.stateful_callbacks`` (inside every checkpoint), so
    ``train(resume_from_checkpoint=...)`` continues them. At the end of training the run's
    summary (totals, intensity source, methods, stop reason) goes to the MLflow run (tags
    ``carbon.*``) and the W&B run (summary ``carbon/*``) active when training began, such as
    those ``report_to=["mlflow", "wandb"]`` opened.

    Args:
        intensity: gCO2e/kWh as a number, a country/zone/cloud-region code (``"FR"``,
            ``"gcp:europe-west1"``), an ``IntensitySource``, or None (environment variables,
            else the world average with a warning).
        policy: A stopping rule from ``carbon_callbacks.policies`` (or any object with
            ``decide(records)``).
        monitor: The metric to record next to each epoch's CO2e (e.g. ``"eval_loss"``).
        trial: An Optuna trial: cumulative CO2e is reported each epoch, and
            ``optuna.TrialPruned`` is raised when it should be pruned.
        prefix: Prepended to every logged key.
        pue: Data-centre power usage effectiveness (1.0 to 5.0), applied to CO2e only.
        ledger: None (default ledger), a path or database URL, a ``Ledger``, or False.
        meter: An ``EnergyMeter`` to use instead of a process-scope one built at train start.
        metadata: Extra run metadata for the ledger (project, team...).

    Raises:
        TypeError, ValueError: An invalid argument, named in the message.

    Example::

        from carbon_callbacks.integrations.transformers import CarbonCallback
        from carbon_callbacks.policies import CarbonBudget

        carbon = CarbonCallback(intensity="gcp:europe-west1", policy=CarbonBudget(max_co2_g=200))
        trainer = Trainer(model, args, train_dataset=train, eval_dataset=val, callbacks=[carbon])
        trainer.train()
        print(carbon.records[-1].co2_g_total, trainer.state.log_history[-2]["co2_g"])

    Evaluation at epoch end is measured separately (``evaluation_energy_kwh``, not
    ``eval_...``, which the integrations would file under ``eval/`` as an evaluation metric);
    evaluations in the middle of an epoch (``eval_strategy="steps"``) are part of that epoch's
    energy.
    """

    def __init__(
        self,
        *,
        intensity: IntensitySpec = None,
        policy: Policy | None = None,
        monitor: str | None = None,
        trial: Any = None,
        prefix: str = "",
        pue: float = 1.0,
        ledger: LedgerSpec = None,
        meter: Meter | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.tracker = EpochTracker(
            intensity=intensity,
            policy=policy,
            monitor=monitor,
            prefix=prefix,
            pue=pue,
            meter=meter,
            ledger=ledger,
            framework="transformers",
            trial=trial_sink(trial),
            metadata=metadata,
        )
        self._trainer: Any = None
        self._metrics: dict[str, float] = {}
        self._epoch = 0
        self._awaiting: set[str] = set()
        self._evaluated = False
        self._emitting = False
        self._runs: list[Any] = []
        self._epoch_lr: float | None = None
        self._horizon: Horizon | None = None

    @property
    def records(self) -> tuple[EpochRecord, ...]:
        """The run's epoch records so far."""
        return self.tracker.records

    # -------------------------------------------------------------- events

    @override
    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # The Trainer does not hand itself to callbacks; its log() is the one channel that
        # reaches both log_history and the report_to integrations.
        self._trainer = find_caller_instance(transformers.Trainer)
        if self._trainer is None:
            logger.warning(
                "carbon-callbacks: the Trainer calling CarbonCallback was not found; energy "
                "keys go to state.log_history only, not to the report_to integrations"
            )
        saved = (state.stateful_callbacks or {}).get(STATE_KEY)
        if saved and state.global_step > 0:
            self.tracker.load_state_dict(saved)
        self._metrics = {}
        self._awaiting = set()
        self._evaluated = False
        metadata = {
            "model": type(kwargs.get("model")).__name__,
            "hyperparameters": {
                "learning_rate": args.learning_rate,
                "num_train_epochs": args.num_train_epochs,
                "per_device_train_batch_size": args.per_device_train_batch_size,
                "seed": args.seed,
            },
        }
        self.tracker.fit_start(metadata, primary=state.is_world_process_zero)
        # The report_to integrations ran their on_train_begin first, so their runs are active.
        primary = state.is_world_process_zero
        self._runs = find_runs(active_runs, self.tracker.warn_once) if primary else []

    @override
    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._awaiting:  # what the last epoch's end announced never came: close it now
            self._finish_epoch(args, state, control)
        self._epoch = int(round(state.epoch or 0.0))
        self._epoch_lr = first_lr(kwargs.get("optimizer"))
        self.tracker.epoch_start(self._epoch)

    @override
    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        # DefaultFlowCallback (always first in the list) has just decided what follows the
        # epoch: the Trainer's own log (loss, grad_norm, learning_rate), then an evaluation.
        # The epoch closes after the last of them, so its record holds what they produce.
        if self.tracker.policy is not None:  # the schedule ahead, for the policy
            self._horizon = transformers_horizon(
                args, state, self._epoch, self._epoch_lr, kwargs, self.tracker.warn_once
            )
        self._awaiting = set()
        if control.should_log and self._trainer_logs_now(state):
            self._awaiting.add("log")
        if control.should_evaluate:
            self._awaiting.add("evaluate")
            self.tracker.eval_start()
        if self._awaiting:
            return control
        return self._finish_epoch(args, state, control)

    @override
    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        self._metrics.update(scalar_metrics(metrics))
        self._evaluated = True
        if "evaluate" in self._awaiting:  # the Trainer has logged before it evaluates
            self.tracker.eval_end()
            return self._finish_epoch(args, state, control)
        return control

    @override
    def on_log(
        self, args: Any, state: Any, control: Any, logs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        if self._emitting:
            return control
        self._metrics.update(scalar_metrics(logs))
        if "log" in self._awaiting:  # the Trainer's epoch-end log: the first one after it
            self._awaiting.discard("log")
            if not self._awaiting:
                return self._finish_epoch(args, state, control)
        return control

    @override
    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if "log" in self._awaiting and "evaluate" not in self._awaiting:
            # The announced log never came (it always precedes the save): close the epoch.
            return self._finish_epoch(args, state, control)
        return control

    @override
    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._awaiting:  # announced but never came
            self._finish_epoch(args, state, control)
        publish_summary(self._runs, self.tracker.fit_end(), self.tracker.warn_once)

    # -------------------------------------------------------------- internals

    def _trainer_logs_now(self, state: Any) -> bool:
        """Whether the Trainer's epoch-end log will happen (it skips it when no step ran since
        its last log, as after ``logging_first_step`` in a one-step epoch)."""
        last = getattr(self._trainer, "_globalstep_last_logged", None)
        return not isinstance(last, int) or state.global_step > last

    def _finish_epoch(self, args: Any, state: Any, control: Any) -> Any:
        if "evaluate" in self._awaiting:  # an evaluation announced but never reported
            self.tracker.eval_end()
        self._awaiting = set()
        metrics = {k: v for k, v in self._metrics.items() if k not in ("epoch", "step")}
        # Only what this epoch logged: a key the next epoch does not log must not carry over.
        self._metrics = {}
        evaluated, self._evaluated = self._evaluated, False
        self.tracker.epoch_end(
            self._epoch,
            metrics,
            reduce=_distributed_sum(),
            horizon=self._horizon,
            evaluated=evaluated,
        )
        self._emit(state, self.tracker.log_dict())
        # Saved with every checkpoint from here on; read back in on_train_begin when resuming.
        state.stateful_callbacks[STATE_KEY] = self.tracker.state_dict()
        decision = self.tracker.decide()
        if _distributed_any(decision.stop) and not decision.stop:
            from carbon_callbacks.policies import Decision

            decision = Decision(True, "another rank's stopping policy said stop")
            self.tracker.stopped(decision)
        if decision.stop:
            control.should_training_stop = True
            if self._trainer is not None:
                self._trainer.control.should_training_stop = True
            if self.tracker.pruned:  # TrialPruned ends fit: no on_train_end follows
                publish_summary(self._runs, self.tracker.fit_end(), self.tracker.warn_once)
                self.tracker.check_pruned()
        return control

    def _emit(self, state: Any, values: dict[str, float]) -> None:
        if self._trainer is None:
            state.log_history.append({**values, "epoch": state.epoch, "step": state.global_step})
            return
        # Trainer.log ends in CallbackHandler.on_log, which clears control.should_log: the
        # Trainer's own decision to log is kept, whatever it was.
        control = self._trainer.control
        should_log = control.should_log
        self._emitting = True
        try:
            self._trainer.log(dict(values))
        except Exception as exc:  # noqa: BLE001 - a reporter failing must not end training
            self.tracker.warn_once("log", "logging the energy keys failed (%s)", exc)
        finally:
            self._emitting = False
            self._trainer.control.should_log = should_log


def _distributed() -> Any:
    """``torch.distributed`` when a multi-process group is running, else None."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist
    return None


def _device(dist: Any) -> Any:
    """NCCL reduces only CUDA tensors; gloo CPU ones."""
    import torch

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _distributed_sum() -> Any:
    """A reducer summing per-rank quantities across processes, or None in one process."""
    dist = _distributed()
    if dist is None:
        return None

    def reduce(values: Sequence[float]) -> list[float]:
        import torch

        tensor = torch.tensor(list(values), dtype=torch.float64, device=_device(dist))
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.cpu().tolist()

    return reduce


def _distributed_any(flag: bool) -> bool:
    """True if any process says ``flag`` (every rank must stop at the same epoch)."""
    dist = _distributed()
    if dist is None:
        return flag
    import torch

    tensor = torch.tensor([1.0 if flag else 0.0], dtype=torch.float64, device=_device(dist))
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item() > 0)
