"""The learning-rate protocol every tuning benchmark shares (benchmarks/lr_grid.py): the 1-2-5 ladder, the widening
past a grid's end while that end is strictly best, the choice record, the per-task pieces reused across runs."""

import json

import numpy as np
import pytest

from benchmarks.lr_grid import choose_lr, next_lr, tune, tune_lr, widen
from benchmarks.multitask.run import Run
from benchmarks.multitask.settings import Settings


def test_next_lr_walks_the_1_2_5_ladder():
    assert [next_lr(x, up=True) for x in (5e-4, 1e-3, 2e-3, 5e-3)] == [1e-3, 2e-3, 5e-3, 1e-2]
    assert [next_lr(x, up=False) for x in (1e-3, 2e-3, 5e-3, 1e-2)] == [5e-4, 1e-3, 2e-3, 5e-3]
    assert next_lr(3e-3, up=True) == 6e-3 and next_lr(3e-3, up=False) == 1.5e-3


@pytest.mark.parametrize("peak, expected_tried, chosen", [
    (1e-3, [5e-4, 1e-3, 2e-3], 1e-3),                   # inside the grid: nothing added
    (5e-3, [5e-4, 1e-3, 2e-3, 5e-3, 1e-2], 5e-3),       # best at the top: widened until it is inside
    (1e-1, [5e-4, 1e-3, 2e-3, 5e-3, 1e-2], 1e-2),       # still rising: at most `extend` more, the best of them
    (1e-4, [1e-4, 2e-4, 5e-4, 1e-3, 2e-3], 1e-4),       # the same at the bottom
])
def test_tune_lr_widens_the_grid_while_its_edge_is_best(peak, expected_tried, chosen):
    tried = []

    def dev_score(lr):  # unimodal in log(lr), best at `peak`
        tried.append(lr)
        return -abs(np.log(lr / peak))

    assert tune_lr([5e-4, 1e-3, 2e-3], dev_score, extend=2) == pytest.approx(chosen)
    assert sorted(tried) == pytest.approx(expected_tried)
    assert len(set(tried)) == len(tried), "no rate is trained twice"


def test_tune_lr_keeps_the_grid_on_ties_and_without_widening():
    flat = []
    assert tune_lr([1e-3, 2e-3], lambda lr: flat.append(lr) or 0.5) == 1e-3 and flat == [1e-3, 2e-3]
    assert tune_lr([1e-3, 2e-3], lambda lr: lr, extend=0) == 2e-3


def test_grid_reuses_finished_pieces_and_trains_the_rest(tmp_path):
    """`tune`: a rate whose folder is complete is read, not trained again; the others are trained into their own
    folders; the choice is made on the records' validation accuracy."""
    accuracy = {5e-3: 0.6, 1e-2: 0.8, 2e-2: 0.7}
    (folder, complete, train, read), trained = pieces(tmp_path, accuracy)

    train("sst2", 1e-2, folder("sst2", 1e-2))  # finished by an earlier run
    trained.clear()
    choice, records = tune("sst2", [5e-3, 1e-2, 2e-2], folder, complete, train, read)
    assert trained == [5e-3, 2e-2]  # and, by the folder check in `pieces`, each for the task asked
    assert sorted(p.name for p in (tmp_path / "sst2").iterdir()) == ["lr0.005", "lr0.01", "lr0.02"]
    assert choice["chosen"] == 1e-2 and not choice["at_edge"]
    assert {lr: r["validation_accuracy"] for lr, r in records.items()} == accuracy
    assert tune("sst2", [5e-3, 1e-2, 2e-2], folder, complete, train, read)[0] == choice and len(trained) == 2


