"""What the three training adapters (Lightning, Keras, transformers) share, written once.

- ``CarbonAdapter``: the constructor arguments, their validation and their documentation
  (``document``), ``records``/``passes``/``check_pruned``/``state_dict``, the stop/prune tail
  every epoch ends with, and how a fit starts and ends (the ``FitGuard`` and SIGTERM handling
  for frameworks without an exception hook).
- ``FitGuard``: sees an exception leave a fit through the framework methods it wraps, on the
  instance, for the fit's duration.
- ``stopped_by_framework``: who asked the framework to stop when it was not us.
- ``torch_distributed_sum``: the ``Reducer`` for a ``torch.distributed`` process group.

The DDP arithmetic itself (what is summed, how ranks agree) is in
``carbon_callbacks.tracking.distributed``; adapters only bring the transport.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from types import FrameType
from typing import Any, ClassVar, TypeVar

from typing_extensions import override

from carbon_callbacks.energy.meter import Meter
from carbon_callbacks.integrations._trackers import active_runs, find_runs, publish_summary
from carbon_callbacks.integrations._trial import trial_sink
from carbon_callbacks.intensity import IntensitySpec
from carbon_callbacks.policies import Decision, Policy
from carbon_callbacks.records import EpochRecord, RunEnd, RunSummary
from carbon_callbacks.tracking import EpochTracker, LedgerSpec
from carbon_callbacks.tracking.distributed import Reducer, any_rank
from carbon_callbacks.tracking.endings import SigtermEnd, end_for_exception

__all__ = [
    "ADAPTER_ARGS",
    "CarbonAdapter",
    "FitGuard",
    "document",
    "override",
    "stopped_by_framework",
    "torch_distributed_sum",
]

ADAPTER_ARGS = """
    Args:
        intensity: gCO2e/kWh as a number, a country/zone/cloud-region code (``"FR"``,
            ``"gcp:europe-west1"``), an ``IntensitySource``, or None (environment variables,
            else the world average with a warning).
        policy: A stopping rule from ``carbon_callbacks.policies`` (or any object with
            ``decide(records)``); training stops when it says so.
        monitor: The metric to record next to each epoch's CO2e (e.g. ``"val_accuracy"``).
        trial: An Optuna trial: cumulative CO2e is reported to it every epoch; when it should
            be pruned, training stops and ``optuna.TrialPruned`` is raised from inside ``fit``
            (under DDP: training stops on every rank; call ``check_pruned()`` after ``fit``).
        prefix: Prepended to every logged key.
        pue: Data-centre power usage effectiveness (1.0 to 5.0), applied to CO2e only.
        ledger: None (default ledger), a path or database URL, a ``Ledger``, or False.
        meter: An ``EnergyMeter`` to use instead of a process-scope one built at fit start.
        metadata: Extra run metadata for the ledger (project, team...).
        measure_eval: Also measure evaluation and prediction passes run after ``fit`` (this
            callback's framework's ``validate``/``test``/``predict``/``evaluate``), each as a
            ledger run of its own whose ``kind`` is the pass and whose ``parent_run`` is the
            fit; their records are in ``passes``.

    Raises:
        TypeError, ValueError: An invalid argument, named in the message.

    Every fit is one ledger run, ended as ``completed``, ``stopped`` (by the policy, the
    framework's early stopping, Optuna pruning or the user's code), ``failed`` (with the
    exception's type and message) or ``interrupted`` (SIGINT, SIGTERM); the epoch a run ends
    inside is recorded as a ``partial`` record, so the run's energy is what the meter saw.
    A ``fit`` that continues this callback's last epoch (a second ``fit`` on the same trainer,
    ``initial_epoch``) continues the ``*_total`` keys and is linked to the run it continues
    (``parent_run``).
"""
"""The constructor's documentation, shared by every training adapter (see ``document``)."""

_T = TypeVar("_T", bound=type)


def document(cls: _T) -> _T:
    """Put ``ADAPTER_ARGS`` into ``cls``'s docstring, before its ``Example::``."""
    doc = cls.__doc__ or ""
    head, marker, example = doc.partition("    Example::")
    cls.__doc__ = head.rstrip() + "\n" + ADAPTER_ARGS + ("\n" + marker + example if marker else "")
    return cls


