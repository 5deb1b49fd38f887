"""What every training script shares: data arguments, metrics, tokenized splits, a Trainer run with evaluation."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
from transformers import DataCollatorWithPadding, HfArgumentParser, Trainer, TrainingArguments, set_seed

from .distributed import check_deepspeed_config, init_deepspeed_comm
from .io import atomic_write

DEFAULT_TASK = "rotten_tomatoes"


@dataclass
class DataArguments:
    """Which task to train on and how to prepare it: a named task, or a user's files (as transformers' examples)."""

    task: str | None = field(
        default=None,
        metadata={"help": f"Embedded task (rotten_tomatoes, bbc_news, tweet_sentiment, language_id), GLUE task "
                  "(sst2, mrpc; needs --glue_dir), hub:<dataset>[:<config>], a task folder (train/validation/test "
                  "files) or a folder name inside --tasks_dir. With --train_file: the name recorded for the task "
                  f"(default: the train file's folder name). Default {DEFAULT_TASK}."},
    )
    train_file: str | None = field(
        default=None, metadata={"help": "CSV, TSV, JSON or JSON Lines file with columns text, [text_pair,] label."})
    validation_file: str | None = field(default=None, metadata={"help": "Same layout; default: carved from train."})
    test_file: str | None = field(default=None, metadata={"help": "Same layout; default: carved from train."})
    glue_dir: str | None = field(default=None, metadata={"help": "Folder with glue/<task>/*.tsv files."})
    tasks_dir: str | None = field(default=None, metadata={"help": "Folder of task folders, for tasks named by "
                                                          "folder name (default $HF_TTMOE_TASKS_DIR)."})
    max_length: int = field(default=128, metadata={"help": "Truncate inputs to this many tokens."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Cap the training split (deterministic)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Cap validation/test splits."})
    split_seed: int = field(default=42, metadata={"help": "Seed of the train/validation/test split and caps."})

    def __post_init__(self):
        if self.train_file is None:
            if self.validation_file or self.test_file:
                raise ValueError("--validation_file / --test_file need --train_file.")
            self.task = self.task or DEFAULT_TASK
        elif self.task is None:
            path = os.path.abspath(self.train_file)
            self.task = os.path.basename(os.path.dirname(path)) or os.path.splitext(os.path.basename(path))[0]


# The training recipe the benchmarks measured adapters with (benchmarks/bench_quality.py): batch 32, 6% warm-up
# then linear decay. `TrainingArguments`' own defaults (batch 8, no warm-up) suit full fine-tuning; from them a
# TT-LoRA expert reached 79.47 ± 1.35 on SST-2 against 80.70 ± 0.24 with this recipe (benchmarks/README.md).
ADAPTER_RECIPE = {"per_device_train_batch_size": 32, "warmup_steps": 0.06}


def parse_arguments(dataclass_types: tuple, argv: list[str] | None, learning_rate: float) -> tuple:
    """`HfArgumentParser` over `dataclass_types` and `TrainingArguments`, with an adapter's defaults: `learning_rate`
    (chosen on dev rows, see benchmarks/README.md; not `TrainingArguments`' full fine-tuning 5e-5, which leaves an
    adapter trained from zero close to where it started) and `ADAPTER_RECIPE`. Any flag given overrides them."""
    parser = HfArgumentParser((*dataclass_types, TrainingArguments))
    parser.set_defaults(learning_rate=learning_rate, **ADAPTER_RECIPE)
    *script_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    set_seed(training_args.seed)  # adapters are built before Trainer seeds: --seed fixes them too, alike on every rank
    init_deepspeed_comm(training_args)
    return (*script_args, training_args)


def compute_metrics(eval_pred) -> dict[str, float]:
    """Accuracy, F1 (binary F1 of class 1 for two labels, else macro), macro-F1 and Matthews correlation, with
    sklearn; and `predicted_class_share`, the share of rows predicted as the most predicted class (1.0: one class
    for every row, which `trainer_callbacks.OneClassWarningCallback` warns of)."""
    logits, labels = eval_pred
    logits = logits[0] if isinstance(logits, tuple) else logits
    preds = np.asarray(logits).argmax(-1)
    binary = np.asarray(logits).shape[-1] == 2
    return {
        "accuracy": float(accuracy_score(labels, preds)),
        "f1": float(f1_score(labels, preds, average="binary" if binary else "macro", zero_division=0)),
        "macro_f1": float(f1_score(labels, preds, average="macro", zero_division=0)),
        "mcc": float(matthews_corrcoef(labels, preds)),  # CoLA's metric
        "predicted_class_share": float(np.bincount(preds).max() / len(preds)) if len(preds) else 0.0,
    }


def load_data(data_args: DataArguments):
    """The splits `data_args` name: the user's files when `--train_file` is given, else the task."""
    from .data import load_files, load_task

    caps = {"seed": data_args.split_seed, "max_train_samples": data_args.max_train_samples,
            "max_eval_samples": data_args.max_eval_samples}
    if data_args.train_file is None:
        return load_task(data_args.task, glue_dir=data_args.glue_dir, tasks_dir=data_args.tasks_dir, **caps)
    return load_files(data_args.train_file, data_args.validation_file, data_args.test_file, **caps)


def load_tokenized(data_args: DataArguments, tokenizer):
    """The task's splits, tokenized (no padding: the collator pads per batch), and its label names."""
    from .data import tokenize_task

    splits = load_data(data_args)
    label_names = splits["train"].features["label"].names
    return tokenize_task(splits, tokenizer, max_length=data_args.max_length), label_names


def train_and_evaluate(model, tokenizer, splits, training_args: TrainingArguments, callbacks=None) -> dict:
    """Train with `Trainer`, evaluate on validation and test, save the model and `results.json` to output_dir.

    `model` is one of our `AdapterModel`s.
    """
    check_deepspeed_config(training_args.deepspeed, cpu=training_args.use_cpu)
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=splits["train"],
        eval_dataset=splits["validation"],
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
        callbacks=callbacks,
    )
    results = dict(trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint).metrics)
    results.update(trainer.evaluate(splits["validation"], metric_key_prefix="eval"))
    results.update(trainer.evaluate(splits["test"], metric_key_prefix="test"))
    # Only the expert itself goes to output_dir (no tokenizer copy, no pickled TrainingArguments); gathering just
    # the adapter weights is a collective under ZeRO-3, so every rank takes part.
    state_dict = model.gathered_saved_state_dict()
    if trainer.is_world_process_zero():
        model.save_pretrained(training_args.output_dir, state_dict=state_dict)
        path = os.path.join(training_args.output_dir, "results.json")
        atomic_write(path, lambda p: open(p, "w").write(json.dumps(results, indent=2)))
    return results
