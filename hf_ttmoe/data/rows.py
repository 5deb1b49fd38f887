"""Labelled rows into `datasets` splits: the split we carve ourselves (stratified, deterministic), stratified caps,
text cleaning. Seeds go through `random.Random(str)`, which does not depend on `PYTHONHASHSEED`, so the same seed gives
identical splits in every process."""

from __future__ import annotations

import random
from collections import defaultdict

from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

SPLITS = ("train", "validation", "test")

HELD_OUT_FRACTION = 0.1  # of each label, for each split we carve out ourselves (80/10/10 for embedded corpora)

LabelledRow = tuple[str, str] | tuple[str, str, str]  # (text, label) or (text, text_pair, label): label last


def clean(text: str) -> str:
    return " ".join(text.split())


def stratified_split(rows: list[LabelledRow], seed: int, held_out: tuple[str, ...]) -> dict[str, list[LabelledRow]]:
    """Deterministic split of rows (label last): each `held_out` split gets `HELD_OUT_FRACTION` of every label
    (at least one row), "train" the rest; each split is then shuffled."""
    by_label = defaultdict(list)
    for row in rows:
        by_label[row[-1]].append(row)
    splits = {name: [] for name in ("train", *held_out)}
    for label in sorted(by_label):
        group = by_label[label]
        random.Random(f"{seed}-split-{label}").shuffle(group)
        n = max(1, round(len(group) * HELD_OUT_FRACTION))
        for i, name in enumerate(held_out):
            splits[name] += group[i * n : (i + 1) * n]
        splits["train"] += group[len(held_out) * n :]
    for name, split in splits.items():
        random.Random(f"{seed}-{name}").shuffle(split)
    return splits


def to_dataset_dict(splits: dict[str, list[LabelledRow]], label_names: list[str], pair: bool = False) -> DatasetDict:
    columns = {"text": Value("string")}
    if pair:
        columns["text_pair"] = Value("string")
    features = Features({**columns, "label": ClassLabel(names=list(label_names))})
    return DatasetDict({
        name: Dataset.from_dict({col: [row[i] for row in splits[name]] for i, col in enumerate(features)},
                                features=features)
        for name in SPLITS
    })


def stratified_cap(ds: Dataset, n: int | None, seed: int) -> Dataset:
    """`n` rows of `ds`, stratified by label (largest-remainder quotas), in their original order; deterministic."""
    if n is None or n >= len(ds):
        return ds
    by_label = defaultdict(list)
    for i, label in enumerate(ds["label"]):
        by_label[label].append(i)
    exact = {label: n * len(rows) / len(ds) for label, rows in by_label.items()}
    quota = {label: int(q) for label, q in exact.items()}
    for label in sorted(exact, key=lambda lab: (quota[lab] - exact[lab], lab))[: n - sum(quota.values())]:
        quota[label] += 1
    keep = []
    for label in sorted(by_label):
        rows = by_label[label]
        random.Random(f"{seed}-cap-{label}").shuffle(rows)
        keep += rows[: quota[label]]
    return ds.select(sorted(keep))


def check_cap(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name}={value!r} must be None (no cap) or a positive int.")


def capped(splits: DatasetDict, max_train_samples: int | None, max_eval_samples: int | None,
            seed: int) -> DatasetDict:
    caps = {s: max_train_samples if s == "train" else max_eval_samples for s in splits}
    return DatasetDict({s: stratified_cap(ds, caps[s], seed) for s, ds in splits.items()})
