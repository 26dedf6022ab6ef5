"""The transformers callback reads the Trainer's LR schedule into each record's horizon."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from carbon_callbacks.integrations._lr_horizon import transformers_horizon  # noqa: E402
from carbon_callbacks.integrations.transformers import CarbonCallback  # noqa: E402
from carbon_callbacks.policies import CONTINUE, DiminishingReturns  # noqa: E402
from carbon_callbacks.tracking import EpochTracker  # noqa: E402

STEPS = 4  # 32 examples, batch 8: optimizer steps per epoch without accumulation


class Recorder:
    """A policy that never stops and keeps the horizon it was shown at each epoch."""

    def __init__(self):
        self.horizons = []

    def decide(self, records):
        self.horizons.append(records[-1].horizon)
        return CONTINUE


class Spy(DiminishingReturns):
    """DiminishingReturns on eval_accuracy, keeping every reason it gave."""

    def __init__(self):
        super().__init__("eval_accuracy", min_epochs=4, patience=None)
        self.said = []

    def decide(self, records):
        d = super().decide(records)
        self.said.append(d.reason)
        return d


class Features(torch.utils.data.Dataset):
    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 8, generator=g)
        self.y = (self.x[:, 0] > 0).long()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


class Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(8, 2)

    def forward(self, x, labels=None):
        logits = self.layer(x)
        return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}


def accuracy(prediction):
    right = prediction.predictions.argmax(-1) == prediction.label_ids
    return {"eval_accuracy": float(right.mean())}


def train(tmp_path, policy, *, epochs=6, schedule=None, samples=32, lr=0.1, **overrides):
    torch.manual_seed(0)
    model = Linear()
    optimizers = (None, None)
    if schedule is not None:
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        optimizers = (optimizer, schedule(optimizer))
    options = {
        "output_dir": str(tmp_path / "out"),
        "num_train_epochs": epochs,
        "per_device_train_batch_size": 8,
        "learning_rate": lr,
        "optim": "sgd",
        "eval_strategy": "epoch",
        "logging_strategy": "epoch",
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "use_cpu": True,
        **overrides,
    }
    trainer = transformers.Trainer(
        model=model,
        args=transformers.TrainingArguments(**options),
        train_dataset=Features(samples, 0),
        eval_dataset=Features(256, 1),
        callbacks=[CarbonCallback(intensity=100.0, policy=policy, ledger=False)],
        optimizers=optimizers,
        compute_metrics=accuracy,
    )
    trainer.train()
    return trainer


def test_a_step_lr_drop_ahead_is_read_epoch_by_epoch(tmp_path):
    policy = Recorder()
    # Stepped per optimizer step: a tenth after 3 epochs' steps.
    trainer = train(tmp_path, policy, schedule=lambda o: torch.optim.lr_scheduler.StepLR(
        o, 3 * STEPS, 0.1))  # fmt: skip
    h = policy.horizons
    assert [x.max_epochs for x in h] == [6] * 6
    assert h[0].scheduler == "StepLR" and h[0].lr_known
    assert h[0].lr == pytest.approx(0.1)
    assert h[0].lr_ahead == pytest.approx((0.1, 0.1, 0.01, 0.01, 0.01))
    assert h[3].lr == pytest.approx(0.01) and h[3].lr_ahead == pytest.approx((0.01, 0.01))
    assert h[5].lr_ahead == ()
    # The real scheduler went its own way: two drops in six epochs.
    assert trainer.lr_scheduler.get_last_lr()[0] == pytest.approx(0.001)


def test_the_trainers_own_linear_schedule_is_read_in_closed_form(tmp_path):
    policy = Recorder()
    train(tmp_path, policy)  # lr_scheduler_type="linear": LambdaLR to 0 over 24 steps
    h = policy.horizons
    assert h[0].scheduler == "LambdaLR" and h[0].lr_known
    assert h[0].lr_ahead == pytest.approx(tuple(0.1 * (1 - s / 24) for s in (4, 8, 12, 16, 20)))
    # What was forecast after epoch 0 is what each epoch then started with.
    assert [x.lr for x in h[1:]] == pytest.approx(h[0].lr_ahead)


def test_gradient_accumulation_and_max_steps_set_the_epochs_and_their_steps(tmp_path):
    policy = Recorder()
    # 4 batches, 2 per optimizer step: 2 steps per epoch; 9 steps make 5 epochs, the last short.
    train(tmp_path, policy, gradient_accumulation_steps=2, max_steps=9,
          schedule=lambda o: torch.optim.lr_scheduler.StepLR(o, 4, 0.5))  # fmt: skip
    h = policy.horizons
    assert [x.max_epochs for x in h] == [5] * 5
    assert h[0].lr_ahead == pytest.approx((0.1, 0.05, 0.05, 0.025))
    assert [x.lr for x in h[1:]] == pytest.approx(h[0].lr_ahead)


def test_reduce_on_plateau_is_unknown_and_a_constant_schedule_is_a_constant_future(tmp_path):
    policy = Recorder()
    train(tmp_path, policy, epochs=3, lr_scheduler_type="reduce_lr_on_plateau")
    h = policy.horizons[0]
    assert h.scheduler == "ReduceLROnPlateau" and not h.lr_known and h.lr_ahead == ()
    policy = Recorder()
    train(tmp_path, policy, epochs=3, lr_scheduler_type="constant")
    h = policy.horizons[0]
    assert h.lr_known and h.lr == pytest.approx(0.1) and h.lr_ahead == pytest.approx((0.1, 0.1))


def test_diminishing_returns_waits_for_a_scheduled_drop_on_a_saturated_metric(tmp_path):
    task = {"epochs": 16, "samples": 256, "lr": 0.5, "lr_scheduler_type": "constant"}
    alone = Spy()
    trainer = train(tmp_path, alone, **task)
    stopped_at = round(trainer.state.epoch) - 1
    assert stopped_at < 12 and alone.said[-1].startswith("stopping"), alone.said

    waiting = Spy()
    steps = 256 // 8
    trainer = train(tmp_path, waiting, schedule=lambda o: torch.optim.lr_scheduler.StepLR(
        o, 12 * steps, 0.1), **task)  # fmt: skip
    assert round(trainer.state.epoch) > 12
    assert (
        "waiting: the StepLR schedule lowers the learning rate from 0.5 to 0.05 by epoch 12 "
        f"({12 - stopped_at} epochs" in waiting.said[stopped_at]
    )


def test_a_horizon_that_cannot_be_read_warns_once_and_is_left_out(caplog):
    tracker = EpochTracker(intensity=100.0, ledger=False)
    args = transformers.TrainingArguments(output_dir="unused", num_train_epochs=3, use_cpu=True)
    with caplog.at_level("WARNING", logger="carbon_callbacks.tracking.tracker"):
        for _ in range(2):  # a state without its step counter: an AttributeError inside
            state = SimpleNamespace(epoch=1.0)
            assert transformers_horizon(args, state, 0, None, {}, tracker.warn_once) is None
    assert sum("LR schedule" in r.getMessage() for r in caplog.records) == 1
