"""The Lightning callback reads the LR schedule into each record's horizon, for the policies."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch")

from carbon_callbacks.integrations.lightning import CarbonCallback  # noqa: E402
from carbon_callbacks.policies import CONTINUE, DiminishingReturns  # noqa: E402


class Recorder:
    """A policy that never stops and keeps the horizon it was shown at each epoch."""

    def __init__(self):
        self.horizons = []

    def decide(self, records):
        self.horizons.append(records[-1].horizon)
        return CONTINUE


def fit(tmp_path, schedule, policy, *, max_epochs=6, interval="epoch"):
    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(8, 2)

        def training_step(self, batch, _):
            x, y = batch
            return torch.nn.functional.cross_entropy(self.layer(x), y)

        def validation_step(self, batch, _):
            x, y = batch
            self.log("val_acc", (self.layer(x).argmax(1) == y).float().mean())

        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            if schedule is None:
                return opt
            config = {"scheduler": schedule(opt), "interval": interval, "monitor": "val_acc"}
            return {"optimizer": opt, "lr_scheduler": config}

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    data = torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long())
    trainer = pl.Trainer(
        max_epochs=max_epochs, callbacks=[CarbonCallback(intensity=100.0, policy=policy,
                                                         ledger=False)],
        logger=False, accelerator="cpu", devices=1, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path,
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(data, batch_size=16)
    trainer.fit(Tiny(), loader, loader)
    return trainer


def test_step_lr_drops_ahead_are_read_epoch_by_epoch(tmp_path):
    policy = Recorder()
    fit(tmp_path, lambda opt: torch.optim.lr_scheduler.StepLR(opt, 3, 0.1), policy)
    h = policy.horizons
    assert [x.max_epochs for x in h] == [6] * 6
    assert h[0].scheduler == "StepLR" and h[0].lr_known
    assert h[0].lr == pytest.approx(0.1)
    # After epoch 0 the coming epochs 1-5 train with 0.1, 0.1, 0.01, 0.01, 0.01.
    assert h[0].lr_ahead == pytest.approx((0.1, 0.1, 0.01, 0.01, 0.01))
    assert h[3].lr == pytest.approx(0.01) and h[3].lr_ahead == pytest.approx((0.01, 0.01))
    assert h[5].lr_ahead == ()


def test_a_per_batch_scheduler_is_stepped_through_each_coming_epoch(tmp_path):
    policy = Recorder()
    # 4 batches per epoch: a drop every 8 steps is a drop every 2 epochs.
    fit(tmp_path, lambda opt: torch.optim.lr_scheduler.StepLR(opt, 8, 0.5), policy,
        interval="step")
    assert policy.horizons[0].lr_ahead == pytest.approx((0.1, 0.05, 0.05, 0.025, 0.025))


def test_reduce_on_plateau_is_reported_as_unknown_and_no_scheduler_as_known(tmp_path):
    policy = Recorder()
    fit(tmp_path, lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(opt, "max"), policy)
    h = policy.horizons[0]
    assert h.scheduler == "ReduceLROnPlateau" and not h.lr_known and h.lr_ahead == ()
    policy = Recorder()
    fit(tmp_path, None, policy)
    assert policy.horizons[0].lr_known and policy.horizons[0].scheduler == ""


def test_the_schedule_never_changes_the_real_optimizer(tmp_path):
    trainer = fit(tmp_path, lambda opt: torch.optim.lr_scheduler.StepLR(opt, 3, 0.1), Recorder())
    # Six epochs, two drops: 0.1 -> 0.01 -> 0.001, exactly as without the callback reading it.
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.001)


def test_diminishing_returns_waits_for_the_drop_in_a_real_fit(tmp_path):
    class Spy(DiminishingReturns):
        def __init__(self):
            super().__init__("val_acc", min_epochs=4)
            self.said = []

        def decide(self, records):
            d = super().decide(records)
            self.said.append(d.reason)
            return d

    policy = Spy()
    fit(tmp_path, lambda opt: torch.optim.lr_scheduler.StepLR(opt, 5, 0.1), policy, max_epochs=8)
    assert "lowers the learning rate from 0.1 to 0.01 by epoch 5" in policy.said[0]
