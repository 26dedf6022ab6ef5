"""Adding CarbonCallback to a fit leaves every metric the fit logs without it where it was.

Each test runs the same seeded fit twice, without and with the callback, and compares what the
framework recorded: every key of the fit without the callback is there with it, at the same epoch
and step, with the same value (run times aside); the callback only adds its own keys.
"""

from __future__ import annotations

import pytest

from carbon_callbacks.tracking.tracker import LOG_KEYS
from tests.helpers.seeded_fits import (
    INTENSITY,
    bert_trainer,
    keras_fit,
    lightning_csv_rows,
    lightning_fit,
)

OURS = set(LOG_KEYS)
# Wall-clock figures differ between two runs of one fit; their keys are still compared.
TIMINGS = ("runtime", "per_second")


def without_ours(entry):
    return {k: v for k, v in entry.items() if k not in OURS}


def assert_same_values(without, with_carbon):
    """Same keys; same values except wall-clock timings."""
    assert set(with_carbon) == set(without)
    for key, value in without.items():
        if not any(t in key for t in TIMINGS):
            assert with_carbon[key] == pytest.approx(value, rel=1e-6), key


# ------------------------------------------------------------------ transformers


def transformers_history(tmp_path, carbon, **arguments):
    trainer = bert_trainer(tmp_path, [carbon] if carbon is not None else [], **arguments)
    trainer.train()
    return trainer.state.log_history


@pytest.mark.parametrize(
    "options",
    [
        {"logging_strategy": "epoch", "eval_strategy": "no"},
        {"logging_strategy": "epoch", "eval_strategy": "epoch"},
        {"logging_strategy": "steps", "logging_steps": 3, "eval_strategy": "no"},
        {"logging_strategy": "no", "eval_strategy": "epoch"},
    ],
    ids=["epoch", "epoch-with-eval", "steps", "no"],
)
def test_transformers_log_history_keeps_the_trainers_own_entries(tmp_path, options):
    pytest.importorskip("transformers")
    from carbon_callbacks.integrations.transformers import CarbonCallback

    without = transformers_history(tmp_path / "a", None, **options)
    carbon = CarbonCallback(intensity=INTENSITY)
    history = transformers_history(tmp_path / "b", carbon, **options)

    theirs = [e for e in history if not OURS & set(e)]
    assert len(theirs) == len(without)
    for plain, kept in zip(without, theirs, strict=True):
        assert_same_values(plain, kept)
    if options["logging_strategy"] == "epoch":  # the loss of every epoch, as without us
        assert [e["epoch"] for e in theirs if "loss" in e] == [1.0, 2.0, 3.0]
    ours = [e for e in history if OURS & set(e)]
    assert [e["epoch"] for e in ours] == [1.0, 2.0, 3.0]
    assert all(set(e) == OURS | {"epoch", "step"} for e in ours)
    # Ours follows each epoch's entries from the Trainer, at their step.
    for entry in ours:
        position = history.index(entry)
        same_step = [i for i, e in enumerate(history) if e["step"] == entry["step"]]
        assert position == max(i for i in same_step if "train_runtime" not in history[i])


# ------------------------------------------------------------------ Lightning


@pytest.mark.parametrize(
    "options",
    [{"on_step": False}, {"on_step": True, "log_every_n_steps": 1}],
    ids=["epoch", "steps"],
)
def test_lightning_loggers_keep_every_row_the_module_logs(tmp_path, options):
    pytest.importorskip("lightning")
    from carbon_callbacks.integrations.lightning import CarbonCallback

    without = lightning_fit(tmp_path / "a", [], **options)
    with_carbon = lightning_fit(tmp_path / "b", [CarbonCallback(intensity=INTENSITY)], **options)

    plain = lightning_csv_rows(without)
    rows = lightning_csv_rows(with_carbon)
    theirs = [r for r in rows if not OURS & set(r)]
    assert len(theirs) == len(plain) > 3
    for a, b in zip(plain, theirs, strict=True):
        assert_same_values(a, b)
    ours = [r for r in rows if OURS & set(r)]
    assert [int(r["epoch"]) for r in ours] == [0, 1, 2]
    assert all(set(r) == OURS | {"epoch", "step"} for r in ours)
    for metrics in ("logged_metrics", "callback_metrics"):
        assert_same_values(
            {k: float(v) for k, v in getattr(without, metrics).items()},
            {k: float(v) for k, v in getattr(with_carbon, metrics).items() if k not in OURS},
        )
        assert OURS <= set(getattr(with_carbon, metrics))


def test_lightning_without_a_logger_keeps_the_metrics_callbacks_read(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    from carbon_callbacks.integrations.lightning import CarbonCallback

    class Seen(pl.Callback):
        """What a monitoring callback sees at each epoch end."""

        def __init__(self):
            self.epochs = []

        def on_train_epoch_end(self, trainer, pl_module):
            self.epochs.append({k: float(v) for k, v in trainer.callback_metrics.items()})

    plain, seen = Seen(), Seen()
    lightning_fit(tmp_path / "a", [plain], logger=False)
    lightning_fit(tmp_path / "b", [seen, CarbonCallback(intensity=INTENSITY)], logger=False)
    assert len(seen.epochs) == len(plain.epochs) == 3
    for a, b in zip(plain.epochs, seen.epochs, strict=True):
        assert_same_values(a, without_ours(b))
        assert OURS <= set(b)


# ------------------------------------------------------------------ Keras


@pytest.mark.parametrize(
    "options",
    [
        {"validation_split": 0.25},
        {"validation_split": 0.25, "validation_freq": 2},
        {},
    ],
    ids=["validation", "validation-every-2", "no-validation"],
)
def test_keras_history_and_csv_logger_keep_every_column(tmp_path, options):
    pytest.importorskip("keras")
    from carbon_callbacks.integrations.keras import CarbonCallback

    plain, plain_columns, plain_rows = keras_fit(tmp_path / "a", [], **options)
    history, columns, rows = keras_fit(
        tmp_path / "b", [CarbonCallback(intensity=INTENSITY)], **options
    )
    assert set(history) == set(plain) | OURS
    for key, values in plain.items():
        assert history[key] == pytest.approx(values, rel=1e-6), key
    assert set(columns) == set(plain_columns) | OURS
    for a, b in zip(plain_rows, rows, strict=True):
        assert {k: b[k] for k in a} == a
