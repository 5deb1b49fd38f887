"""Users' own data files (`load_files`, task folders, `--train_file` in the commands): every format reads to the same
rows, labels map by name or id, and bad files fail naming the file, the line and what was expected."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from hf_ttmoe.data import DataFileError, load_files, load_task, task_folder_files
from hf_ttmoe.training import DataArguments, load_data

SHARED_TASKS = Path(__file__).resolve().parents[2] / "shared" / "data" / "tasks"

ROWS = [(f"sentence number {i} is {'good' if i % 3 else 'bad'}", f"pair {i}", "pos" if i % 3 else "neg")
        for i in range(60)]


def write(path: Path, rows, pair: bool = True, header=None) -> Path:
    """`rows` of (text, text_pair, label) in the format `path`'s extension names."""
    columns = header or (["text", "text_pair", "label"] if pair else ["text", "label"])
    records = [dict(zip(columns, (r if pair else (r[0], r[-1])))) for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".csv", ".tsv"):
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, columns, delimiter="\t" if path.suffix == ".tsv" else ",")
            writer.writeheader()
            writer.writerows(records)
    elif path.suffix == ".json":
        path.write_text(json.dumps(records, indent=1))
    else:
        path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return path


def as_rows(ds):
    return list(zip(ds["text"], ds["text_pair"], ds["label"])) if "text_pair" in ds.column_names else \
        list(zip(ds["text"], ds["label"]))


@pytest.mark.parametrize("ext", [".csv", ".tsv", ".json", ".jsonl"])
def test_every_format_reads_to_the_same_rows(tmp_path, ext):
    splits = load_files(write(tmp_path / f"train{ext}", ROWS[:40]), write(tmp_path / f"dev{ext}", ROWS[40:50]),
                        write(tmp_path / f"test{ext}", ROWS[50:]))
    assert splits["train"].features["label"].names == ["neg", "pos"]  # sorted, whatever the row order
    assert as_rows(splits["train"]) == [(t, p, int(lab == "pos")) for t, p, lab in ROWS[:40]]
    assert as_rows(splits["test"]) == [(t, p, int(lab == "pos")) for t, p, lab in ROWS[50:]]
    assert len(splits["validation"]) == 10


