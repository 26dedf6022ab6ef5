"""Lightning's EarlyStopping and ModelCheckpoint can monitor our keys with any validation schedule.

They read ``trainer.callback_metrics`` where they check: at each validation's end when it is not
the epoch's last event (``val_check_interval=0.5``, ``check_val_every_n_epoch=2``, or when told
``check_on_train_epoch_end=False``), else at the training epoch's end. The callback gives them
the run's totals up to each validation, and the epoch's own at its end.
"""

from __future__ import annotations

import pytest

pl = pytest.importorskip("lightning.pytorch")

from carbon_callbacks.integrations.lightning import CarbonCallback  # noqa: E402
from tests.helpers.seeded_fits import INTENSITY, lightning_csv_rows, lightning_fit  # noqa: E402


class TotalsAtValidation(pl.Callback):
    """``co2_g_total`` as a callback checking at each validation's end reads it."""

    def __init__(self):
        self.seen = []

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            value = trainer.callback_metrics.get("co2_g_total")
            self.seen.append((trainer.current_epoch, None if value is None else float(value)))


@pytest.mark.parametrize("first", ["early_stopping", "carbon"])
def test_early_stopping_on_co2_g_total_with_two_validations_an_epoch(tmp_path, first):
    # co2_g_total only grows, so in "min" mode it never improves after the first check.
    early = pl.callbacks.EarlyStopping(monitor="co2_g_total", mode="min", patience=2)
    carbon = CarbonCallback(intensity=INTENSITY)
    seen = TotalsAtValidation()
    callbacks = [early, seen, carbon] if first == "early_stopping" else [carbon, seen, early]
    trainer = lightning_fit(tmp_path, callbacks, max_epochs=10, val_check_interval=0.5)

    # Checks at each validation: best at the first, two more without improvement, stop.
    assert [epoch for epoch, _ in seen.seen] == [0, 0, 1]
    assert early.stopped_epoch == 1 and trainer.global_step == 6
    totals = [value for _, value in seen.seen]
    assert totals[0] < totals[1] < totals[2]
    # The first validation is halfway through epoch 0: a total so far, below the epoch's.
    assert totals[0] < carbon.records[0].co2_g_total
    assert early.best_score.item() == pytest.approx(totals[0], rel=1e-9)


def test_model_checkpoint_on_co2_g_total_with_two_validations_an_epoch(tmp_path):
    best = pl.callbacks.ModelCheckpoint(tmp_path / "ckpt", monitor="co2_g_total", mode="min")
    carbon = CarbonCallback(intensity=INTENSITY)
    seen = TotalsAtValidation()
    lightning_fit(tmp_path, [best, seen, carbon], max_epochs=2, val_check_interval=0.5,
                  enable_checkpointing=True)
    assert len(seen.seen) == 4  # two validations in each of two epochs
    assert best.best_model_score.item() == pytest.approx(seen.seen[0][1], rel=1e-9)
    assert best.best_model_path.endswith("epoch=0-step=2.ckpt")


def test_validation_every_second_epoch_sees_the_total_up_to_that_validation(tmp_path):
    early = pl.callbacks.EarlyStopping(monitor="co2_g_total", mode="max", patience=5)
    carbon = CarbonCallback(intensity=INTENSITY)
    seen = TotalsAtValidation()
    lightning_fit(tmp_path, [early, seen, carbon], max_epochs=4, check_val_every_n_epoch=2)
    assert [epoch for epoch, _ in seen.seen] == [1, 3]
    for epoch, total in seen.seen:
        # Past the previous epoch's total, within this epoch's (its end is still to come).
        assert carbon.records[epoch - 1].co2_g_total < total <= carbon.records[epoch].co2_g_total
    assert early.best_score.item() == pytest.approx(seen.seen[-1][1], rel=1e-9)


def test_checking_once_an_epoch_reads_the_epochs_own_total(tmp_path):
    # The setting that checks at the epoch's end whatever the validation schedule.
    early = pl.callbacks.EarlyStopping(
        monitor="co2_g_total", mode="max", patience=5, check_on_train_epoch_end=True
    )
    best = pl.callbacks.ModelCheckpoint(
        tmp_path / "ckpt", monitor="co2_g_total", mode="max", save_on_train_epoch_end=True
    )
    carbon = CarbonCallback(intensity=INTENSITY)
    lightning_fit(tmp_path, [early, best, carbon], max_epochs=3, val_check_interval=0.5,
                  enable_checkpointing=True)
    assert early.best_score.item() == pytest.approx(carbon.records[-1].co2_g_total, rel=1e-9)
    assert best.best_model_score.item() == pytest.approx(carbon.records[-1].co2_g_total, rel=1e-9)


def test_loggers_still_get_one_row_an_epoch_with_mid_epoch_validation(tmp_path):
    carbon = CarbonCallback(intensity=INTENSITY)
    trainer = lightning_fit(tmp_path, [carbon], max_epochs=2, val_check_interval=0.5)
    ours = [r for r in lightning_csv_rows(trainer) if "co2_g_total" in r]
    assert [int(r["epoch"]) for r in ours] == [0, 1]
    assert [r["co2_g_total"] for r in ours] == pytest.approx(
        [r.co2_g_total for r in carbon.records], rel=1e-9
    )
    assert sum(r["energy_kwh"] for r in ours) == pytest.approx(ours[-1]["energy_kwh_total"])
