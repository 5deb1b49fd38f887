"""The rows every method sees, exported once per run as JSON Lines, and read back (tokenized) by the methods.

The rows are those `hf_ttmoe.commands.train_expert` trains on and `evaluate` scores with the same caps and split seed:
`hf_ttmoe.data.load_task(task, seed=split_seed, max_train_samples=max_train, max_eval_samples=max_eval)`. The
AdapterFusion worker, in its own environment, reads the files and nothing of hf_ttmoe. One folder per task:
`train.jsonl`, `validation.jsonl`, `test.jsonl` (`{"text", ["text_pair",] "label"}`, label = id) and `labels.json`
(`{"labels": [names in id order], "pair": bool}`).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from datasets import Dataset

from hf_ttmoe.data import SPLITS, load_task

from .settings import Settings

LABELS_FILE = "labels.json"


def load_capped(task: str, settings: Settings):
    """The task's train / validation / test splits under the run's caps."""
    return load_task(task, seed=settings.split_seed, max_train_samples=settings.max_train,
                     max_eval_samples=settings.max_eval, glue_dir=settings.data_dir("glue"),
                     tasks_dir=settings.data_dir("tasks"))


def export_rows(tasks: list[str], settings: Settings, folder: Path) -> dict:
    """Write every task's capped splits under `folder/<task>/`; returns `{task: {"labels", "pair", "rows"}}`."""
    manifest = {}
    for task in tasks:
        splits = load_capped(task, settings)
        out = folder / task
        out.mkdir(parents=True, exist_ok=True)
        pair = "text_pair" in splits["train"].column_names
        for split in SPLITS:
            with open(out / f"{split}.jsonl", "w", encoding="utf-8") as f:
                for row in splits[split]:
                    f.write(json.dumps({k: row[k] for k in ("text", "text_pair", "label") if k in row}) + "\n")
        labels = splits["train"].features["label"].names
        (out / LABELS_FILE).write_text(json.dumps({"labels": labels, "pair": pair}, indent=2) + "\n")
        manifest[task] = {"labels": labels, "pair": pair, "rows": {s: len(splits[s]) for s in SPLITS}}
        print(f"  rows of {task}: " + ", ".join(f"{s} {len(splits[s])}" for s in SPLITS), flush=True)
    return manifest


def read_rows(folder: Path, task: str, split: str) -> list[dict]:
    with open(Path(folder) / task / f"{split}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_labels(folder: Path, task: str) -> list[str]:
    return json.loads((Path(folder) / task / LABELS_FILE).read_text())["labels"]


def encode(rows: list[dict], tokenizer, max_length: int, task_id: int) -> Dataset:
    """Tokenized rows (no padding) with `labels` and `task_ids` columns."""
    texts = [r["text"] for r in rows]
    pairs = [r["text_pair"] for r in rows] if rows and "text_pair" in rows[0] else None
    enc = tokenizer(texts, pairs, truncation=True, max_length=max_length)
    return Dataset.from_dict({**enc, "labels": [r["label"] for r in rows], "task_ids": [task_id] * len(rows)})


def mixed(folder: Path, tasks: list[str], split: str, tokenizer, max_length: int, seed: int) -> Dataset:
    """Every task's rows of `split`, tokenized, `task_ids` = position in `tasks`, shuffled together."""
    from datasets import concatenate_datasets

    parts = [encode(read_rows(folder, t, split), tokenizer, max_length, i) for i, t in enumerate(tasks)]
    return concatenate_datasets(parts).shuffle(seed=seed)


def timing_rows(folder: Path, tasks: list[str], n: int, seed: int) -> list[tuple[int, dict]]:
    """`n` test rows drawn round-robin over the tasks (`(task_id, row)`), the same for every method."""
    pools = [read_rows(folder, t, "test") for t in tasks]
    rng = random.Random(f"{seed}-timing")
    for pool in pools:
        rng.shuffle(pool)
    return [(i % len(tasks), pools[i % len(tasks)][(i // len(tasks)) % len(pools[i % len(tasks)])])
            for i in range(n)]
