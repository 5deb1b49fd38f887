"""AdapterFusion (Pfeiffer et al., 2021) with AdapterHub's `adapters`, run in its own environment
(`setup_adapters_env.sh`: adapters 1.3.0, transformers 4.57.6) by `adapterfusion.py`:

    runs/multitask/.venv-adapters/bin/python benchmarks/multitask/adapterfusion_worker.py job.json

It imports nothing of hf_ttmoe: the job file names the base model's folder, the folder of exported rows
(`<task>/{train,test}.jsonl`, `<task>/labels.json`) and the budget; results are written as JSON to `job["out"]`.

As AdapterHub's documentation describes it: stage 1 trains one bottleneck adapter (`seq_bn`, the Pfeiffer
configuration) and a classification head per task (at each rate of `adapter_lrs`, keeping the best on the task's
validation rows, as every method's per-task pieces); stage 2, for each target task, adds a Fusion layer over all the
task adapters (`Fuse`), freezes the adapters (`train_adapter_fusion`) and trains the fusion and the task's head on
that task's rows. At test each task is answered by its own fusion and head: AdapterFusion is told the task.
Heads are one linear layer on the base's pooler (`layers=1, use_pooler=True`), the head every other method uses.
The training loop is the `Trainer` defaults the other methods get: AdamW, linear decay, no warm-up, gradient norm
clipped at 1.0, `ceil(epochs * ceil(rows / batch))` steps.
"""

from __future__ import annotations

import importlib.util
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from sklearn.metrics import accuracy_score, f1_score

ADAPTER_CONFIG = "seq_bn"
TRAINING_FILE = "training.json"
# The learning-rate choice every method shares: a plain module of the benchmarks, loaded by path (the worker runs in
# its own environment, outside the project's packages).
_spec = importlib.util.spec_from_file_location("lr_grid", Path(__file__).parents[1] / "lr_grid.py")
lr_grid = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lr_grid)


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def tokenize(tokenizer, rows: list[dict], max_length: int) -> list[dict]:
    texts = [r["text"] for r in rows]
    pairs = [r["text_pair"] for r in rows] if rows and "text_pair" in rows[0] else None
    enc = tokenizer(texts, pairs, truncation=True, max_length=max_length)
    return [{**{k: enc[k][i] for k in enc}, "labels": r["label"]} for i, r in enumerate(rows)]


def batches(tokenizer, features: list[dict], batch_size: int, order: list[int] | None = None):
    order = order if order is not None else list(range(len(features)))
    for i in range(0, len(order), batch_size):
        yield tokenizer.pad([features[j] for j in order[i:i + batch_size]], return_tensors="pt")


def train(model, tokenizer, features: list[dict], job: dict, lr: float) -> dict:
    """The Trainer defaults the other methods are trained with, as a plain loop."""
    from transformers import get_linear_schedule_with_warmup

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    per_epoch = math.ceil(len(features) / job["batch_size"])
    total = math.ceil(job["epochs"] * per_epoch)
    schedule = get_linear_schedule_with_warmup(optimizer, 0, total)
    generator = torch.Generator().manual_seed(job["seed"])
    model.train()
    step, t0 = 0, time.perf_counter()
    while step < total:
        order = torch.randperm(len(features), generator=generator).tolist()
        for batch in batches(tokenizer, features, job["batch_size"], order):
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            step += 1
            if step == total:
                break
    model.eval()
    return {"train_s": round(time.perf_counter() - t0, 1), "steps": step,
            "trainable_params": sum(p.numel() for p in params)}


def train_adapter(model, tokenizer, data: dict, num_labels: int, task: str, job: dict, lr: float) -> dict:
    """A fresh bottleneck adapter and head named `task`, trained alone at `lr`; returns its training record with
    the validation accuracy."""
    torch.manual_seed(job["seed"])
    model.add_adapter(task, config=ADAPTER_CONFIG)
    model.add_classification_head(task, num_labels=num_labels, layers=1, use_pooler=True)
    model.train_adapter(task)
    model.active_head = task
    info = train(model, tokenizer, data["train"], job, lr)
    info["validation_accuracy"] = evaluate(model, tokenizer, data["validation"], num_labels)["accuracy"]
    return info


def f1(labels, preds, num_labels: int) -> float:
    """Binary F1 of class 1 for two labels, else macro-F1 (as hf_ttmoe.commands.evaluate)."""
    classes = [1] if num_labels == 2 else list(range(num_labels))
    return float(f1_score(labels, preds, labels=classes, average="macro", zero_division=0))


def activate(model, tasks: list[str], target: str) -> None:
    from adapters import Fuse

    model.set_active_adapters(Fuse(*tasks, name=f"fusion_{target}"))
    model.active_head = target


@torch.no_grad()
def evaluate(model, tokenizer, features: list[dict], num_labels: int) -> dict:
    labels, preds = [], []
    for batch in batches(tokenizer, features, 64):
        labels += batch.pop("labels").tolist()
        preds += model(**batch).logits.argmax(-1).tolist()
    return {"rows": len(labels), "accuracy": float(accuracy_score(labels, preds)),
            "f1": f1(labels, preds, num_labels)}


