"""Per-epoch energy and CO2e for Keras 3, added to the epoch ``logs`` every callback receives."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

try:
    import keras
except ImportError as exc:  # say which extra to install, not just "No module named"
    raise ImportError(
        "carbon_callbacks.integrations.keras needs Keras 3: pip install 'carbon-callbacks[keras]'"
    ) from exc

from carbon_callbacks.integrations._common import (
    CarbonAdapter,
    document,
    override,
    stopped_by_framework,
)
from carbon_callbacks.integrations._lr_horizon import keras_horizon
from carbon_callbacks.records import RunEnd
from carbon_callbacks.tracking import find_caller_instance
from carbon_callbacks.tracking.endings import find_frame

__all__ = ["BACKUP_FILE", "CarbonCallback"]

logger = logging.getLogger(__name__)

BACKUP_FILE = "carbon_callbacks.json"
"""Our totals, kept in a ``BackupAndRestore`` callback's ``backup_dir`` next to its weights."""

# What a Keras fit runs that an exception can leave through: the step, the validation pass, and
# the callback hooks around epochs and batches (Keras has no exception hook for callbacks).
_MODEL_WORK = ("train_function", "evaluate")
_CALLBACK_WORK = ("on_epoch_begin", "on_epoch_end", "on_train_batch_begin", "on_train_batch_end")


