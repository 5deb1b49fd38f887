"""Importing a real PEFT LoRA as a TT-LoRA expert (`TTLoRAModel.from_lora`, issue 16): accuracy of the LoRA vs its
TT-SVD import at several TT ranks, the parameter ratio, the per-module ΔW error, and a few fine-tuning steps after.

    python -m benchmarks.bench_from_lora --resume     # --data_dir ../shared/data (default)

Per task (SST-2 from `glue/`; CR from `tasks/` through the user-file path `load_task("hub:csv", data_files=...)`):
a PEFT LoRA r=16 (alpha 32, query/value, head in `modules_to_save`) is trained at each of `--lora_lrs` and the best
on dev rows is kept; it is saved as a PEFT adapter and imported at each of `--tt_ranks` (and at `--exact_rank`, where
the import is exact); each import is evaluated as imported, then after `--finetune_steps` steps (batch 32) at the
learning rate chosen among `--finetune_lrs` on dev rows at `--select_rank`. Control: TT-LoRA trained from its usual
zero-ΔW init for the same steps (`--zero_ranks`, learning rate chosen the same way). Test rows are only reported.
Skips (exit 0) when the data folder is absent; `--resume` keeps the rows of an earlier run with the same settings
(and the adapters under runs/bench_from_lora/). Results: benchmarks/results/<--name>.json, then a markdown table.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch
from tqdm import tqdm

from benchmarks.common import resumed_rows, save
from hf_ttmoe import (
    DEFAULT_BASE_MODEL,
    TTLoRAConfig,
    TTLoRAModel,
    load_base_model,
    load_task,
    load_tokenizer,
    tokenize_task,
)

RUNS = Path("runs/bench_from_lora")


def task_splits(task: str, data_dir: Path, args):
    """SST-2 through the GLUE reader, any `tasks/<name>/` folder through the user-file path (TSV, label names)."""
    caps = {"seed": args.split_seed, "max_train_samples": args.max_train_samples}
    if task == "sst2":
        splits = load_task("sst2", glue_dir=data_dir / "glue", **caps)
    else:
        folder = data_dir / "tasks" / task
        files = {split: str(folder / f"{split}.tsv") for split in ("train", "test")}
        splits = load_task("hub:csv", data_files=files, delimiter="\t", quoting=csv.QUOTE_NONE, **caps)
    dev = splits["validation"]
    splits["validation"] = dev.shuffle(seed=args.split_seed).select(range(min(args.max_dev_samples, len(dev))))
    return splits


def trainer_for(model, tokenizer, splits, args, lr: float, output_dir: str, **limits):
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from hf_ttmoe.training import compute_metrics

    training_args = TrainingArguments(
        output_dir=output_dir, learning_rate=lr, per_device_train_batch_size=32, per_device_eval_batch_size=128,
        save_strategy="no", report_to=[], use_cpu=True, seed=args.seed, logging_steps=50, warmup_steps=0.06,
        weight_decay=0.0, **limits)
    return Trainer(model=model, args=training_args, train_dataset=splits["train"],
                   data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=compute_metrics)


def accuracy(trainer, split) -> float:
    return trainer.evaluate(split, metric_key_prefix="eval")["eval_accuracy"]


class Results:
    """The rows of `benchmarks/results/<args.name>.json`, saved after each run, and the progress bar over runs."""

    def __init__(self, args):
        self.args = args
        self.rows = resumed_rows(args, ("resume",)) if args.resume else []
        plan = len(args.lora_lrs) + 2 * len(args.tt_ranks) + 2 * len(args.finetune_lrs) + len(args.zero_ranks) - 1
        self.progress = tqdm(total=len(args.tasks) * plan, desc="runs")

    def save(self) -> None:
        save(self.args.name, {"args": vars(self.args), "rows": self.rows})

    def record(self, row: dict) -> dict:
        self.rows.append(row)
        self.save()
        return row

    def find(self, **key) -> dict | None:
        return next((r for r in self.rows if all(r.get(k) == v for k, v in key.items())), None)


class TaskBench:
    """One task: its tokenized splits, the LoRA trained on it, its imports and their fine-tuning."""

    def __init__(self, task: str, results: Results):
        import peft

        self.peft, self.task, self.results, self.args = peft, task, results, results.args
        splits = task_splits(task, Path(self.args.data_dir), self.args)
        self.label_names = splits["train"].features["label"].names
        self.id2label = dict(enumerate(self.label_names))
        self.config = TTLoRAConfig(base_model_name_or_path=DEFAULT_BASE_MODEL, num_labels=len(self.label_names),
                                   id2label=self.id2label, task=task)
        self.tokenizer = load_tokenizer(self.config)
        self.data = tokenize_task(splits, self.tokenizer, max_length=self.args.max_length)
        self.adapter = None

    def trainer(self, model, lr: float = 0.0, **limits):
        output_dir = str(RUNS / self.task / "trainer")
        return trainer_for(model, self.tokenizer, self.data, self.args, lr, output_dir, **limits)

    def evaluate(self, model, split: str) -> float:
        return accuracy(self.trainer(model.eval()), self.data[split])

    def lora(self) -> None:
        """PEFT LoRA r=16, alpha 32, query/value, at each learning rate; the best on dev rows is imported."""
        results, task = self.results, self.task
        for lr in self.args.lora_lrs:
            adapter = RUNS / task / f"lora-{lr:g}"
            if not (results.find(task=task, kind="lora", lr=lr) and (adapter / "adapter_model.safetensors").is_file()):
                results.rows[:] = [r for r in results.rows
                                   if (r["task"], r["kind"], r.get("lr")) != (task, "lora", lr)]
                torch.manual_seed(self.args.seed)
                base = load_base_model(self.config)
                base.config.name_or_path = DEFAULT_BASE_MODEL  # the adapter names the Hub id, as a Hub adapter does
                model = self.peft.get_peft_model(base, self.peft.LoraConfig(
                    r=16, lora_alpha=32, target_modules=["query", "value"], task_type="SEQ_CLS"))
                trainer = self.trainer(model, lr, num_train_epochs=self.args.epochs)
                t0 = time.perf_counter()
                trainer.train()
                model.save_pretrained(adapter)
                results.record({"task": task, "kind": "lora", "lr": lr, "train_s": time.perf_counter() - t0,
                                "dev_accuracy": accuracy(trainer, self.data["validation"]),
                                "lora_params": sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)})
            results.progress.update()
        best = max((r for r in results.rows if r["task"] == task and r["kind"] == "lora"),
                   key=lambda r: r["dev_accuracy"])
        self.adapter = RUNS / task / f"lora-{best['lr']:g}"
        if "test_accuracy" not in best:
            model = self.peft.PeftModel.from_pretrained(load_base_model(self.config), self.adapter)
            best.update(chosen=True, test_rows=len(self.data["test"]), dev_rows=len(self.data["validation"]),
                        test_accuracy=self.evaluate(model, "test"))
            results.save()

    def imported(self, rank: int) -> TTLoRAModel:
        return TTLoRAModel.from_lora(self.adapter, tt_rank=rank, id2label=self.id2label, task=self.task)

    def imports(self) -> None:
        """Each TT rank's import, evaluated as imported, with its parameter count and ΔW errors."""
        for rank in [*self.args.tt_ranks, self.args.exact_rank]:
            if not self.results.find(task=self.task, kind="import", tt_rank=rank):
                t0 = time.perf_counter()
                model = self.imported(rank)
                seconds = time.perf_counter() - t0
                report = model.from_lora_report
                self.results.record({
                    "task": self.task, "kind": "import", "tt_rank": rank, "import_s": seconds,
                    "test_accuracy": self.evaluate(model, "test"), "tt_params": report.tt_params,
                    "lora_params": report.lora_params, "param_ratio": report.tt_params / report.lora_params,
                    "mean_rel_error": report.mean_rel_error, "max_rel_error": report.max_rel_error,
                    "rel_errors": {m: f.rel_error for m, f in report.modules.items()},
                    "tt_ranks": next(iter(report.modules.values())).tt_ranks})
            self.results.progress.update()

    def finetune(self, start: str, rank: int, lr: float) -> dict:
        """`--finetune_steps` steps from the import (`start="import"`) or from TT-LoRA's zero-ΔW init ("zero")."""
        kind = f"{start}+finetune"
        row = self.results.find(task=self.task, kind=kind, tt_rank=rank, lr=lr)
        if row is None:
            torch.manual_seed(self.args.seed)
            model = self.imported(rank) if start == "import" else TTLoRAModel(TTLoRAConfig(
                base_model_name_or_path=DEFAULT_BASE_MODEL, tt_rank=rank, num_labels=len(self.label_names),
                id2label=self.id2label, task=self.task))
            trainer = self.trainer(model.train(), lr, max_steps=self.args.finetune_steps)
            trainer.train()
            row = self.results.record({
                "task": self.task, "kind": kind, "tt_rank": rank, "lr": lr, "steps": self.args.finetune_steps,
                "dev_accuracy": accuracy(trainer, self.data["validation"]),
                "test_accuracy": accuracy(trainer, self.data["test"])})
        self.results.progress.update()
        return row

    def finetunes(self) -> None:
        """The learning rate of each start is chosen on dev rows at `--select_rank`, then used at every rank."""
        for start, ranks in (("import", self.args.tt_ranks), ("zero", self.args.zero_ranks)):
            grid = [self.finetune(start, self.args.select_rank, lr) for lr in self.args.finetune_lrs]
            lr = max(grid, key=lambda r: r["dev_accuracy"])["lr"]
            for rank in ranks:
                if rank != self.args.select_rank:
                    self.finetune(start, rank, lr)


