"""2-process CPU DDP training (gloo) with the transformers CarbonCallback; run by
tests/test_transformers.py under ``torch.distributed.run --standalone --nproc_per_node=2``.

Usage: python -m torch.distributed.run ... ddp_transformers_train.py OUT_DIR. Each rank writes
OUT_DIR/rank<N>.json with its own measurement and the entries in its log history.
"""

from __future__ import annotations

import json
import os
import sys

import torch
import transformers

from carbon_callbacks.integrations.transformers import CarbonCallback


class Tokens(torch.utils.data.Dataset):
    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randint(0, 32, (n, 8), generator=g)
        self.y = (self.x[:, 0] > 15).long()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.x[i], "labels": self.y[i]}


def main(out: str) -> None:
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
    carbon = CarbonCallback(intensity=100.0)
    args = transformers.TrainingArguments(
        output_dir=os.path.join(out, "out"),
        num_train_epochs=2,
        per_device_train_batch_size=8,
        eval_strategy="epoch",
        logging_strategy="epoch",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        ddp_backend="gloo",
    )
    trainer = transformers.Trainer(
        model=transformers.BertForSequenceClassification(config),
        args=args,
        train_dataset=Tokens(64, 0),
        eval_dataset=Tokens(16, 1),
        callbacks=[carbon],
    )
    trainer.train()
    report = {
        "rank": args.process_index,
        "world_size": args.world_size,
        "local_energy_kwh_total": carbon.tracker.totals.local_energy_kwh,
        "energy_kwh_total": carbon.tracker.totals.energy_kwh,
        "entries": [e for e in trainer.state.log_history if "co2_g" in e],
        "run_id": carbon.tracker.run_id,
    }
    with open(os.path.join(out, f"rank{args.process_index}.json"), "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main(sys.argv[1])