@document
class CarbonCallback(CarbonAdapter, keras.callbacks.Callback):
    """Adds each epoch's energy and CO2e to the epoch logs and stops on a carbon policy.

    From epoch 0 on, every epoch's ``logs`` get ``energy_kwh``, ``energy_kwh_total``, ``co2_g``,
    ``co2_g_total``, ``power_w``, ``cpu_energy_kwh``, ``gpu_energy_kwh``, ``ram_energy_kwh``,
    ``intensity_g_per_kwh`` and ``eval_energy_kwh`` (validation's share), each with ``prefix``.
    Keras hands one ``logs`` dict to the callbacks in list order, so keys reach ``CSVLogger``,
    ``EarlyStopping`` or ``ModelCheckpoint`` only if this callback runs before them: it moves
    itself to the front of the list when training begins (``History`` always sees them).
    Training stops with ``model.stop_training`` when ``policy`` says so. At the end of training
    the run's summary (totals, intensity source, methods, how it ended) goes to the MLflow run
    (tags ``carbon.*``) and the W&B run (summary ``carbon/*``) active when training began.

    Totals survive an interrupted fit resumed by ``keras.callbacks.BackupAndRestore``: they are
    saved in its ``backup_dir`` at every epoch end and read back when it restores the epoch.
    ``state_dict()``/``load_state_dict()`` save and restore them by hand. Keras gives callbacks
    no hook when ``fit`` raises: for the fit's duration this callback wraps the model's training
    step and validation and the callback list's epoch and batch hooks on their instances, so an
    exception there ends the run as failed (or interrupted) before it leaves ``fit``; a run
    ended anywhere else is closed at the next fit or at exit. SIGTERM during ``fit`` records the
    run as interrupted, then ends the process as it would have without this callback.

    Example::

        from carbon_callbacks.integrations.keras import CarbonCallback
        from carbon_callbacks.policies import MarginalGain

        carbon = CarbonCallback(intensity="DE", policy=MarginalGain("val_accuracy", "max",
                                                                    min_gain_per_kwh=5.0))
        history = model.fit(x, y, validation_split=0.2, epochs=50,
                            callbacks=[carbon, keras.callbacks.CSVLogger("log.csv")])
        print(history.history["co2_g_total"][-1])
    """

    _framework = "keras"
    _callbacks: Any = None  # the running fit's CallbackList
    _first_epoch = True

    def _run_first(self) -> Any:
        """Move this callback to the front of the fit's CallbackList (see the class docs)."""
        callbacks = find_caller_instance(keras.callbacks.CallbackList)
        if callbacks is None or self not in callbacks.callbacks:
            logger.warning(
                "carbon-callbacks: could not find Keras' callback list; put CarbonCallback "
                "first in callbacks=[...] so CSVLogger and EarlyStopping see its keys"
            )
            return None
        # Moving ourselves from i to 0 leaves every later callback at its index, so the
        # CallbackList loop now running on_train_begin neither skips nor repeats one.
        callbacks.callbacks.remove(self)
        callbacks.callbacks.insert(0, self)
        return callbacks

    @override
    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        self._callbacks = self._run_first()
        self._first_epoch = True
        params = self.params or {}
        metadata = {
            "model": getattr(self.model, "name", type(self.model).__name__),
            "hyperparameters": {"epochs": params.get("epochs"), "steps": params.get("steps")},
            "backend": keras.backend.backend(),
        }
        self._begin_fit(
            metadata,
            frame=find_frame(keras.Model),  # the model's fit(): on the stack until it returns
            watch=[(self.model, _MODEL_WORK), (self._callbacks, _CALLBACK_WORK)],
        )

    @override
    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        if self._first_epoch:
            self._first_epoch = False
            # BackupAndRestore set the model's initial epoch in its on_train_begin, which may
            # have run after ours: read our totals back now, before the run opens.
            if epoch > 0:
                self._restore()
        self.tracker.epoch_start(epoch)

    @override
    def on_test_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        if self.tracker.run.active:
            self.tracker.eval_start()
        elif self.measure_eval:
            self.tracker.evaluation.start("evaluate")
            self._guard.watch(self.model, "test_function")

    @override
    def on_test_end(self, logs: Mapping[str, Any] | None = None) -> None:
        if self.tracker.run.active:
            self.tracker.eval_end()
        else:
            self._guard.restore()
            self.tracker.evaluation.end(logs)

    @override
    def on_predict_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        if self.measure_eval and not self.tracker.run.active:
            self.tracker.evaluation.start("predict")
            self._guard.watch(self.model, "predict_function")

    @override
    def on_predict_end(self, logs: Mapping[str, Any] | None = None) -> None:
        if not self.tracker.run.active:
            self._guard.restore()
            self.tracker.evaluation.end(None)

    @override
    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        horizon = keras_horizon(self, epoch) if self.tracker.policy is not None else None
        self.tracker.epoch_end(epoch, logs, horizon=horizon)
        if logs is not None:
            logs.update(self.tracker.log_dict())
        self._backup()

        def request_stop() -> None:
            self.model.stop_training = True

        self._after_epoch(request_stop)

    @override
    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        end: RunEnd | None = None
        if self.tracker.stop_decision is None and getattr(self.model, "stop_training", False):
            callbacks = getattr(self._callbacks, "callbacks", ())
            end = stopped_by_framework(callbacks, "model.stop_training")
        self._end_fit(end)

    # -------------------------------------------------------------- BackupAndRestore

    def _backup_dir(self) -> Path | None:
        for cb in getattr(self._callbacks, "callbacks", ()):
            if isinstance(cb, keras.callbacks.BackupAndRestore):
                return Path(cb.backup_dir)
        return None

    def _restore(self) -> None:
        """Load the totals saved with a BackupAndRestore backup (they match its weights)."""
        folder = self._backup_dir()
        if folder is None or not (folder / BACKUP_FILE).is_file():
            return
        try:
            state = json.loads((folder / BACKUP_FILE).read_text(encoding="utf-8"))
            self.tracker.load_state_dict(state.get(self._state_name(), {}))
        except (OSError, ValueError) as exc:
            self.tracker.warn_once("backup", "could not read the totals in %s (%s); they "
                                   "restart from this epoch", folder / BACKUP_FILE, exc)

    def _backup(self) -> None:
        """Write our totals where BackupAndRestore keeps its state, atomically."""
        folder = self._backup_dir()
        if folder is None:
            return
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / BACKUP_FILE
            states = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
            states[self._state_name()] = self.tracker.state_dict()
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".carbon-")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(states, fh)
            os.replace(tmp, path)
        except (OSError, ValueError) as exc:
            self.tracker.warn_once("backup", "could not save the totals in %s (%s); a restored "
                                   "fit restarts them", folder, exc)

    def _state_name(self) -> str:
        """Two callbacks backing up into one folder keep their totals apart by prefix."""
        return f"CarbonCallback[{self.tracker.prefix}]"