def bench(args) -> None:
    data_dir = Path(args.data_dir)
    if not (data_dir / "glue").is_dir() or not (data_dir / "tasks").is_dir():
        print(f"skipped: no data folder at {str(data_dir)!r} (glue/ and tasks/, see ../shared/data/README.md)")
        return
    torch.set_num_threads(args.threads)
    results = Results(args)
    for task in args.tasks:
        bench = TaskBench(task, results)
        bench.lora()
        bench.imports()
        bench.finetunes()
    results.progress.close()
    print_tables(args, results.rows)


def print_tables(args, rows: list[dict]) -> None:
    """Markdown: per task, the LoRA then each TT rank (as imported, fine-tuned, from zero); test accuracy in %."""

    def find(**key) -> list[dict]:
        return [r for r in rows if all(r.get(k) == v for k, v in key.items())]

    steps = args.finetune_steps
    print(f"\nTest accuracy (%); +{steps} steps: batch 32, learning rate chosen on dev rows at rank "
          f"{args.select_rank}")
    print(f"| task | model | adapter params | / LoRA | ΔW rel. error (mean / max) | test acc. | import +{steps} "
          f"steps | TT-LoRA from zero, {steps} steps |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for task in args.tasks:
        lora = next(iter(find(task=task, chosen=True)), None)
        if lora is None:
            continue
        print(f"| {task} | PEFT LoRA r=16 (lr {lora['lr']:g}) | {lora['lora_params']:,} | 1 | — | "
              f"{100 * lora['test_accuracy']:.2f} | — | — |")
        chosen = {}
        for start in ("import", "zero"):
            grid = find(task=task, kind=f"{start}+finetune", tt_rank=args.select_rank)
            chosen[start] = max(grid, key=lambda r: r["dev_accuracy"])["lr"] if grid else None
        for rank in [*args.tt_ranks, args.exact_rank]:
            imp = next(iter(find(task=task, kind="import", tt_rank=rank)), None)
            if imp is None:
                continue
            tuned = {start: next((f"{100 * r['test_accuracy']:.2f} (lr {lr:g})" for r in find(
                task=task, kind=f"{start}+finetune", tt_rank=rank, lr=lr)), "—") for start, lr in chosen.items()}
            print(f"| {task} | TT import, rank {rank} | {imp['tt_params']:,} | {imp['param_ratio']:.3f} | "
                  f"{imp['mean_rel_error']:.3g} / {imp['max_rel_error']:.3g} | {100 * imp['test_accuracy']:.2f} | "
                  f"{tuned['import']} | {tuned['zero']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default="../shared/data", help="folder holding glue/ and tasks/")
    parser.add_argument("--tasks", nargs="+", default=["sst2", "cr"], help="sst2 and/or folders of tasks/")
    parser.add_argument("--max_train_samples", type=int, default=4000)
    parser.add_argument("--max_dev_samples", type=int, default=500, help="dev rows that choose learning rates "
                        "(test rows are all used: SST-2 872, CR 755)")
    parser.add_argument("--max_length", type=int, default=64)
    parser.add_argument("--epochs", type=float, default=1.0, help="epochs of LoRA training")
    parser.add_argument("--lora_lrs", type=float, nargs="+", default=[1e-3, 2e-3])
    parser.add_argument("--tt_ranks", type=int, nargs="+", default=[2, 5, 10, 16])
    parser.add_argument("--exact_rank", type=int, default=64, help="a TT rank at which the import is exact (every "
                        "bond reaches the TT rank of a rank-16 ΔW in MiniLM's layout): imported and evaluated only")
    parser.add_argument("--finetune_steps", type=int, default=50)
    parser.add_argument("--finetune_lrs", type=float, nargs="+", default=[2e-3, 5e-3])
    parser.add_argument("--select_rank", type=int, default=5, help="TT rank at which the fine-tuning lr is chosen")
    parser.add_argument("--zero_ranks", type=int, nargs="+", default=[5],
                        help="TT ranks of the control: TT-LoRA trained from zero for the same steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split_seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1: on a 2-core box others share, 2 threads ran 2-3x slower)")
    parser.add_argument("--name", default="from_lora", help="results file benchmarks/results/<name>.json")
    parser.add_argument("--resume", action="store_true", help="keep the rows of an earlier run with the same settings")
    bench(parser.parse_args())


if __name__ == "__main__":
    main()
