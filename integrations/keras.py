"""Per-epoch energy and CO2e for Keras 3, added to the epoch ``logs`` every callback receives."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from typing_extensions import override

try:
    import keras
except ImportError as exc:  # say which extra to install, not just "No module named"
    raise ImportError(
        "carbon_callbacks.integrations.keras needs Keras 3: pip install 'carbon-callbacks[keras]'"
    ) from exc

from carbon_callbacks.energy.meter import Meter
from carbon_callbacks.integrations._lr_horizon import keras_horizon
from carbon_callbacks.integrations._trackers import active_runs, find_runs, publish_summary
from carbon_callbacks.integrations._trial import trial_sink
from carbon_callbacks.intensity import IntensitySpec
from carbon_callbacks.policies import Policy
from carbon_callbacks.records import EpochRecord
from carbon_callbacks.tracking import EpochTracker, LedgerSpec, find_caller_instance

__all__ = ["CarbonCallback"]

logger = logging.getLogger(__name__)


class CarbonCallback(keras.callbacks.Callback):
    """Adds each epoch's energy and CO2e to the epoch logs and stops on a carbon policy.

    From epoch 0 on, every epoch's ``logs`` get ``energy_kwh``, ``energy_kwh_total``, ``co2_g``,
    ``co2_g_total``, ``power_w``, ``cpu_energy_kwh``, ``gpu_energy_kwh``, ``ram_energy_kwh``,
    ``intensity_g_per_kwh`` and ``evaluation_energy_kwh`` (validation's share), each with
    ``prefix``. Keras hands one ``logs`` dict to the callbacks in list order, so keys reach
    ``CSVLogger``, ``EarlyStopping`` or ``ModelCheckpoint`` only if this callback runs before
    them: it moves itself to the front of the list when training begins (``History`` always sees
    them). A ``CSVLogger`` whose first epoch has no validation (``validation_freq=2``) adds a
    ``val_`` column for every key; it gets none for these keys, which validation never logs.
    Training stops with ``model.stop_training`` when ``policy`` says so. At the end of training
    the run's summary (totals, intensity source, methods, stop reason) goes to the MLflow run
    (tags ``carbon.*``) and the W&B run (summary ``carbon/*``) active when training began.

    Args:
        intensity: gCO2e/kWh as a number, a country/zone/cloud-region code (``"FR"``,
            ``"gcp:europe-west1"``), an ``IntensitySource``, or None (environment variables,
            else the world average with a warning).
        policy: A stopping rule from ``carbon_callbacks.policies`` (or any object with
            ``decide(records)``).
        monitor: The metric to record next to each epoch's CO2e (e.g. ``"val_accuracy"``).
        trial: An Optuna trial: cumulative CO2e is reported to it each epoch, and
            ``optuna.TrialPruned`` is raised when it should be pruned.
        prefix: Prepended to every logged key. A metric of the fit's own under one of these
            names keeps its value: that key of ours is left out, with one warning.
        pue: Data-centre power usage effectiveness (1.0 to 5.0), applied to CO2e only.
        ledger: None (default ledger), a path or database URL, a ``Ledger``, or False.
        meter: An ``EnergyMeter`` to use instead of a process-scope one built at fit start.
        metadata: Extra run metadata for the ledger (project, team...).

    Raises:
        TypeError, ValueError: An invalid argument, named in the message.

    Example::

        from carbon_callbacks.integrations.keras import CarbonCallback
        from carbon_callbacks.policies import MarginalGain

        carbon = CarbonCallback(intensity="DE", policy=MarginalGain("val_accuracy", "max",
                                                                    min_gain_per_kwh=5.0))
        history = model.fit(x, y, validation_split=0.2, epochs=50,
                            callbacks=[carbon, keras.callbacks.CSVLogger("log.csv")])
        print(history.history["co2_g_total"][-1])
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
        super().__init__()
        self.tracker = EpochTracker(
            intensity=intensity,
            policy=policy,
            monitor=monitor,
            prefix=prefix,
            pue=pue,
            meter=meter,
            ledger=ledger,
            framework="keras",
            trial=trial_sink(trial),
            metadata=metadata,
        )
        self._runs: list[Any] = []
        self._csv_loggers: list[Any] = []

    @property
    def records(self) -> tuple[EpochRecord, ...]:
        """The run's epoch records so far."""
        return self.tracker.records

    def _run_first(self) -> None:
        """Move this callback to the front of the fit's CallbackList (see the class docs)."""
        callbacks = find_caller_instance(keras.callbacks.CallbackList)
        if callbacks is None or self not in callbacks.callbacks:
            logger.warning(
                "carbon-callbacks: could not find Keras' callback list; put CarbonCallback "
                "first in callbacks=[...] so CSVLogger and EarlyStopping see its keys"
            )
            return
        # Moving ourselves from i to 0 leaves every later callback at its index, so the
        # CallbackList loop now running on_train_begin neither skips nor repeats one.
        callbacks.callbacks.remove(self)
        callbacks.callbacks.insert(0, self)
        self._csv_loggers = [
            cb for cb in callbacks.callbacks if isinstance(cb, keras.callbacks.CSVLogger)
        ]

    @override
    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        self._csv_loggers = []
        self._run_first()
        params = self.params or {}
        metadata = {
            "model": getattr(self.model, "name", type(self.model).__name__),
            "hyperparameters": {"epochs": params.get("epochs"), "steps": params.get("steps")},
            "backend": keras.backend.backend(),
        }
        self.tracker.fit_start(metadata)
        self._runs = find_runs(active_runs, self.tracker.warn_once)

    @override
    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self.tracker.epoch_start(epoch)

    @override
    def on_test_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        self.tracker.eval_start()

    @override
    def on_test_end(self, logs: Mapping[str, Any] | None = None) -> None:
        self.tracker.eval_end()

    @override
    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        horizon = keras_horizon(self, epoch) if self.tracker.policy is not None else None
        self.tracker.epoch_end(epoch, logs, horizon=horizon)
        if logs is not None:
            logs.update(self.tracker.log_dict(theirs=logs))  # a metric of the model's own wins
            self._choose_csv_columns(logs)
        if self.tracker.decide().stop:
            self.model.stop_training = True
            if self.tracker.pruned:  # TrialPruned ends fit: no on_train_end follows
                publish_summary(self._runs, self.tracker.fit_end(), self.tracker.warn_once)
                self.tracker.check_pruned()

    def _choose_csv_columns(self, logs: Mapping[str, Any]) -> None:
        """Pick the columns of a ``CSVLogger`` about to choose them, as it would, less the
        ``val_`` twins of our keys.

        ``CSVLogger`` fixes its columns at its first epoch end: the keys of that epoch's logs
        and, if none starts with ``val_``, a ``val_`` twin of each, for the validations to come.
        """
        if any(k.startswith("val_") for k in logs):
            return
        own = set(self.tracker.keys)
        for csv_logger in self._csv_loggers:
            if getattr(csv_logger, "keys", ()) is None:
                keys = sorted(logs)
                csv_logger.keys = keys + [f"val_{k}" for k in keys if k not in own]

    @override
    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        publish_summary(self._runs, self.tracker.fit_end(), self.tracker.warn_once)
