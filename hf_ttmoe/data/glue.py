"""GLUE tasks from the TSV folders of the shared data layout (`<glue_dir>/sst2/*.tsv`, `<glue_dir>/mrpc/*.tsv`)."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from datasets import DatasetDict

from .rows import SPLITS, LabelledRow, stratified_split, to_dataset_dict


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


def load_glue(task: str, glue_dir: str | os.PathLike | None, seed: int) -> DatasetDict:
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
        splits.update(stratified_split(splits["train"], seed, held_out))
    return to_dataset_dict(splits, spec.label_names, pair=task == "mrpc")
