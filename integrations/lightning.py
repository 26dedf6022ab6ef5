"""Per-epoch energy and CO2e for ``lightning.pytorch``, logged like any other metric.

For the ``pytorch_lightning`` namespace use ``carbon_callbacks.integrations.pytorch_lightning``.
"""

from __future__ import annotations

try:
    import lightning.pytorch as pl
except ImportError as exc:  # say which extra to install, not just "No module named"
    raise ImportError(
        "carbon_callbacks.integrations.lightning needs Lightning: "
        "pip install 'carbon-callbacks[lightning]'"
    ) from exc

from carbon_callbacks.integrations._lightning_mixin import LightningCarbonMixin

__all__ = ["CarbonCallback"]


class CarbonCallback(LightningCarbonMixin, pl.Callback):
    """Logs each epoch's energy and CO2e to Lightning's loggers and stops on a carbon policy.

    At every training epoch end (after validation) it logs ``energy_kwh``, ``energy_kwh_total``,
    ``co2_g``, ``co2_g_total``, ``power_w``, ``cpu_energy_kwh``, ``gpu_energy_kwh``,
    ``ram_energy_kwh``, ``intensity_g_per_kwh`` and ``evaluation_energy_kwh`` (each with
    ``prefix``), into ``trainer.callback_metrics``, ``trainer.logged_metrics`` and every logger,
    one row per epoch at the step of Lightning's own epoch-end row (as
    ``pl_module.log(on_epoch=True)`` would, without making Lightning scan ten more keys after every
    batch). ``EarlyStopping``/``ModelCheckpoint`` can monitor any of them, ``co2_g_total`` say,
    with any validation schedule: at a validation inside an epoch (``val_check_interval=0.5``)
    ``callback_metrics`` gets the run's totals up to that point and the epoch's other keys so far.
    Each epoch's record holds the metrics that epoch produced: in an epoch without validation
    (``check_val_every_n_epoch=2``, an epoch cut short by ``max_steps``) the last validation's
    metrics, still in ``callback_metrics``, are left out. Lightning runs callbacks'
    ``on_train_epoch_end`` before the module's, so what the module logs in its own is in no record
    (log it in ``training_step`` with ``on_epoch=True``). Each epoch's window runs from the
    previous epoch's end, so the epochs add up to the run, validation and sanity checks included.
    Under DDP each rank measures its own process and devices and the logged values are the sum over
    ranks; the stop decision is agreed by all ranks and the ledger is written by rank 0 only.
    Totals are saved in checkpoints, so ``fit(ckpt_path=...)`` continues them. At the end of fit
    the run's summary (totals, intensity source, methods, stop reason) goes to the run of every
    ``MLFlowLogger`` (tags ``carbon.*``) and ``WandbLogger`` (summary ``carbon/*``).

    Args:
        intensity: gCO2e/kWh as a number, a country/zone/cloud-region code (``"FR"``,
            ``"gcp:europe-west1"``), an ``IntensitySource``, or None (environment variables,
            else the world average with a warning).
        policy: A stopping rule from ``carbon_callbacks.policies`` (or any object with
            ``decide(records)``); training stops when it says so.
        monitor: The metric to record next to each epoch's CO2e (e.g. ``"val_acc"``).
        trial: An Optuna trial: cumulative CO2e is reported to it every epoch; if it should be
            pruned, ``optuna.TrialPruned`` is raised (under DDP: training stops on all ranks,
            call ``check_pruned()`` after ``fit``).
        prefix: Prepended to every logged key. A metric of the fit's own under one of these
            names keeps its value: that key of ours is left out, with one warning.
        pue: Data-centre power usage effectiveness (1.0 to 5.0), applied to CO2e only.
        ledger: None (default ledger), a path or database URL, a ``Ledger``, or False.
        meter: An ``EnergyMeter`` to use instead of a process-scope one built at fit start.
        metadata: Extra run metadata for the ledger (project, team...).

    Raises:
        TypeError, ValueError: An invalid argument, named in the message.

    Example::

        from lightning.pytorch import Trainer
        from lightning.pytorch.callbacks import EarlyStopping
        from carbon_callbacks.integrations.lightning import CarbonCallback
        from carbon_callbacks.policies import CarbonBudget

        carbon = CarbonCallback(intensity="FR", policy=CarbonBudget(max_co2_g=20))
        trainer = Trainer(max_epochs=50, callbacks=[carbon])
        trainer.fit(model, datamodule=dm)
        print(carbon.records[-1].co2_g_total)
    """
