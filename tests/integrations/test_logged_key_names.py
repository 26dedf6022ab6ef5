"""Our keys land where each tool files them, and add no columns of their own making."""

from __future__ import annotations

import pytest

from carbon_callbacks.tracking.tracker import LOG_KEYS
from tests.helpers.seeded_fits import INTENSITY, bert_trainer, keras_fit


def test_transformers_tensorboard_files_every_key_under_train(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    )
    from carbon_callbacks.integrations.transformers import CarbonCallback

    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    carbon = CarbonCallback(intensity=INTENSITY)
    trainer = bert_trainer(tmp_path, [carbon], eval_strategy="epoch", logging_strategy="epoch",
                           num_train_epochs=2, report_to=["tensorboard"])
    trainer.train()

    events = event_accumulator.EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {f"train/{key}" for key in LOG_KEYS} <= tags
    assert "eval/loss" in tags  # the Trainer's own evaluation, where it always was
    assert not {t for t in tags if t.startswith("eval/") and "energy" in t}
    shares = [e.value for e in events.Scalars("train/evaluation_energy_kwh")]
    logged = [e["evaluation_energy_kwh"] for e in trainer.state.log_history if "co2_g" in e]
    assert shares == pytest.approx(logged, rel=1e-5)
    assert len(shares) == 2 and all(value > 0 for value in shares)


@pytest.mark.parametrize(
    "options", [{"validation_split": 0.25, "validation_freq": 2}, {}],
    ids=["validation-every-2", "no-validation"],
)
def test_keras_csv_logger_gets_no_val_twins_of_our_keys(tmp_path, options):
    pytest.importorskip("keras")
    from carbon_callbacks.integrations.keras import CarbonCallback

    _, columns, rows = keras_fit(tmp_path, [CarbonCallback(intensity=INTENSITY)], epochs=4,
                                 **options)
    assert set(LOG_KEYS) <= set(columns)
    assert not {c for c in columns if c.startswith("val_") and c[4:] in LOG_KEYS}
    # CSVLogger's own val_ twins of the model's metrics stay, filled where validation ran.
    assert {"val_loss", "val_accuracy"} <= set(columns)
    filled = [int(r["epoch"]) for r in rows if r["val_loss"] != "NA"]
    assert filled == ([1, 3] if options else [])
    assert all(r[key] not in ("", "NA") for r in rows for key in LOG_KEYS)
