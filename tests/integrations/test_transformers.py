"""transformers Trainer: real CPU training of a tiny BERT built from a config (no download)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from carbon_callbacks.integrations.transformers import STATE_KEY, CarbonCallback  # noqa: E402
from carbon_callbacks.ledger import Ledger  # noqa: E402
from carbon_callbacks.policies import CarbonBudget  # noqa: E402
from carbon_callbacks.tracking.tracker import LOG_KEYS  # noqa: E402

INTENSITY = 56.0
STEPS_PER_EPOCH = 4  # 32 examples, batch 8


class Tokens(torch.utils.data.Dataset):
    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randint(0, 32, (n, 8), generator=g)
        self.y = (self.x[:, 0] > 15).long()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"input_ids": self.x[i], "labels": self.y[i]}


def trainer_for(tmp_path, callbacks, *, epochs=3, **overrides):
    config = transformers.BertConfig(
        vocab_size=32,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=16,
        num_labels=2,
    )
    torch.manual_seed(0)
    options = {
        "output_dir": str(tmp_path / "out"),
        "num_train_epochs": epochs,
        "per_device_train_batch_size": 8,
        "eval_strategy": "epoch",
        "logging_strategy": "epoch",
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "use_cpu": True,
    }
    options.update(overrides)
    return transformers.Trainer(
        model=transformers.BertForSequenceClassification(config),
        args=transformers.TrainingArguments(**options),
        train_dataset=Tokens(32, 0),
        eval_dataset=Tokens(16, 1),
        callbacks=callbacks,
    )


def carbon_entries(trainer):
    return [e for e in trainer.state.log_history if "co2_g" in e]


def test_log_history_and_tensorboard_have_the_keys_every_epoch(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    carbon = CarbonCallback(intensity=INTENSITY, monitor="eval_loss")
    trainer = trainer_for(tmp_path, [carbon], report_to=["tensorboard"])
    trainer.train()

    entries = carbon_entries(trainer)
    assert [e["epoch"] for e in entries] == [1.0, 2.0, 3.0]
    for entry in entries:
        assert set(LOG_KEYS) <= set(entry)
        assert entry["energy_kwh"] > 0
        assert 0 < entry["evaluation_energy_kwh"] < entry["energy_kwh"]
    per_epoch = sum(e["energy_kwh"] for e in entries)
    assert per_epoch == pytest.approx(entries[-1]["energy_kwh_total"], rel=1e-3)
    assert per_epoch == pytest.approx(carbon.tracker.run_window().kwh, rel=1e-3)

    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert {"train/co2_g", "train/co2_g_total", "train/energy_kwh"} <= set(events.Tags()["scalars"])
    logged = [e.value for e in events.Scalars("train/energy_kwh")]
    assert logged == pytest.approx([e["energy_kwh"] for e in entries], rel=1e-5)
    assert [e.step for e in events.Scalars("train/co2_g")] == [4, 8, 12]


def test_each_record_holds_that_epochs_evaluation_metrics(tmp_path):
    carbon = CarbonCallback(intensity=INTENSITY, monitor="eval_loss")
    trainer = trainer_for(tmp_path, [carbon], epochs=2)
    trainer.train()
    eval_losses = [e["eval_loss"] for e in trainer.state.log_history if "eval_loss" in e]
    assert [r.metric("eval_loss") for r in carbon.records] == pytest.approx(eval_losses)
    assert [r.epoch for r in carbon.records] == [0, 1]


def test_every_epoch_is_logged_without_evaluation_or_epoch_logging(tmp_path):
    carbon = CarbonCallback(intensity=INTENSITY)
    trainer = trainer_for(
        tmp_path, [carbon], epochs=2, eval_strategy="no", logging_strategy="steps",
        logging_steps=100,
    )
    trainer.train()
    entries = carbon_entries(trainer)
    assert [e["step"] for e in entries] == [4, 8]
    assert all(e["evaluation_energy_kwh"] == 0 for e in entries)


def test_a_carbon_budget_stops_the_run_early(tmp_path):
    # Any real epoch emits more than a nanogram, so the budget is spent after epoch 0.
    carbon = CarbonCallback(intensity=INTENSITY, policy=CarbonBudget(max_co2_g=1e-9))
    trainer = trainer_for(tmp_path, [carbon], epochs=5)
    trainer.train()
    assert trainer.state.global_step == STEPS_PER_EPOCH
    assert len(carbon_entries(trainer)) == 1
    assert carbon.tracker.stop_decision is not None
    assert "budget" in carbon.tracker.stop_decision.reason.lower()


def test_resume_from_checkpoint_keeps_the_totals(tmp_path):
    first = CarbonCallback(intensity=INTENSITY)
    trainer_for(tmp_path, [first], epochs=2, save_strategy="epoch").train()
    first_total = first.records[-1].energy_kwh_total
    checkpoint = tmp_path / "out" / f"checkpoint-{2 * STEPS_PER_EPOCH}"
    assert (checkpoint / "trainer_state.json").read_text().count(STATE_KEY) == 1

    resumed = CarbonCallback(intensity=INTENSITY)
    trainer = trainer_for(tmp_path, [resumed], epochs=4)
    trainer.train(resume_from_checkpoint=str(checkpoint))
    assert [r.epoch for r in resumed.records] == [0, 1, 2, 3]
    third = resumed.records[2]
    assert third.energy_kwh_total == pytest.approx(first_total + third.energy_kwh, rel=1e-9)
    entries = carbon_entries(trainer)  # the history came back with the checkpoint too
    assert [e["epoch"] for e in entries] == [1.0, 2.0, 3.0, 4.0]
    assert sum(e["energy_kwh"] for e in entries) == pytest.approx(
        entries[-1]["energy_kwh_total"], rel=1e-9
    )


def test_ddp_two_cpu_ranks_log_the_sum_of_their_own_measurements(tmp_path):
    if not torch.distributed.is_available():
        pytest.skip("this torch build has no torch.distributed")
    env = dict(os.environ, CARBON_CALLBACKS_LEDGER=str(tmp_path / "ledger.sqlite"))
    for name in ("MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "RANK", "WORLD_SIZE"):
        env.pop(name, None)
    script = Path(__file__).resolve().parents[1] / "helpers" / "ddp_transformers_train.py"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(script), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    own = [r["local_energy_kwh_total"] for r in ranks]
    assert all(e > 0 for e in own)
    for rank in ranks:  # every rank logged the same summed values
        entries = rank["entries"]
        assert [e["epoch"] for e in entries] == [1.0, 2.0]
        assert entries[-1]["energy_kwh_total"] == pytest.approx(sum(own), rel=1e-9)
        assert sum(e["energy_kwh"] for e in entries) == pytest.approx(sum(own), rel=1e-9)
    assert ranks[0]["run_id"] and not ranks[1]["run_id"]  # the ledger is written by rank 0
    assert len(Ledger.open(tmp_path / "ledger.sqlite").runs()) == 1


def test_an_optuna_trial_gets_per_epoch_co2_and_is_pruned_from_inside_train(tmp_path):
    optuna = pytest.importorskip("optuna")
    from carbon_callbacks.integrations.optuna import trial_carbon

    class PruneAtSecondReport(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return len(trial.intermediate_values) >= 2

    study = optuna.create_study(direction="minimize", pruner=PruneAtSecondReport())
    trial = study.ask()
    carbon = CarbonCallback(intensity=INTENSITY, trial=trial, monitor="eval_loss")
    trainer = trainer_for(tmp_path, [carbon], epochs=5)
    with pytest.raises(optuna.TrialPruned):
        trainer.train()
    points = trial_carbon(study.trials[0])
    assert [p.step for p in points] == [0, 1]
    assert [p.co2_g_total for p in points] == pytest.approx(
        [r.co2_g_total for r in carbon.records])
    assert [p.value for p in points] == pytest.approx(
        [r.metric("eval_loss") for r in carbon.records])
