"""Adding CarbonCallback to a fit leaves every metric the fit logs without it where it was.

Each test runs the same seeded fit twice, without and with the callback, and compares what the
framework recorded: every key of the fit without the callback is there with it, at the same epoch
and step, with the same value (run times aside); the callback only adds its own keys.
"""

from __future__ import annotations

import csv

import pytest

from carbon_callbacks.tracking.tracker import LOG_KEYS

INTENSITY = 56.0
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


def transformers_history(tmp_path, carbon, **overrides):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")

    class Tokens(torch.utils.data.Dataset):
        def __init__(self, n, seed):
            g = torch.Generator().manual_seed(seed)
            self.x = torch.randint(0, 32, (n, 8), generator=g)
            self.y = (self.x[:, 0] > 15).long()

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return {"input_ids": self.x[i], "labels": self.y[i]}

    config = transformers.BertConfig(
        vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=16, max_position_embeddings=16, num_labels=2,
    )
    torch.manual_seed(0)
    options = {
        "output_dir": str(tmp_path / "out"),
        "num_train_epochs": 3,
        "per_device_train_batch_size": 8,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "use_cpu": True,
        **overrides,
    }
    trainer = transformers.Trainer(
        model=transformers.BertForSequenceClassification(config),
        args=transformers.TrainingArguments(**options),
        train_dataset=Tokens(32, 0),  # 4 steps an epoch
        eval_dataset=Tokens(16, 1),
        callbacks=[carbon] if carbon is not None else [],
    )
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


def lightning_fit(tmp_path, callbacks, *, logger=True, on_step=False, log_every_n_steps=50):
    torch = pytest.importorskip("torch")
    pl = pytest.importorskip("lightning.pytorch")

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(8, 2)

        def training_step(self, batch, _):
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self.layer(x), y)
            self.log("train_loss", loss, on_step=on_step, on_epoch=True)
            return loss

        def validation_step(self, batch, _):
            x, y = batch
            logits = self.layer(x)
            self.log("val_loss", torch.nn.functional.cross_entropy(logits, y))
            self.log("val_acc", (logits.argmax(1) == y).float().mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    data = torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long())
    torch.manual_seed(0)
    module = Tiny()
    trainer = pl.Trainer(
        max_epochs=3,
        callbacks=callbacks,
        logger=pl.loggers.CSVLogger(tmp_path, name="run") if logger else False,
        log_every_n_steps=log_every_n_steps,
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(
        module,
        torch.utils.data.DataLoader(data, batch_size=16),
        torch.utils.data.DataLoader(data, batch_size=32),
    )
    return trainer


def csv_rows(trainer):
    """Each row of Lightning's metrics.csv with its empty cells (other rows' columns) dropped."""
    with open(f"{trainer.logger.log_dir}/metrics.csv") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


@pytest.mark.parametrize(
    "options",
    [{"on_step": False}, {"on_step": True, "log_every_n_steps": 1}],
    ids=["epoch", "steps"],
)
def test_lightning_loggers_keep_every_row_the_module_logs(tmp_path, options):
    from carbon_callbacks.integrations.lightning import CarbonCallback

    without = lightning_fit(tmp_path / "a", [], **options)
    with_carbon = lightning_fit(tmp_path / "b", [CarbonCallback(intensity=INTENSITY)], **options)

    plain = csv_rows(without)
    rows = csv_rows(with_carbon)
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


def keras_fit(tmp_path, callbacks, **fit_options):
    keras = pytest.importorskip("keras")
    np = pytest.importorskip("numpy")
    rng = np.random.RandomState(0)
    x = rng.randn(96, 8).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    csv_path = tmp_path / "log.csv"
    tmp_path.mkdir(parents=True, exist_ok=True)
    history = model.fit(
        x, y, epochs=3, batch_size=16, verbose=0,
        callbacks=[keras.callbacks.CSVLogger(str(csv_path)), *callbacks], **fit_options,
    )
    with open(csv_path) as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    return history.history, reader.fieldnames, rows


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