class FitGuard:
    """Sees an exception leave a fit through the methods it wraps, on their instances.

    Keras and transformers give a callback no hook when ``fit`` raises. The adapter wraps, for
    one fit, the framework's methods that run the fit's work (Keras' ``train_function``, the
    ``Trainer``'s ``_run_epoch``...): an exception passing through one is handed to
    ``on_exception`` and raised on unchanged. ``restore()`` puts the methods back.

    Args:
        on_exception: told of each exception, before it goes on.
    """

    def __init__(self, on_exception: Callable[[BaseException], Any]) -> None:
        self._on_exception = on_exception
        self._wrapped: list[tuple[Any, str, Any]] = []

    def watch(self, obj: Any, *names: str) -> None:
        """Wrap ``obj``'s methods ``names`` (those it has) until ``restore()``."""
        for name in names:
            fn = getattr(obj, name, None)
            if obj is None or not callable(fn):
                continue
            own = vars(obj).get(name, _ABSENT) if hasattr(obj, "__dict__") else _ABSENT
            try:
                setattr(obj, name, self._wrap(fn))
            except (AttributeError, TypeError):  # a slot or a read-only attribute
                continue
            self._wrapped.append((obj, name, own))

    def _wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        on_exception = self._on_exception

        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except BaseException as exc:
                on_exception(exc)
                raise

        return guarded

    def restore(self) -> None:
        """Put every wrapped method back as it was (an instance attribute, or the class's)."""
        while self._wrapped:
            obj, name, own = self._wrapped.pop()
            if own is _ABSENT:
                vars(obj).pop(name, None)
            else:
                setattr(obj, name, own)


_ABSENT = object()


class CarbonAdapter:
    """The behaviour every training adapter shares; the framework's ``Callback`` comes after it.

    Subclasses set ``_framework`` and call ``_begin_fit``, the tracker's epoch hooks,
    ``_after_epoch`` and ``_end_fit`` from their framework's events.
    """

    _framework: ClassVar[str] = ""
    _sigterm: ClassVar[bool] = True
    """Whether this adapter handles SIGTERM itself (Lightning's trainer does it for us)."""

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
        measure_eval: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(measure_eval, bool):
            raise TypeError(f"measure_eval must be True or False, got {measure_eval!r}")
        self.measure_eval = measure_eval
        self.tracker = EpochTracker(
            intensity=intensity,
            policy=policy,
            monitor=monitor,
            prefix=prefix,
            pue=pue,
            meter=meter,
            ledger=ledger,
            framework=self._framework,
            trial=trial_sink(trial),
            metadata=metadata,
        )
        self._guard = FitGuard(self._fit_raised)
        self._signals = SigtermEnd(self._end_fit, self.tracker.run.sections)
        self._tracker_runs: list[Any] = []
        self._init_state()

    def _init_state(self) -> None:
        """Set up the adapter's own per-instance state (after the tracker exists)."""

    @property
    def records(self) -> tuple[EpochRecord, ...]:
        """The run's epoch records so far (summed over all ranks under DDP)."""
        return self.tracker.records

    @property
    def passes(self) -> tuple[EpochRecord, ...]:
        """The records of the evaluation passes measured after ``fit`` (``measure_eval``)."""
        return tuple(self.tracker.evaluation.records)

    @property
    def end(self) -> RunEnd | None:
        """How the last fit ended (None while it runs)."""
        return self.tracker.run.end

    def check_pruned(self) -> None:
        """Raise ``optuna.TrialPruned`` if the trial was pruned: call it after ``fit``.

        In one process the callback already raised it from inside ``fit``; under DDP training
        stops on every rank and this raises it afterwards, as optuna-integration does.
        """
        self.tracker.check_pruned()

    def state_dict(self) -> dict[str, Any]:
        """The totals and records, JSON-ready (what a checkpoint keeps to resume them)."""
        return self.tracker.state_dict()

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Resume the totals saved by ``state_dict()``: the next fit continues them."""
        self.tracker.load_state_dict(state_dict)

    # -------------------------------------------------------------- the fit's life

    def _begin_fit(
        self,
        metadata: Mapping[str, Any],
        *,
        primary: bool = True,
        frame: FrameType | None = None,
        watch: Iterable[tuple[Any, Sequence[str]]] = (),
    ) -> None:
        """Start the tracker's fit; wrap ``watch``'s methods; take SIGTERM where it is ours."""
        self._guard.restore()
        self.tracker.fit_start(metadata, primary=primary, frame=frame, ender=self._end_fit)
        # transformers' MLflowCallback ends its run in on_train_end, before ours: look now.
        self._tracker_runs = find_runs(active_runs, self.tracker.warn_once) if primary else []
        for obj, names in watch:
            self._guard.watch(obj, *names)
        if self._sigterm:
            self._signals.install()

    def _fit_raised(self, exc: BaseException) -> None:
        if self.tracker.run.active:
            self._end_fit(end_for_exception(exc))
        elif self.tracker.evaluation.active:  # an evaluation pass the guard was watching
            self._guard.restore()
            self.tracker.evaluation.end(None, end_for_exception(exc))

    def _end_fit(self, end: RunEnd | None = None) -> RunSummary:
        """End the fit (``end`` None: completed, or stopped as decided) and undo ``_begin_fit``;
        the run's summary goes to the experiment trackers' runs (``_summary_runs``)."""
        self._guard.restore()
        self._signals.uninstall()
        ending = self.tracker.run.active
        summary = self.tracker.fit_end(end)
        if ending:
            publish_summary(self._summary_runs(), summary, self.tracker.warn_once)
        return summary

    def _summary_runs(self) -> list[Any]:
        """The MLflow/W&B runs that get the run's summary (those active when the fit began)."""
        return self._tracker_runs

    def _after_epoch(
        self, request_stop: Callable[[], None], reduce: Reducer | None = None
    ) -> Decision:
        """The tail of every epoch: ask the policy and the trial, stop on every rank if one
        says so, and in one process raise ``TrialPruned`` for a pruned trial.

        Args:
            request_stop: asks the framework to stop after this epoch.
            reduce: under DDP, the sum across processes (None in one process).
        """
        decision = self.tracker.decide()
        stop = any_rank(decision.stop, reduce)
        if stop and not decision.stop:
            decision = Decision(True, "another rank's stopping policy said stop")
            self.tracker.stopped(decision, "policy")
        if stop:
            request_stop()
            if self.tracker.pruned and reduce is None:
                self._end_fit()
                self.tracker.check_pruned()
        return decision