def test_quoted_csv_fields_keep_commas_quotes_and_newlines_collapse(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text('text,label\n"Fine, ""really"" fine",pos\n"two\nlines",neg\n')
    assert as_rows(load_files(path, path, path)["train"]) == [('Fine, "really" fine', 1), ("two lines", 0)]


def test_missing_splits_are_carved_from_train_stratified_and_deterministic(tmp_path):
    train = write(tmp_path / "train.tsv", ROWS, pair=False)
    a, b = load_files(train, seed=3), load_files(train, seed=3)
    assert {s: as_rows(a[s]) for s in a} == {s: as_rows(b[s]) for s in b}
    assert sorted(as_rows(a["train"]) + as_rows(a["validation"]) + as_rows(a["test"])) == sorted(
        (t, int(lab == "pos")) for t, _, lab in ROWS)
    for split in ("validation", "test"):  # 10% of each label: 2 of the 20 "neg", 4 of the 40 "pos"
        assert Counter(a[split]["label"]) == {0: 2, 1: 4}
    assert as_rows(load_files(train, seed=4)["test"]) != as_rows(a["test"])


def test_integer_labels_are_ids_and_label_names_map_names_and_ids(tmp_path):
    rows = [(t, p, str(i % 3)) for i, (t, p, _) in enumerate(ROWS)]
    splits = load_files(write(tmp_path / "train.jsonl", rows))
    assert splits["train"].features["label"].names == ["0", "1", "2"]
    path = tmp_path / "ids.json"
    path.write_text(json.dumps([{"text": "a", "label": 2}, {"text": "b", "label": 0}]))
    assert as_rows(load_files(path, path, path)["test"]) == [("a", 2), ("b", 0)]
    # a model's label names: names map to their index, ids below their count stay ids
    mixed = tmp_path / "mixed.csv"
    mixed.write_text("text,label\nx,positive\ny,0\n")
    names = ["negative", "positive"]
    splits = load_files(mixed, mixed, mixed, label_names=names)
    assert splits["train"].features["label"].names == names and as_rows(splits["train"]) == [("x", 1), ("y", 0)]


def test_caps_are_stratified(tmp_path):
    train = write(tmp_path / "train.csv", ROWS)
    splits = load_files(train, train, train, max_train_samples=30, max_eval_samples=9)
    assert Counter(splits["train"]["label"]) == {0: 10, 1: 20} and Counter(splits["test"]["label"]) == {0: 3, 1: 6}


@pytest.mark.parametrize("name, content, expected", [
    ("train.csv", "text,lab\nx,pos\n", "'train.csv' header: no column(s) ['label']; found ['text', 'lab']"),
    ("train.tsv", "text\tlabel\nx\tpos\textra\n", "'train.tsv' line 2: 3 fields where the header"),
    ("train.tsv", "text\tlabel\nx\tpos\ny\n", "'train.tsv' line 3: 1 fields where the header"),
    ("train.csv", "text,label\n,pos\n", "'train.csv' line 2: 'text' is ''; expected non-empty text"),
    ("train.csv", "text,label\nx,\n", "'train.csv' line 2: label ''; expected a label name or an integer id"),
    ("train.jsonl", '{"text": "x", "label": "a"}\n{"text": "y", label: 1}\n', "'train.jsonl' line 2: not a JSON "
     "object"),
    ("train.jsonl", '{"text": "x", "label": 1.5}\n', "'train.jsonl' line 1: label 1.5; expected a label name or an"),
    ("train.jsonl", '{"text": "x", "label": "a"}\n{"text": "y", "text_pair": "z", "label": "a"}\n',
     "'train.jsonl' line 2: a 'text_pair' the first row lacks"),
    ("train.json", '[{"text": "x", "label": "a"}, ["y", "a"]]', "'train.json' item 1: list where an object"),
    ("train.json", '[{"text": "x", "label": "a"},', "'train.json' line 1: not valid JSON"),
    ("train.jsonl", '{"text": "x", "label": -1}\n', "'train.jsonl' line 1: label id -1 is negative"),
    ("train.txt", "x\n", "unknown format '.txt'; valid: ('.csv', '.tsv', '.json', '.jsonl')"),
    ("train.csv", "text,label\n", "'train.csv' holds no rows"),
])
def test_bad_files_name_the_file_the_line_and_what_was_expected(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataFileError, match=None) as info:
        load_files(path)
    assert expected in str(info.value).replace(str(tmp_path) + "/", "")


def test_a_label_the_train_file_lacks_is_an_error_naming_file_and_line(tmp_path):
    train = write(tmp_path / "train.csv", ROWS[:10])
    test = write(tmp_path / "test.csv", ROWS[10:12] + [("text", "pair", "neutral")])
    with pytest.raises(DataFileError, match=r"test.csv' line 4: label 'neutral' is not one of \['neg', 'pos'\]"):
        load_files(train, test_file=test)
    with pytest.raises(DataFileError, match=r"train.csv' line 2: label '(pos|neg)' is not one of \['a', 'b'\]"):
        load_files(train, label_names=["a", "b"])
    single = write(tmp_path / "single.csv", ROWS[:10], pair=False)
    with pytest.raises(DataFileError, match="Files disagree on the 'text_pair' column"):
        load_files(train, test_file=single)
    with pytest.raises(FileNotFoundError, match="nowhere.csv' not found"):
        load_files(tmp_path / "nowhere.csv")


def test_task_folders_by_path_by_name_in_tasks_dir_and_env(tmp_path, monkeypatch):
    folder = tmp_path / "tasks" / "mine"
    write(folder / "train.tsv", ROWS[:40])
    write(folder / "dev.tsv", ROWS[40:50])
    write(folder / "test.jsonl", ROWS[50:])
    assert {s: p.name for s, p in task_folder_files(folder).items()} == {
        "train": "train.tsv", "validation": "dev.tsv", "test": "test.jsonl"}
    by_path = load_task(str(folder))
    by_name = load_task("mine", tasks_dir=tmp_path / "tasks")
    monkeypatch.setenv("HF_TTMOE_TASKS_DIR", str(tmp_path / "tasks"))
    by_env = load_task("mine", max_eval_samples=6)
    assert as_rows(by_path["validation"]) == as_rows(by_name["validation"]) == [
        (t, p, int(lab == "pos")) for t, p, lab in ROWS[40:50]]
    assert len(by_env["test"]) == 6
    with pytest.raises(ValueError, match=r"Unknown task 'yours'.*HF_TTMOE_TASKS_DIR = '.*tasks'"):
        load_task("yours")
    write(folder / "train.csv", ROWS[:5])
    with pytest.raises(DataFileError, match=r"holds 2 train files \['train.csv', 'train.tsv'\]; keep one"):
        load_task("mine")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no train file; expected train.<ext>"):
        load_task(str(tmp_path / "empty"))


def test_label_names_of_a_model_are_checked_against_any_task():
    assert load_task("rotten_tomatoes", label_names=["negative", "positive"], max_eval_samples=4)
    with pytest.raises(ValueError, match=r"has labels \['negative', 'positive'\] where \['positive', 'negative'\]"):
        load_task("rotten_tomatoes", label_names=["positive", "negative"])


def test_data_arguments_name_the_task_after_the_train_files_folder(tmp_path):
    train = write(tmp_path / "reviews" / "train.csv", ROWS)
    args = DataArguments(train_file=str(train), max_train_samples=12)
    assert args.task == "reviews" and len(load_data(args)["train"]) == 12
    assert DataArguments(train_file=str(train), task="custom").task == "custom"
    assert DataArguments().task == "rotten_tomatoes"
    with pytest.raises(ValueError, match="--validation_file / --test_file need --train_file"):
        DataArguments(test_file=str(train))


@pytest.mark.skipif(not SHARED_TASKS.is_dir(), reason="../shared/data/tasks is not beside the project")
@pytest.mark.parametrize("task, labels, pair", [("rte", ["entailment", "not_entailment"], True),
                                                ("cola", ["acceptable", "unacceptable"], False),
                                                ("mnli", ["contradiction", "entailment", "neutral"], True)])
def test_the_shared_tasks_load_through_the_user_file_path(task, labels, pair):
    splits = load_task(task, tasks_dir=SHARED_TASKS, max_train_samples=50, max_eval_samples=20)
    assert splits["train"].features["label"].names == labels
    assert ("text_pair" in splits["train"].column_names) == pair and len(splits["test"]) == 20


def test_expert_router_and_evaluate_from_user_files(tmp_path):
    """An expert per user task folder (`--train_file`), a router over them found through `--tasks_dir`."""
    from hf_ttmoe import TTLoRAModel
    from hf_ttmoe.commands.evaluate import main as evaluate
    from hf_ttmoe.commands.train_expert import main as train_expert
    from hf_ttmoe.commands.train_router import main as train_router

    sources = {"reviews": ("rotten_tomatoes", ".csv", lambda i, n: n[i]),  # label names
               "languages": ("language_id", ".jsonl", lambda i, n: str(i))}  # label ids
    experts = []
    for folder, (task, ext, label) in sources.items():
        splits = load_task(task, max_train_samples=200, max_eval_samples=40)
        names = splits["train"].features["label"].names
        for split in ("train", "test"):
            write(tmp_path / "data" / folder / f"{split}{ext}",
                  [(t, "", label(i, names)) for t, i in zip(splits[split]["text"], splits[split]["label"])],
                  pair=False)
        out = tmp_path / folder
        train_expert(["--train_file", str(tmp_path / "data" / folder / f"train{ext}"), "--test_file",
                      str(tmp_path / "data" / folder / f"test{ext}"), "--output_dir", str(out), "--max_train_samples",
                      "32", "--max_length", "24", "--max_steps", "2", "--per_device_train_batch_size", "16",
                      "--report_to", "none", "--use_cpu", "--save_strategy", "no"])
        config = TTLoRAModel.from_pretrained(out).config
        assert config.task == folder
        assert [config.id2label[i] for i in range(len(names))] == (names if ext == ".csv" else
                                                                     [str(i) for i in range(len(names))])
        experts.append(str(out))
    with pytest.raises(ValueError, match="Unknown task 'reviews'"):
        train_router(["--experts", *experts, "--output_dir", str(tmp_path / "moe"), "--use_cpu"])
    moe = train_router(["--experts", *experts, "--tasks_dir", str(tmp_path / "data"), "--output_dir",
                        str(tmp_path / "moe"), "--max_per_task", "150", "--max_length", "24", "--router_epochs", "40",
                        "--report_to", "none", "--use_cpu"])
    assert moe.tasks == ["reviews", "languages"]
    result = evaluate(["--moe", str(tmp_path / "moe"), "--tasks_dir", str(tmp_path / "data"), "--output_dir",
                       str(tmp_path / "eval"), "--max_length", "24"])
    assert [r["rows"] for r in result["per_task"]] == [40, 40] and result["router_accuracy"] >= 0.9
