"""`load_task`: any task by name (embedded corpus, GLUE folder, Hub dataset, task folder of user files) as train /
validation / test splits; tokenizing them; mixing several tasks' rows for a router."""

from __future__ import annotations

import os

from datasets import ClassLabel, Dataset, DatasetDict, Value, concatenate_datasets

from .corpora import EMBEDDED_TASKS, load_embedded
from .files import load_files, task_folder, task_folder_files
from .glue import GLUE_TASKS, load_glue
from .rows import SPLITS, capped, check_cap, stratified_cap, stratified_split, to_dataset_dict


def load_hub(spec: str, seed: int, text_column: str = "text", text_pair_column: str | None = None,
         label_column: str = "label", **load_kwargs) -> DatasetDict:
    from datasets import load_dataset

    name, _, config = spec.partition(":")
    if not name:
        raise ValueError(f"Empty dataset name in 'hub:{spec}'; expected 'hub:<dataset>[:<config>]'.")
    raw = load_dataset(name, config or None, **load_kwargs)
    raw = DatasetDict({"train": raw}) if isinstance(raw, Dataset) else raw
    if "train" not in raw:
        raise ValueError(f"Dataset {spec!r} has no 'train' split; its splits are {list(raw)}.")
    columns = [c for c in (text_column, text_pair_column, label_column) if c]
    features = raw["train"].features
    if missing := [c for c in columns if c not in features]:
        raise ValueError(f"Dataset {spec!r} has no column(s) {missing}; its columns are {list(features)}. "
                         "Pass text_column=, text_pair_column=, label_column=.")
    feature = features[label_column]
    if isinstance(feature, ClassLabel):
        label_names, to_id = feature.names, {i: i for i in range(feature.num_classes)}
    else:
        values = {v for split in raw.values() for v in split[label_column] if v is not None}
        ordered = sorted(values) if all(isinstance(v, int) for v in values) else sorted(values, key=str)
        label_names, to_id = [str(v) for v in ordered], {v: i for i, v in enumerate(ordered)}

    splits = {}
    for split in SPLITS:
        if split in raw:  # rows without a label (GLUE test sets on the Hub are -1) or text are dropped
            rows = [(*r[:-1], to_id[r[-1]]) for r in zip(*(raw[split][c] for c in columns))
                    if r[-1] in to_id and all(isinstance(t, str) for t in r[:-1])]
            if rows:
                splits[split] = rows
    if "train" not in splits:
        raise ValueError(f"Dataset {spec!r} has no labelled rows with text in its 'train' split.")
    if held_out := tuple(s for s in SPLITS[1:] if s not in splits):
        splits.update(stratified_split(splits["train"], seed, held_out))
    return to_dataset_dict(splits, label_names, pair=bool(text_pair_column))