def stopped_by_framework(callbacks: Iterable[Any], what: str) -> RunEnd:
    """The ending of a fit the framework stopped early without our policy asking.

    An early-stopping callback among ``callbacks`` that says it stopped (Lightning's
    ``stopping_reason_message``, Keras' ``stopped_epoch``, transformers' patience counter)
    makes it ``stopped`` by ``early_stopping`` with that callback's reason; otherwise another
    callback or the model asked, which is the user's code: ``stopped`` by ``user``.

    Args:
        callbacks: the fit's callbacks.
        what: the flag that was set, for the reason (``"trainer.should_stop"``...).
    """
    for cb in callbacks:
        name = type(cb).__name__
        message = getattr(cb, "stopping_reason_message", None)  # Lightning >= 2.5
        if isinstance(message, str) and message:
            return RunEnd("stopped", "early_stopping", f"{name}: {message}")
        stopped_epoch = getattr(cb, "stopped_epoch", 0)
        if isinstance(stopped_epoch, int) and stopped_epoch > 0:
            monitor = getattr(cb, "monitor", "?")
            patience = getattr(cb, "patience", "?")
            return RunEnd("stopped", "early_stopping",
                          f"{name}: {monitor} did not improve in {patience} epochs; "
                          f"stopped at epoch {stopped_epoch}")
        patience = getattr(cb, "early_stopping_patience", None)
        waited = getattr(cb, "early_stopping_patience_counter", None)
        if isinstance(patience, int) and isinstance(waited, int) and waited >= patience:
            return RunEnd("stopped", "early_stopping",
                          f"{name}: no improvement in {waited} evaluations")
    return RunEnd("stopped", "user", f"{what} was set by a callback or the model")


def torch_distributed_sum() -> Reducer | None:
    """The sum across a running ``torch.distributed`` group, or None in one process."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return None
    # NCCL reduces only CUDA tensors; gloo CPU ones.
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        device = torch.device("cpu")

    def reduce(values: Sequence[float]) -> list[float]:
        tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return [float(v) for v in tensor.cpu()]

    return reduce
