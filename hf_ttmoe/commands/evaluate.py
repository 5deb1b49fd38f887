"""Evaluate a TT-LoRA MoE without task ids: per-task quality routed vs the right expert by hand, router accuracy,
the task -> chosen-expert confusion matrix (PNG) and expert usage.

    python scripts/evaluate.py --moe runs/demo/moe --output_dir runs/demo/eval --max_per_task 300

Installed as `hf-ttmoe-evaluate` too.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import DataCollatorWithPadding, HfArgumentParser

from hf_ttmoe import TTLoRAMoEModel, load_tokenizer
from hf_ttmoe.commands.train_router import mixed_router_data


@dataclass
class EvalArguments:
    moe: str = field(metadata={"help": "Saved TT-LoRA MoE directory or Hub id."})
    output_dir: str = field(default="eval", metadata={"help": "Where the table, JSON and PNG go."})
    split: str = field(default="test", metadata={"help": "Split to evaluate."})
    max_per_task: int | None = field(default=None, metadata={"help": "Rows per task (default: all)."})
    max_length: int = field(default=64, metadata={"help": "Truncate inputs to this many tokens."})
    batch_size: int = field(default=64, metadata={"help": "Evaluation batch size."})
    glue_dir: str | None = field(default=None, metadata={"help": "Folder of GLUE TSVs, for sst2 / mrpc experts."})
    tasks_dir: str | None = field(default=None, metadata={"help": "Folder of task folders (user files), for experts "
                                                          "trained with --train_file (default $HF_TTMOE_TASKS_DIR)."})
    split_seed: int = field(default=42, metadata={"help": "Seed of the task splits (as the experts used)."})


def name_table(label_names: list[list[str]]) -> tuple[list[str], np.ndarray]:
    """Every label name once (first-seen order), and `(E, C_max)` name ids per expert and label id (-1 past an
    expert's labels).

    >>> name_table([["neg", "pos"], ["no", "yes", "maybe"], ["neg", "pos"]])[1].tolist()
    [[0, 1, -1], [2, 3, 4], [0, 1, -1]]
    """
    vocab = list(dict.fromkeys(n for names in label_names for n in names))
    table = np.full((len(label_names), max(map(len, label_names))), -1, dtype=np.int64)
    for e, names in enumerate(label_names):
        table[e, : len(names)] = [vocab.index(n) for n in names]
    return vocab, table


def right_by_name(names: np.ndarray, tasks: np.ndarray, labels: np.ndarray, chosen: np.ndarray,
                  answers: np.ndarray) -> np.ndarray:
    """Per row: the label name the chosen expert answers is the row's gold label name. What a user receives is a
    name (`moe.decode`), so a row sent to an expert that shares the gold label's name (two sentiment experts, two
    entailment experts) can still be answered right; on the row's own expert this is plain accuracy.

    Args:
        names: `(E, C_max)` name ids from `name_table`.
        tasks, labels: `(N,)` each row's task (= its own expert) and gold label id.
        chosen, answers: `(N,)` the routed expert and the label id it predicted.
    """
    return names[chosen, answers] == names[tasks, labels]


def f1(labels, preds, num_labels):
    """Binary F1 of class 1 for two labels, else macro-F1 over the task's labels (a wrong expert's -1 never counts)."""
    classes = [1] if num_labels == 2 else list(range(num_labels))
    return f1_score(labels, preds, labels=classes, average="macro", zero_division=0)


@torch.no_grad()
def predict(moe, data, tokenizer, batch_size):
    """Routed and oracle (right expert by hand) predictions for every row."""
    rows = {"task": [], "label": [], "chosen": [], "routed": [], "oracle": []}
    loader = DataLoader(data, batch_size=batch_size, collate_fn=DataCollatorWithPadding(tokenizer))
    for batch in tqdm(loader, desc="evaluating"):
        task_ids, labels = batch.pop("task_ids"), batch.pop("labels")
        routed = moe(**batch)
        oracle = moe(**batch, expert_index=task_ids)
        rows["task"] += task_ids.tolist()
        rows["label"] += labels.tolist()
        rows["chosen"] += routed.expert_index.tolist()
        rows["routed"] += routed.predictions.tolist()
        rows["oracle"] += oracle.predictions.tolist()
    return {k: np.array(v) for k, v in rows.items()}


def report(moe, rows) -> dict:
    tasks, n = moe.tasks, len(moe.tasks)
    confusion = np.zeros((n, n), dtype=int)
    np.add.at(confusion, (rows["task"], rows["chosen"]), 1)
    by_name = right_by_name(name_table(moe.label_names)[1], rows["task"], rows["label"], rows["chosen"],
                            rows["routed"])
    per_task = []
    for t, name in enumerate(tasks):
        sel = rows["task"] == t
        correct_expert = rows["chosen"][sel] == t
        routed = np.where(correct_expert, rows["routed"][sel], -1)  # a wrong expert answers in another label space
        labels, num_labels = rows["label"][sel], len(moe.label_names[t])
        per_task.append({
            "task": name, "rows": int(sel.sum()), "router_accuracy": float(correct_expert.mean()),
            "moe_accuracy": float(accuracy_score(labels, routed)), "moe_accuracy_by_name": float(by_name[sel].mean()),
            "oracle_accuracy":
                float(accuracy_score(labels, rows["oracle"][sel])),
            "moe_f1": float(f1(labels, routed, num_labels)), "oracle_f1": float(f1(labels, rows["oracle"][sel],
                                                                                    num_labels)),
        })
    return {"per_task": per_task, "router_accuracy": float((rows["chosen"] == rows["task"]).mean()),
            "confusion": confusion.tolist(), "usage": np.bincount(rows["chosen"], minlength=n).tolist(),
            "tasks": tasks, "router_layer": moe.config.router_layer}


def markdown(result: dict) -> str:
    lines = ["| task | rows | router acc. | MoE acc. | MoE acc. by label name | oracle acc. | MoE F1 | oracle F1 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["per_task"]:
        lines.append(f"| {r['task']} | {r['rows']} | {100 * r['router_accuracy']:.2f} | {100 * r['moe_accuracy']:.2f} "
                     f"| {100 * r['moe_accuracy_by_name']:.2f} | {100 * r['oracle_accuracy']:.2f} "
                     f"| {100 * r['moe_f1']:.2f} | {100 * r['oracle_f1']:.2f} |")
    usage = ", ".join(f"{t}: {u}" for t, u in zip(result["tasks"], result["usage"]))
    lines += ["", f"Router accuracy over all rows: {100 * result['router_accuracy']:.2f}% "
              f"(router_layer={result['router_layer']}). Expert usage: {usage}.",
              "MoE acc. counts a row sent to another expert as wrong; by label name, it counts the label name that "
              "expert answers (`moe.decode`), right when it is the row's gold label name."]
    return "\n".join(lines)


def plot_confusion(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conf = np.array(result["confusion"])
    tasks = result["tasks"]
    fig, ax = plt.subplots(figsize=(1.2 * len(tasks) + 2, 1.0 * len(tasks) + 1.5))
    ax.imshow(conf / conf.sum(1, keepdims=True).clip(min=1), cmap="Blues", vmin=0, vmax=1)
    for i in range(len(tasks)):
        for j in range(len(tasks)):
            ax.text(j, i, str(conf[i, j]), ha="center", va="center", color="black")
    ax.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right")
    ax.set_yticks(range(len(tasks)), tasks)
    ax.set_xlabel("expert chosen by the router")
    ax.set_ylabel("true task")
    ax.set_title(f"TT-LoRA MoE routing (router accuracy {100 * result['router_accuracy']:.2f}%)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(EvalArguments).parse_args_into_dataclasses(args=argv)
    moe = TTLoRAMoEModel.from_pretrained(args.moe)
    tokenizer = load_tokenizer(moe.config)
    data = mixed_router_data(moe, moe.tasks, args.split, args.max_per_task, args.max_length, args.glue_dir,
                             args.split_seed, tokenizer, args.tasks_dir)
    result = report(moe, predict(moe, data, tokenizer, args.batch_size))
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(result)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    (out / "results.md").write_text(table + "\n")
    plot_confusion(result, out / "confusion.png")
    print(table)
    print(f"\nwrote {out / 'results.md'}, {out / 'results.json'} and {out / 'confusion.png'}")
    return result


def cli() -> None:
    """The `hf-ttmoe-evaluate` console command."""
    main(sys.argv[1:])


if __name__ == "__main__":
    cli()
