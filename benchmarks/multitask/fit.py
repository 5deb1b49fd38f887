"""One `Trainer` run for the methods trained here (not through the library's commands): the same optimizer, schedule,
batch size and epochs as `train_expert` gives the TT-LoRA experts (AdamW, linear decay, no warm-up)."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

from .settings import Settings


def fit(model, data, tokenizer, lr: float, seed: int, settings: Settings, work_dir: Path,
        label_names: tuple[str, ...] = ("labels",)) -> dict:
    """Train `model` on `data` (tokenized, unpadded) for `settings.epochs`; returns wall seconds and steps."""
    args = TrainingArguments(output_dir=str(work_dir), learning_rate=lr, num_train_epochs=settings.epochs,
                             per_device_train_batch_size=settings.batch_size, seed=seed, report_to=[],
                             save_strategy="no", logging_steps=10, disable_tqdm=True, label_names=list(label_names),
                             remove_unused_columns=False)
    torch.manual_seed(seed)
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=DataCollatorWithPadding(tokenizer))
    t0 = time.perf_counter()
    trainer.train()
    model.eval()
    return {"train_s": round(time.perf_counter() - t0, 1), "steps": trainer.state.global_step}
