"""Stage 2 of TT-LoRA MoE: compose frozen experts and train the top-1 router to pick the right one per input.

    python scripts/train_router.py --experts experts/rotten_tomatoes experts/bbc_news --output_dir moe \
        --router_layer 0 --max_per_task 500

By default the router's features are computed once per example and the router is trained on them in seconds;
`--use_trainer` trains through the whole model with `Trainer` and `ExpertFreezingCallback` instead (every
`TrainingArguments` flag works there). Installed as `hf-ttmoe-train-router` too.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding, HfArgumentParser, Trainer, TrainingArguments

from hf_ttmoe import TTLoRAMoEModel, load_task, load_tokenizer, mixed_tasks
from hf_ttmoe.ttlora_moe import compute_router_features, train_router_on_features
from trainer_callbacks import ExpertFreezingCallback


@dataclass
class RouterArguments:
    """Experts to compose, the router, and the mixed-task data it learns from."""

    experts: list[str] = field(metadata={"help": "Expert directories or Hub ids, one per task."})
    tasks: list[str] | None = field(default=None, metadata={"help": "Task per expert (default: each expert's task)."})
    router_layer: int = field(default=0, metadata={"help": "Route on the state after layer k (0 = embeddings)."})
    router_type: str = field(default="linear", metadata={"help": "linear | mlp."})
    pooling: str = field(default="auto", metadata={"help": "mean | last | segments (each input segment's mean, for "
                                                   "encoders with token types) | auto (segments where possible)."})
    noisy_gating: bool = field(default=True, metadata={"help": "Shazeer noisy top-1 gating in training."})
    router_aux_loss_coef: float = field(default=0.0, metadata={"help": "Load-balancing loss weight."})
    max_per_task: int | None = field(default=500, metadata={"help": "Training rows per task."})
    max_length: int = field(default=64, metadata={"help": "Truncate inputs to this many tokens."})
    glue_dir: str | None = field(default=None, metadata={"help": "Folder of GLUE TSVs, for sst2 / mrpc experts."})
    tasks_dir: str | None = field(default=None, metadata={"help": "Folder of task folders (user files), for experts "
                                                          "trained with --train_file (default $HF_TTMOE_TASKS_DIR)."})
    split_seed: int = field(default=42, metadata={"help": "Seed of the task splits (as the experts used)."})
    use_trainer: bool = field(default=False, metadata={"help": "Train through the model with Trainer."})
    router_epochs: int = field(default=30, metadata={"help": "Epochs over the cached features."})
    router_lr: float = field(default=1e-2, metadata={"help": "Learning rate on cached features."})


def mixed_router_data(moe: TTLoRAMoEModel, tasks: list[str], split: str, max_per_task: int | None,
                      max_length: int, glue_dir: str | None, seed: int, tokenizer, tasks_dir: str | None = None):
    """The tasks' rows of `split`, shuffled together, tokenized, with `task_ids` = expert index. Each task's labels
    must be its expert's, in the expert's id order (a task of user files is mapped to them)."""
    splits = {t: load_task(t, seed=seed, glue_dir=glue_dir, tasks_dir=tasks_dir, label_names=names)
              for t, names in zip(tasks, moe.label_names, strict=True)}
    mixed = mixed_tasks(splits, split, max_per_task=max_per_task, seed=seed)

    def encode(row):
        return tokenizer(row["text"], row["text_pair"], truncation=True, max_length=max_length)

    keep = {"input_ids", "attention_mask", "token_type_ids", "task_ids", "labels"}
    data = mixed.map(encode, desc="tokenizing").rename_columns({"task_id": "task_ids", "label": "labels"})
    return data.remove_columns([c for c in data.column_names if c not in keep])


def main(argv: list[str] | None = None) -> TTLoRAMoEModel:
    parser = HfArgumentParser((RouterArguments, TrainingArguments))
    args, training_args = parser.parse_args_into_dataclasses(args=argv)
    moe = TTLoRAMoEModel.from_experts(args.experts, router_layer=args.router_layer, router_type=args.router_type,
                                      pooling=args.pooling, noisy_gating=args.noisy_gating,
                                      router_aux_loss_coef=args.router_aux_loss_coef)
    if args.tasks:
        if len(args.tasks) != len(args.experts):
            raise ValueError(f"--tasks has {len(args.tasks)} names for {len(args.experts)} experts.")
        moe.tasks = list(args.tasks)
        for entry, task in zip(moe.config.experts, args.tasks):
            entry["task"] = task
    tokenizer = load_tokenizer(moe.config)
    data = mixed_router_data(moe, moe.tasks, "train", args.max_per_task, args.max_length, args.glue_dir,
                             args.split_seed, tokenizer, args.tasks_dir).remove_columns("labels")
    print(f"Router over {len(moe.tasks)} experts {moe.tasks}, router_layer={args.router_layer}, "
          f"{sum(p.numel() for p in moe.router.parameters()):,} router parameters, {len(data)} training rows")
    torch.manual_seed(training_args.seed)
    if args.use_trainer:
        training_args.label_names = ["task_ids"]
        trainer = Trainer(model=moe, args=training_args, train_dataset=data,
                          data_collator=DataCollatorWithPadding(tokenizer), callbacks=[ExpertFreezingCallback()])
        trainer.train()
    else:
        loader = DataLoader(data, batch_size=training_args.per_device_eval_batch_size,
                            collate_fn=DataCollatorWithPadding(tokenizer))
        features, task_ids = compute_router_features(moe, loader)
        history = train_router_on_features(moe, features, task_ids, epochs=args.router_epochs, lr=args.router_lr,
                                           seed=training_args.seed)
        with torch.no_grad():
            accuracy = (moe.router(features).argmax(-1) == task_ids).float().mean().item()
        print(f"router loss {history[0]:.4f} -> {history[-1]:.4f}; training-set routing accuracy {accuracy:.4f}")
    moe.save_pretrained(training_args.output_dir)
    print(f"saved the router (experts referenced, not copied) to {training_args.output_dir}")
    return moe


def cli() -> None:
    """The `hf-ttmoe-train-router` console command."""
    main(sys.argv[1:])


if __name__ == "__main__":
    cli()
