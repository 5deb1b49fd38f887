"""Users' own data files: CSV, TSV, JSON or JSON Lines with columns `text`, optional `text_pair`, `label` (label names
or ids), and task folders holding them (`train.<ext>`, `validation.<ext>` or `dev.<ext>`, `test.<ext>`)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from datasets import DatasetDict

from .rows import SPLITS, capped, check_cap, clean, stratified_split, to_dataset_dict

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
        rows.append((*(clean(t) for t in texts), str(label).strip(), where))
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
    check_cap("max_train_samples", max_train_samples)
    check_cap("max_eval_samples", max_eval_samples)
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
        splits.update(stratified_split(splits["train"], seed, held_out))
    return capped(to_dataset_dict(splits, names, pair=pairs["train"]), max_train_samples, max_eval_samples, seed)


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


def task_folder(name: str, tasks_dir: str | os.PathLike | None) -> Path | None:
    """The folder a task name stands for: a path to a task folder, or `<tasks_dir>/<name>` (tasks_dir defaulting
    to `$HF_TTMOE_TASKS_DIR`); None when neither exists."""
    if Path(name).is_dir():
        return Path(name)
    tasks_dir = tasks_dir or os.environ.get("HF_TTMOE_TASKS_DIR")
    if tasks_dir and (Path(tasks_dir) / name).is_dir():
        return Path(tasks_dir) / name
    return None