def load_task(
    name: str,
    *,
    seed: int = 42,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    glue_dir: str | os.PathLike | None = None,
    tasks_dir: str | os.PathLike | None = None,
    label_names: list[str] | None = None,
    **hub_kwargs,
) -> DatasetDict:
    """Load a task as train / validation / test splits with `text` (`text_pair`) and `label` (`ClassLabel`) columns.

    Args:
        name: an `EMBEDDED_TASKS` name, a `GLUE_TASKS` name, `hub:<dataset>[:<config>]`, a task folder of user files
            (see `task_folder_files`), or the name of such a folder inside `tasks_dir`.
        seed: seed of the splits we make (embedded tasks, MRPC validation, Hub datasets lacking a split) and of caps.
        max_train_samples: deterministic stratified cap on train.
        max_eval_samples: deterministic stratified cap on validation and on test.
        glue_dir: folder holding the `sst2/` and `mrpc/` TSV folders (default `$HF_TTMOE_GLUE_DIR`).
        tasks_dir: folder of task folders (default `$HF_TTMOE_TASKS_DIR`), for tasks named by folder name.
        label_names: the label names a model was trained with, in id order: a folder task maps its labels to them;
            any other task must have exactly these names (an expert's label order is checked, never assumed).
        hub_kwargs: for `hub:` tasks only: `text_column` ("text"), `text_pair_column` (None), `label_column`
            ("label"), and any `datasets.load_dataset` keyword (`data_files=`, `revision=`, ...).
    """
    check_cap("max_train_samples", max_train_samples)
    check_cap("max_eval_samples", max_eval_samples)
    if hub_kwargs and not name.startswith("hub:"):
        raise ValueError(f"Keyword arguments {sorted(hub_kwargs)} only apply to 'hub:' tasks, not to {name!r}.")
    if name in EMBEDDED_TASKS:
        splits = load_embedded(name, seed)
    elif name in GLUE_TASKS:
        splits = load_glue(name, glue_dir, seed)
    elif name.startswith("hub:"):
        splits = load_hub(name[4:], seed, **hub_kwargs)
    elif (folder := task_folder(name, tasks_dir)) is not None:
        files = task_folder_files(folder)
        splits = load_files(files["train"], files.get("validation"), files.get("test"), seed=seed,
                            label_names=label_names)  # capped below
    else:
        raise ValueError(
            f"Unknown task {name!r}; valid: {sorted(EMBEDDED_TASKS)}, {sorted(GLUE_TASKS)}, "
            "'hub:<dataset>[:<config>]', a task folder of train/validation/test files, or a folder name inside "
            "tasks_dir= ($HF_TTMOE_TASKS_DIR"
            + (f" = {os.environ['HF_TTMOE_TASKS_DIR']!r})." if os.environ.get("HF_TTMOE_TASKS_DIR") else ", unset).")
        )
    found = splits["train"].features["label"].names
    if label_names is not None and list(label_names) != found:
        raise ValueError(f"Task {name!r} has labels {found} where {list(label_names)} were expected (the labels, in "
                         "id order, that the model was trained with).")
    return capped(splits, max_train_samples, max_eval_samples, seed)


def task_label_names(name: str, **kwargs) -> list[str]:
    """Label names of a task, in label-id order (a `hub:` task is loaded to find them; `kwargs` go to `load_task`)."""
    if name in EMBEDDED_TASKS:
        return list(EMBEDDED_TASKS[name].label_names)
    if name in GLUE_TASKS:
        return list(GLUE_TASKS[name].label_names)
    return load_task(name, **kwargs)["train"].features["label"].names


def tokenize_task(splits: DatasetDict, tokenizer, max_length: int = 128) -> DatasetDict:
    """Tokenize `text` (+ `text_pair`) with truncation and no padding (`DataCollatorWithPadding` pads per batch);
    `label` becomes `labels`; the text columns are dropped."""

    def encode(batch):
        return tokenizer(batch["text"], batch.get("text_pair"), truncation=True, max_length=max_length)

    text_columns = [c for c in ("text", "text_pair") if c in splits["train"].column_names]
    out = splits.map(encode, batched=True, remove_columns=text_columns, desc="tokenizing")
    return out.rename_column("label", "labels")


def mixed_tasks(tasks: dict[str, DatasetDict], split: str, max_per_task: int | None = None, seed: int = 42) -> Dataset:
    """Rows of several tasks in one shuffled dataset, for training a router over per-task experts.

    Columns: `text`, `text_pair` (None for single-sentence tasks), `label` (a plain int: label spaces differ between
    tasks), `task_id` (position of the task in `tasks`) and `task` (its name).

    Args:
        tasks: task name -> its splits, e.g. from `load_task`.
        split: which split of every task to take.
        max_per_task: deterministic stratified cap on each task's rows.
        seed: seed of the caps and of the shuffle.
    """
    if not tasks:
        raise ValueError("mixed_tasks needs at least one task; got an empty dict.")
    check_cap("max_per_task", max_per_task)
    parts = []
    for task_id, (name, splits) in enumerate(tasks.items()):
        if split not in splits:
            raise ValueError(f"Task {name!r} has no split {split!r}; its splits are {list(splits)}.")
        ds = stratified_cap(splits[split], max_per_task, seed).cast_column("label", Value("int64"))
        if "text_pair" not in ds.column_names:
            ds = ds.add_column("text_pair", [None] * len(ds), feature=Value("string"))
        ds = ds.add_column("task_id", [task_id] * len(ds), feature=Value("int64"))
        parts.append(ds.add_column("task", [name] * len(ds), feature=Value("string")))
    return concatenate_datasets(parts).shuffle(seed=seed)
