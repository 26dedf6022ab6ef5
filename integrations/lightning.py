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

from carbon_callbacks.integrations._common import document
from carbon_callbacks.integrations._lightning_mixin import LightningCarbonMixin

__all__ = ["CarbonCallback"]


@document
class CarbonCallback(LightningCarbonMixin, pl.Callback):
    """Logs each epoch's energy and CO2e to Lightning's loggers and stops on a carbon policy.

    At every training epoch end (after validation) it logs ``energy_kwh``, ``energy_kwh_total``,
    ``co2_g``, ``co2_g_total``, ``power_w``, ``cpu_energy_kwh``, ``gpu_energy_kwh``,
    ``ram_energy_kwh``, ``intensity_g_per_kwh`` and ``eval_energy_kwh`` (each with ``prefix``), into
    ``trainer.callback_metrics`` (``EarlyStopping``/``ModelCheckpoint`` can monitor
    ``co2_g_total``), ``trainer.logged_metrics`` and every logger, one row per epoch at the step of
    Lightning's own epoch-end row (as ``pl_module.log(on_epoch=True)`` would, without making
    Lightning scan ten more keys after every batch). Each epoch's window runs from the previous
    epoch's end, so the epochs add up to the run, validation and sanity checks included. Under DDP
    each rank measures its own process and devices and the logged values are the sum over ranks; the
    stop decision is agreed by all ranks and the ledger is written by rank 0 only. Totals are saved
    in checkpoints (under ``state_key``, which names ``prefix`` and ``monitor``, so two callbacks
    keep theirs apart), so ``fit(ckpt_path=...)`` continues them. At the end of fit the run's
    summary (totals, intensity source, methods, how it ended) goes to the run of every
    ``MLFlowLogger`` (tags ``carbon.*``) and ``WandbLogger`` (summary ``carbon/*``).

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