@torch.no_grad()
def timing(model, base, tokenizer, job: dict, tasks: list[str]) -> dict:
    """Median seconds of the AdapterFusion forward over one mixed batch (each task's rows through its fusion and head)
    and of the plain base encoder over the same batch, interleaved."""
    rows = job["timing"]["rows"]
    groups = {}
    for task_id, row in rows:
        groups.setdefault(tasks[task_id], []).append(row)
    feats = {t: tokenize(tokenizer, rs, job["max_length"]) for t, rs in groups.items()}
    every = [f for fs in feats.values() for f in fs]
    plain = next(batches(tokenizer, [{k: v for k, v in f.items() if k != "labels"} for f in every], len(every)))
    padded = {t: next(batches(tokenizer, [{k: v for k, v in f.items() if k != "labels"} for f in fs], len(fs)))
              for t, fs in feats.items()}

    def fused():
        for t, batch in padded.items():
            activate(model, tasks, t)
            model(**batch)

    fns = {"adapterfusion": fused, "base": lambda: base(**plain)}
    times = {k: [] for k in fns}
    for r in range(1 + job["timing"]["reps"]):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if r:
                times[name].append(time.perf_counter() - t0)
    return {"rows": len(rows), **{f"{k}_s": statistics.median(v) for k, v in times.items()}}


def main(job_path: str) -> None:
    import adapters
    import transformers
    from adapters import AutoAdapterModel, Fuse
    from transformers import AutoModel, AutoTokenizer

    job = json.loads(Path(job_path).read_text())
    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    tasks, rows_dir, cache = job["tasks"], Path(job["rows_dir"]), Path(job["adapters_dir"])
    labels = {t: json.loads((rows_dir / t / "labels.json").read_text())["labels"] for t in tasks}
    tokenizer = AutoTokenizer.from_pretrained(job["base"])
    data = {t: {s: tokenize(tokenizer, read_jsonl(rows_dir / t / f"{s}.jsonl"), job["max_length"])
                for s in ("train", "validation", "test")} for t in tasks}
    model = AutoAdapterModel.from_pretrained(job["base"])
    base = AutoModel.from_pretrained(job["base"]).eval()
    training = {"adapters": {}, "fusions": {}}

    def folder(task: str, lr: float) -> Path:
        return cache / task / f"lr{lr:g}"

    def complete(path: Path) -> bool:
        return (path / TRAINING_FILE).exists()  # written last

    def read(path: Path) -> dict:
        return json.loads((path / TRAINING_FILE).read_text())

    def train_and_save(task: str, lr: float, path: Path) -> None:
        info = train_adapter(model, tokenizer, data[task], len(labels[task]), task, job, lr)
        path.mkdir(parents=True, exist_ok=True)
        model.save_adapter(str(path), task, with_head=True)
        (path / TRAINING_FILE).write_text(json.dumps(info) + "\n")  # written last: the folder is complete
        model.delete_adapter(task)
        model.delete_head(task)

    choices = {}
    for i, task in enumerate(tasks):  # stage 1: a bottleneck adapter + head per task and rate, cached across runs
        print(f"  adapter {task} ({i + 1}/{len(tasks)})", flush=True)
        choices[task], records = lr_grid.tune(task, job["adapter_lrs"], folder, complete, train_and_save, read,
                                                 job["extend_grid"])
        training["adapters"].update({f"{task}@{lr:g}": info for lr, info in records.items()})
        model.load_adapter(str(folder(task, choices[task]["chosen"])), load_as=task, with_head=True)

    results = {}
    for i, task in enumerate(tasks):  # stage 2: a Fusion layer over every adapter, per target task
        print(f"  fusion for {task} ({i + 1}/{len(tasks)}): training", flush=True)
        torch.manual_seed(job["seed"])
        fuse = Fuse(*tasks, name=f"fusion_{task}")
        model.add_adapter_fusion(fuse)
        model.train_adapter_fusion(fuse)
        model.active_head = task
        for name, p in model.named_parameters():  # only this task's fusion and head train
            p.requires_grad = f".fusion_{task}." in name or f"heads.{task}." in name
        training["fusions"][task] = train(model, tokenizer, data[task]["train"], job, job["fusion_lr"])
        activate(model, tasks, task)
        results[task] = evaluate(model, tokenizer, data[task]["test"], len(labels[task]))
        print(f"  {task}: test accuracy {results[task]['accuracy']:.4f}", flush=True)

    extra = {n: p.numel() for n, p in model.named_parameters()}
    base_names = {f"bert.{n}" for n, _ in base.named_parameters()}
    stored = sum(v for n, v in extra.items() if n not in base_names)
    fusion = sum(v for n, v in extra.items() if "adapter_fusion_layer" in n)
    out = {"per_task": results, "trainable_params": stored, "stored_params": stored, "composition_params": fusion,
           "task_given": True, "training": training, "lr_choice": choices,
           "timing": timing(model, base, tokenizer, job, tasks),
           "versions": {"adapters": adapters.__version__, "transformers": transformers.__version__,
                        "torch": torch.__version__}}
    Path(job["out"]).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
