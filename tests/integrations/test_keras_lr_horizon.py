"""The Keras callback reads the LR schedule into each record's horizon, for the policies."""

from __future__ import annotations

import pytest

keras = pytest.importorskip("keras")
np = pytest.importorskip("numpy")

from carbon_callbacks.integrations.keras import CarbonCallback  # noqa: E402
from carbon_callbacks.policies import CONTINUE, DiminishingReturns  # noqa: E402

STEPS = 6  # 96 training samples, batch 16


class Recorder:
    """A policy that never stops and keeps the horizon it was shown at each epoch."""

    def __init__(self):
        self.horizons = []

    def decide(self, records):
        self.horizons.append(records[-1].horizon)
        return CONTINUE


class Spy(DiminishingReturns):
    """DiminishingReturns on val_accuracy, keeping every reason it gave."""

    def __init__(self):
        super().__init__("val_accuracy", min_epochs=4, patience=None)
        self.said = []

    def decide(self, records):
        d = super().decide(records)
        self.said.append(d.reason)
        return d


def fit(policy, *, epochs=6, learning_rate=0.1, callbacks=(), samples=96, batch_size=16):
    rng = np.random.RandomState(0)
    x = rng.randn(samples + 256, 8).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(keras.optimizers.SGD(learning_rate), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])  # fmt: skip
    carbon = CarbonCallback(intensity=100.0, policy=policy, ledger=False)
    history = model.fit(
        x[:samples], y[:samples], validation_data=(x[samples:], y[samples:]), epochs=epochs,
        batch_size=batch_size,
        verbose=0, callbacks=[carbon, *callbacks],
    )  # fmt: skip
    return model, history


def step_decay(epoch, lr):
    return 0.1 if epoch < 3 else 0.01


def test_a_learning_rate_scheduler_drop_ahead_is_read_epoch_by_epoch():
    policy = Recorder()
    model, _ = fit(policy, callbacks=[keras.callbacks.LearningRateScheduler(step_decay)])
    h = policy.horizons
    assert [x.max_epochs for x in h] == [6] * 6
    assert h[0].scheduler == "LearningRateScheduler" and h[0].lr_known
    assert h[0].lr == pytest.approx(0.1)
    # After epoch 0 the coming epochs 1-5 train with 0.1, 0.1, 0.01, 0.01, 0.01.
    assert h[0].lr_ahead == pytest.approx((0.1, 0.1, 0.01, 0.01, 0.01))
    assert h[3].lr == pytest.approx(0.01) and h[3].lr_ahead == pytest.approx((0.01, 0.01))
    assert h[5].lr_ahead == ()
    # Reading the schedule left the real optimizer where the scheduler put it.
    assert float(model.optimizer.learning_rate) == pytest.approx(0.01)


def test_an_optimizer_schedule_is_evaluated_at_each_coming_epochs_first_iteration():
    policy = Recorder()
    # A tenth every three epochs' iterations, in steps: the rate drops as epoch 3 begins.
    decay = keras.optimizers.schedules.ExponentialDecay(0.1, 3 * STEPS, 0.1, staircase=True)
    model, _ = fit(policy, learning_rate=decay)
    h = policy.horizons
    assert h[0].scheduler == "ExponentialDecay" and h[0].lr_known
    assert h[0].lr == pytest.approx(0.1)
    assert h[0].lr_ahead == pytest.approx((0.1, 0.1, 0.01, 0.01, 0.01))
    # What was forecast after epoch 0 is what each epoch then started with.
    assert [x.lr for x in h[1:]] == pytest.approx(h[0].lr_ahead)
    assert int(model.optimizer.iterations) == 6 * STEPS


def test_reduce_on_plateau_is_reported_as_unknown():
    policy = Recorder()
    fit(policy, callbacks=[keras.callbacks.ReduceLROnPlateau("val_loss", patience=1)])
    h = policy.horizons[0]
    assert h.scheduler == "ReduceLROnPlateau" and not h.lr_known and h.lr_ahead == ()


def test_no_schedule_is_a_known_constant_future():
    policy = Recorder()
    fit(policy)
    assert all(x.lr_known and x.scheduler == "" and x.lr_ahead == () for x in policy.horizons)
    assert [x.lr for x in policy.horizons] == pytest.approx([0.1] * 6)


def test_diminishing_returns_waits_for_a_scheduled_drop_on_a_saturated_metric():
    # val_accuracy is at its plateau within two epochs: without a schedule the rule stops.
    task = {"epochs": 16, "learning_rate": 0.5, "samples": 512, "batch_size": 32}
    alone = Spy()
    _, history = fit(alone, **task)
    stopped_at = len(history.history["loss"]) - 1
    assert stopped_at < 12 and alone.said[-1].startswith("stopping"), alone.said

    waiting = Spy()
    late_drop = keras.callbacks.LearningRateScheduler(lambda e, lr: 0.5 if e < 12 else 0.05)
    _, history = fit(waiting, callbacks=[late_drop], **task)
    assert len(history.history["loss"]) > 12
    assert (
        "waiting: the LearningRateScheduler schedule lowers the learning rate from 0.5 to 0.05 "
        f"by epoch 12 ({12 - stopped_at} epochs" in waiting.said[stopped_at]
    )


def test_a_schedule_failing_when_read_ahead_warns_once_and_leaves_the_fit_alone(caplog):
    seen = set()

    def fragile(epoch, lr):
        # Keras asks for each epoch's rate as it begins; reading ahead asks earlier, so the
        # first request for every epoch after 0 is ours: it fails, Keras' own one does not.
        if epoch > 0 and epoch not in seen:
            seen.add(epoch)
            raise RuntimeError("not known yet")
        return 0.05

    policy = Recorder()
    with caplog.at_level("WARNING", logger="carbon_callbacks.tracking.tracker"):
        _, history = fit(policy, callbacks=[keras.callbacks.LearningRateScheduler(fragile)])
    assert len(history.history["loss"]) == 6
    assert all(x.scheduler == "LearningRateScheduler" for x in policy.horizons)
    assert [x.lr_known for x in policy.horizons] == [False] * 5 + [True]
    assert sum("read ahead" in r.getMessage() for r in caplog.records) == 1