def test_learning_rate_chosen_on_validation():
    choice = choose_lr({1e-2: 0.70, 5e-3: 0.74, 2e-2: 0.74})
    assert choice == {"lrs": [5e-3, 1e-2, 2e-2], "validation_accuracy": [0.74, 0.70, 0.74], "chosen": 5e-3,
                      "at_edge": True}  # the lowest of equals
    assert choose_lr({1e-2: 0.8, 5e-3: 0.7, 2e-2: 0.6}) == {"lrs": [5e-3, 1e-2, 2e-2],
                                                            "validation_accuracy": [0.7, 0.8, 0.6],
                                                            "chosen": 1e-2, "at_edge": False}
    assert choose_lr({1e-3: 0.5})["at_edge"] is False  # a single rate is not a grid
    with pytest.raises(ValueError, match="empty"):
        choose_lr({})
    with pytest.raises(ValueError, match=r"tt_lrs=\[0.01, 0.01\]"):
        Settings(tt_lrs=[1e-2, 1e-2])
    with pytest.raises(ValueError, match="lora_lrs"):
        Settings(lora_lrs=[])


def test_widen_validates_its_grid_and_limit():
    with pytest.raises(ValueError, match="empty"):
        widen([], lambda lr: 0.0)
    with pytest.raises(ValueError, match="extend=-1"):
        widen([1e-3], lambda lr: 0.0, extend=-1)
    assert widen([1e-3], lambda lr: lr) == {1e-3: 1e-3}  # one rate: nothing to compare, nothing widened


def pieces(tmp_path, accuracy):
    """A fake piece store over `accuracy` ({lr: validation accuracy}): tune's callables, and the rates trained."""
    trained = []

    def folder(task, lr):
        return tmp_path / task / f"lr{lr:g}"

    def train(task, lr, out):
        assert out == folder(task, lr), "each piece trains into its own task's folder"
        trained.append(lr)
        out.mkdir(parents=True)
        (out / "record.json").write_text(json.dumps({"validation_accuracy": accuracy[lr], "train_s": 1.0}))

    def complete(out):
        return (out / "record.json").exists()

    def read(out):
        return json.loads((out / "record.json").read_text())

    return (folder, complete, train, read), trained


def test_tune_widens_past_the_grid_top_and_records_every_piece(tmp_path):
    """The multi-task stages' pieces follow the same protocol as bench_quality: the grid's top strictly best ->
    the next rates up are trained too, at most `extend`, and the choice and the records hold them."""
    accuracy = {5e-3: 0.5, 1e-2: 0.6, 2e-2: 0.7, 5e-2: 0.8, 1e-1: 0.75, 2e-1: 0.9}
    fns, trained = pieces(tmp_path / "a", accuracy)
    choice, records = tune("t", [5e-3, 1e-2, 2e-2], *fns, extend=2)
    assert trained == [5e-3, 1e-2, 2e-2, 5e-2, 1e-1]  # 5e-2 best, then 1e-1 lower: bracketed, 2e-1 never tried
    assert choice["chosen"] == 5e-2 and not choice["at_edge"] and choice["lrs"] == sorted(records) == trained
    fns, trained = pieces(tmp_path / "b", {**accuracy, 1e-1: 0.85})
    choice, _ = tune("t", [5e-3, 1e-2, 2e-2], *fns, extend=2)
    assert trained[3:] == [5e-2, 1e-1] and choice["chosen"] == 1e-1 and choice["at_edge"]  # the limit: marked
    fns, trained = pieces(tmp_path / "c", accuracy)
    choice, _ = tune("t", [5e-3, 1e-2, 2e-2], *fns, extend=0)
    assert trained == [5e-3, 1e-2, 2e-2] and choice["chosen"] == 2e-2 and choice["at_edge"]  # the grid as given


def test_runs_saved_before_the_widening_keep_their_grids(tmp_path):
    """A run folder written before `extend_grid` existed was made with the grids as given: it reopens with
    extend_grid=0 and refuses the new default rather than mixing two protocols in one run."""
    roots = dict(results_root=tmp_path / "res", work_root=tmp_path / "work")
    Run("old", Settings(tasks=["a", "b"]), **roots)
    path = tmp_path / "res" / "old" / "settings.json"
    saved = json.loads(path.read_text())
    del saved["extend_grid"]
    path.write_text(json.dumps(saved))
    Run("old", Settings(tasks=["a", "b"], extend_grid=0), **roots)
    with pytest.raises(SystemExit, match=r"extend_grid.*\(0, 2\)"):
        Run("old", Settings(tasks=["a", "b"]), **roots)
    with pytest.raises(ValueError, match="extend_grid=-1"):
        Settings(extend_grid=-1)
