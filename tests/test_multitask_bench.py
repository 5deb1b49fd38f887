"""The pieces of `benchmarks/multitask` that run quickly and offline (the benchmark itself, and its AdapterFusion
environment, are not run here): settings, the resumable stages, the exported rows, per-task heads and scoring, the
AdapterFusion job and worker's isolation, the report written from fixture results, and the attention router of the
router-features reference."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.lr_grid import choose_lr
from benchmarks.multitask import __main__ as cli
from benchmarks.multitask.adapterfusion import WORKER, job
from benchmarks.multitask.heads import TaskHeads, score
from benchmarks.multitask.jobs import STAGE_MINUTES, pending_stages, run_in_processes, split_stages
from benchmarks.multitask.report import write_report
from benchmarks.multitask.router_features import (
    AttentionRouter,
    answerable,
    embedding_features,
    fit_router,
    group_first,
    label_groups,
    layer_features,
    padded,
    pooled,
    standardised,
    summary,
)
from benchmarks.multitask.rows import export_rows, read_labels, read_rows, timing_rows
from benchmarks.multitask.run import Run, write_json
from benchmarks.multitask.settings import ALL_TASKS, PAPER_TASKS, Settings
from hf_ttmoe.training import DataArguments, load_data


def write_task(folder: Path, pair: bool, labels: tuple[str, ...], n_train: int, n_test: int) -> None:
    folder.mkdir(parents=True)
    for split, n in (("train", n_train), ("test", n_test)):
        header = "text\ttext_pair\tlabel" if pair else "text\tlabel"
        lines = [header] + [f"{split} row {i}" + (f"\tsecond {i}" if pair else "") + f"\t{labels[i % len(labels)]}"
                            for i in range(n)]
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n")


@pytest.fixture
def pool(tmp_path) -> Settings:
    tasks_dir = tmp_path / "tasks"
    write_task(tasks_dir / "pairs", True, ("entailment", "neutral", "contradiction"), 60, 30)
    write_task(tasks_dir / "single", False, ("pos", "neg"), 40, 20)
    return Settings(tasks=["pairs", "single"], max_train=12, max_eval=6, tasks_dir=str(tasks_dir),
                    glue_dir=str(tmp_path / "glue"))


def test_settings_validate_and_key_experts_by_what_trains_them():
    with pytest.raises(ValueError, match="add 'lora'"):
        Settings(methods=["ttmoe", "arrow"])
    with pytest.raises(ValueError, match="unknown"):
        Settings(methods=["fusion"])
    with pytest.raises(ValueError, match="two distinct tasks"):
        Settings(tasks=["rte", "rte"])
    s = Settings()
    assert s.training_key("tt", 5e-3, 0) == Settings(methods=["ttmoe"]).training_key("tt", 5e-3, 0)  # not methods
    assert s.training_key("tt", 5e-3, 0) != s.training_key("tt", 1e-2, 0)
    assert s.training_key("tt", 5e-3, 0) != Settings(max_train=10).training_key("tt", 5e-3, 0)


def test_cli_task_pools_and_missing_data(tmp_path):
    assert cli.parse_args(["--name", "x"])[1].tasks == list(PAPER_TASKS)
    _, settings, _, jobs = cli.parse_args(["--name", "x", "--tasks", "all", "--max_train", "7", "--seeds", "0", "1"])
    assert len(settings.tasks) == len(set(settings.tasks)) == 18 and settings.tasks == list(ALL_TASKS)
    assert settings.max_train == 7 and settings.seeds == [0, 1] and jobs == 1
    assert cli.parse_args(["--name", "x", "--jobs", "2"])[3] == 2
    with pytest.raises(SystemExit):
        cli.parse_args(["--name", "x", "--jobs", "0"])
    with pytest.raises(SystemExit, match=r"skipped: .*rte: .*nowhere"):
        cli.main(["--name", "x", "--tasks", "rte", "rotten_tomatoes", "--tasks_dir", str(tmp_path / "nowhere")])


def test_stages_run_once_and_a_run_keeps_its_settings(tmp_path):
    settings = Settings(tasks=["a", "b"])
    run = Run("r1", settings, results_root=tmp_path / "res", work_root=tmp_path / "work")
    calls = []
    first = run.stage("seed0/x", lambda: calls.append(1) or {"value": 3})
    again = Run("r1", Settings(tasks=["a", "b"]), results_root=tmp_path / "res", work_root=tmp_path / "work")
    second = again.stage("seed0/x", lambda: calls.append(2) or {"value": 4})
    assert calls == [1] and first == second and second["value"] == 3 and "wall_s" in second
    assert json.loads((tmp_path / "res" / "r1" / "seed0" / "x.json").read_text())["value"] == 3
    with pytest.raises(SystemExit, match=r"max_train.*\(1000, 10\)"):
        Run("r1", Settings(tasks=["a", "b"], max_train=10), results_root=tmp_path / "res", work_root=tmp_path / "w")
    with pytest.raises(ValueError, match="plain folder name"):
        Run("../up", settings, results_root=tmp_path / "res", work_root=tmp_path / "work")
    assert run.expert_dir("ttlora", "a", "k1") == tmp_path / "work" / "experts" / "ttlora" / "a-k1"


def test_stages_split_into_balanced_jobs_and_finished_ones_are_not_rerun(tmp_path):
    six = [(0, m) for m in ("ttmoe", "lora", "mtl_lora", "adapterfusion")]
    assert split_stages(six, 1) == [six]
    # the six-task run's measured stages (25, 39, 9, 36 min) as two processes: 48 and 61 min instead of 109
    assert split_stages(six, 2) == [[(0, "lora"), (0, "mtl_lora")], [(0, "ttmoe"), (0, "adapterfusion")]]
    assert len(split_stages(six, 9)) == 4  # no empty groups
    two_seeds = [(seed, m) for seed in (0, 1) for _, m in six]
    groups = split_stages(two_seeds, 2)
    assert sorted(st for g in groups for st in g) == sorted(two_seeds)
    assert [sum(STAGE_MINUTES[m] for _, m in g) for g in groups] == [109, 109]
    assert all(g == sorted(g, key=two_seeds.index) for g in groups)  # run order kept within a group
    with pytest.raises(ValueError, match="jobs=0"):
        split_stages(six, 0)
    run = Run("r", Settings(tasks=["a", "b"], methods=["ttmoe", "lora", "arrow"], seeds=[0, 1]),
              results_root=tmp_path / "res", work_root=tmp_path / "work")
    run.stage("seed0/lora", lambda: {})
    assert pending_stages(run) == [(0, "ttmoe"), (1, "ttmoe"), (1, "lora")]


def test_parallel_stages_all_finish_and_failures_are_named(tmp_path):
    # a standard-library worker (each spawned process imports the worker's module; ours would load torch three times)
    (tmp_path / "taken").mkdir()
    groups = [str(tmp_path / "a"), str(tmp_path / "taken"), str(tmp_path / "b")]
    with pytest.raises(SystemExit, match=r"taken: FileExistsError") as failure:
        run_in_processes(groups, os.mkdir)
    assert str(tmp_path / "a") not in str(failure.value)
    assert (tmp_path / "a").is_dir() and (tmp_path / "b").is_dir()  # the others finished
    assert run_in_processes([str(tmp_path / "c")], os.path.isdir) == [False]  # results come back, in group order


def test_exported_rows_are_the_rows_the_library_loads(pool, tmp_path):
    folder = tmp_path / "rows"
    manifest = export_rows(pool.tasks, pool, folder)
    assert manifest["pairs"] == {"labels": ["contradiction", "entailment", "neutral"], "pair": True,
                                 "rows": {"train": 12, "validation": 6, "test": 6}}
    assert read_labels(folder, "single") == ["neg", "pos"]
    for task in pool.tasks:  # what train_expert loads, given the run's caps and split seed
        splits = load_data(DataArguments(task=task, tasks_dir=pool.tasks_dir, max_train_samples=pool.max_train,
                                         max_eval_samples=pool.max_eval, split_seed=pool.split_seed))
        for split in ("train", "validation", "test"):
            rows = read_rows(folder, task, split)
            assert [r["text"] for r in rows] == splits[split]["text"]
            assert [r["label"] for r in rows] == splits[split]["label"]
    assert all("text_pair" in r for r in read_rows(folder, "pairs", "train"))
    picked = timing_rows(folder, pool.tasks, 5, seed=0)
    assert [t for t, _ in picked] == [0, 1, 0, 1, 0] and picked == timing_rows(folder, pool.tasks, 5, seed=0)
    assert len({r["text"] for t, r in picked if t == 0}) == 3  # distinct rows of each task


def test_task_heads_answer_each_row_with_its_own_head():
    torch.manual_seed(0)
    heads = TaskHeads(4, [2, 3], dropout=0.0)
    pooled, ids = torch.randn(5, 4), torch.tensor([0, 1, 1, 0, 1])
    labels = torch.tensor([1, 2, 0, 0, 1])
    loss, preds = heads(pooled, ids, labels)
    expected = [heads.heads[t](pooled[i]).argmax().item() for i, t in enumerate(ids.tolist())]
    assert preds.tolist() == expected
    ce = sum(torch.nn.functional.cross_entropy(heads.heads[t](pooled[i:i + 1]), labels[i:i + 1])
             for i, t in enumerate(ids.tolist())) / 5
    assert torch.allclose(loss, ce)


def test_score_counts_misrouted_rows_wrong():
    rows = {"task": np.array([0, 0, 1, 1]), "label": np.array([1, 0, 2, 1]), "chosen": np.array([0, 1, 1, 1]),
            "pred": np.array([1, 0, 2, 0])}
    routed = score(rows, ["a", "b"], [2, 3], routed=True)
    assert routed["per_task"]["a"]["accuracy"] == 0.5  # row 1 went to b's head: wrong though its id matches
    assert routed["per_task"]["b"]["accuracy"] == 0.5
    assert routed["router_accuracy"] == 0.75 and routed["confusion"] == [[1, 1], [0, 2]]
    assert "confusion" not in score(rows, ["a", "b"], [2, 3], routed=False)


def test_adapterfusion_job_and_worker_isolation(pool, tmp_path):
    run = Run("af", pool, results_root=tmp_path / "res", work_root=tmp_path / "work")
    export_rows(pool.tasks, pool, run.work / "rows")
    spec = job(run, 0, run.work / "rows")
    assert Path(spec["base"], "config.json").is_file()  # the embedded MiniLM's folder: nothing to download
    assert spec["tasks"] == pool.tasks and len(spec["timing"]["rows"]) == pool.timing_rows
    assert spec["adapters_dir"].startswith(str(tmp_path / "work" / "experts" / "adapterfusion"))
    assert spec["adapter_lrs"] == pool.af_adapter_lrs
    json.dumps(spec)  # the worker reads it as JSON

    def imports(path: Path) -> set[str]:
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                imported.add((node.module or ".").split(".")[0])
        return imported

    assert imports(WORKER) <= {"__future__", "importlib", "json", "math", "statistics", "sys", "time", "pathlib",
                               "torch", "sklearn", "transformers", "adapters"}, imports(WORKER)
    lr_grid = WORKER.parents[1] / "lr_grid.py"  # the worker loads it by path, in its own env: the stdlib only
    assert imports(lr_grid) <= {"__future__", "math"}, imports(lr_grid)


def fixture_method(accs: list[float], stored: int, task_given: bool, **extra) -> dict:
    return {"per_task": {t: {"rows": 10, "accuracy": a, "f1": a} for t, a in zip(("a", "b"), accs)},
            "trainable_params": stored, "stored_params": stored, "composition_params": 0, "task_given": task_given,
            **extra}


def test_report_from_fixture_results(tmp_path):
    run = Run("rep", Settings(tasks=["a", "b"], seeds=[0, 1]), results_root=tmp_path, work_root=tmp_path / "w")
    routing = {"router_accuracy": 0.9, "confusion": [[9, 1], [1, 9]]}
    for seed, shift in ((0, 0.0), (1, 0.1)):
        write_json(run.result_path(f"seed{seed}/ttmoe"), {"methods": {
            "ttmoe": fixture_method([0.8 + shift, 0.6], 1_000, False, **routing),
            "ttmoe_oracle": fixture_method([0.8, 0.7], 1_000, True)},
            "lr_choice": {"a": choose_lr({5e-3: 0.6, 1e-2: 0.7, 2e-2: 0.5}), "b": choose_lr({5e-3: 0.6, 1e-2: 0.5})}})
        write_json(run.result_path(f"seed{seed}/adapterfusion"), {"methods": {
            "adapterfusion": fixture_method([0.7, 0.6], 200_000, True)}, "timing": {}})
    write_json(run.result_path("seed0/lora"), {"methods": {}, "errors": {"xlora": "ValueError: boom\nmore"}})
    write_json(run.result_path("timing"), {"rows": 8, "reps": 3, "threads": 1, "base_ms_per_row": 2.0, "methods": {
        "ttmoe": {"ms_per_row": 2.5, "x_base": 1.25}}})
    result = write_report(run)
    moe = result["methods"]["ttmoe"]
    assert moe["per_task"]["a"]["accuracy"] == pytest.approx(0.85) and moe["accuracy"] == pytest.approx(0.725)
    assert moe["per_task"]["a"]["accuracy_std"] == pytest.approx(0.05) and moe["confusion"] == [[18, 2], [2, 18]]
    table = (tmp_path / "rep" / "results.md").read_text()
    assert "| TT-LoRA MoE (routed) | no | 85.00 | 60.00 | **72.50** |" in table
    assert "| 1,000 | 1,000 | 0.50% | 2.50 | 1.25 |" in table
    assert "**+7.50 points**" in table and "0.50% of its stored parameters" in table  # 72.50 vs 65.00
    assert "its oracle: -2.50 points" in table and "`xlora` did not run: `ValueError: boom`" in table
    assert "| TT-LoRA experts | 0.005, 0.01, 0.02 | 0 | 0.01 | 0.005* |" in table
    assert "| TT-LoRA experts | 0.005, 0.01, 0.02 | 1 | 0.01 | 0.005* |" in table
    for png in ("accuracy.png", "params.png", "confusion_ttmoe.png"):
        assert (tmp_path / "rep" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "rep" / "results.json").read_text())["methods"].keys() == {
        "ttmoe", "ttmoe_oracle", "adapterfusion"}


def test_attention_router_pools_each_segment_over_its_own_tokens():
    torch.manual_seed(0)
    heads, width = 2, 8
    net = AttentionRouter(width, num_tasks=3, heads=heads)
    hidden = torch.randn(3, 6, width)
    types = torch.tensor([[0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 0, 0], [0, 1, 1, 1, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 0, 0]])
    pooled = net.pool(hidden, mask, types)
    scores = net.score(hidden)
    for b in range(3):  # the reference: one softmax per segment and head over that segment's real tokens only
        for segment in (0, 1):
            tokens = ((mask[b] > 0) & (types[b] == segment)).nonzero().flatten()
            for h in range(heads):
                weights = scores[b, tokens, h].softmax(0)
                expected = (weights[:, None] * hidden[b, tokens]).sum(0) if len(tokens) else torch.zeros(width)
                got = pooled[b, (segment * heads + h) * width : (segment * heads + h + 1) * width]
                torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    noisy = hidden.clone()
    noisy[mask == 0] = 1e3  # whatever sits under the padding changes nothing
    torch.testing.assert_close(net(noisy, mask, types), net(hidden, mask, types))
    net(hidden, mask, types).sum().backward()  # row 1 has no second segment: no NaN may reach the gradients
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


def test_padded_rows_and_router_summary():
    ids, types, mask = padded([([5, 6, 7], [0, 0, 1]), ([8], [0])])
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and types.tolist() == [[0, 0, 1], [0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    y = torch.tensor([0, 0, 1, 1])
    out = summary([torch.tensor([0, 1, 1, 1]), torch.tensor([0, 0, 1, 0])], y, ["a", "b"])
    assert out["accuracy"] == pytest.approx(75.0) and out["std"] == pytest.approx(0.0)
    assert out["per_task"] == pytest.approx({"a": 75.0, "b": 75.0})


def test_label_groups_group_first_and_answerable():
    names = [["neg", "pos"], ["a", "b", "c"], ["pos", "neg"], ["x", "y"]]
    groups = label_groups(names)
    assert groups.tolist() == [0, 1, 0, 2]  # the same names in another order are one group
    probs = torch.tensor([[0.30, 0.40, 0.30, 0.00],   # group 0 holds 0.6: its best expert, 0 (lower of equals)
                          [0.10, 0.60, 0.25, 0.05],   # group 1 wins outright
                          [0.20, 0.45, 0.35, 0.00],   # group 0 (0.55) over the top expert's group 1 (0.45)
                          [0.00, 0.30, 0.30, 0.40]])  # group 0 (0.30) vs 1 (0.30) vs 2 (0.40): group 2
    assert group_first(probs, groups).tolist() == [0, 1, 2, 3]
    gold, y = ["pos", "b", "neg", "pos"], torch.tensor([0, 1, 2, 3])  # row 3's gold name is not among task 3's names
    top1 = probs.argmax(-1)  # [1, 1, 1, 3]
    rows, tasks = answerable(top1, gold, names, y)
    assert rows == pytest.approx(25.0) and tasks == pytest.approx(25.0)  # only row 1: "b" is among expert 1's names
    rows, tasks = answerable(group_first(probs, groups), gold, names, y)
    assert rows == pytest.approx(75.0) and tasks == pytest.approx(75.0)
    y2 = torch.tensor([0, 0, 0, 1])  # task average: task 0's three rows all answerable, task 1's one row not
    assert answerable(group_first(probs, groups), gold, names, y2) == pytest.approx((75.0, 50.0))


def test_router_with_the_group_loss_learns_the_groups():
    """The group loss at weight 0 is the plain router, bit for bit; with a weight it still trains a router that
    separates tasks, and the group probability of each training row's own group grows."""
    torch.manual_seed(0)
    y = torch.arange(4).repeat_interleave(32)
    x = torch.randn(128, 6) + 3 * torch.nn.functional.one_hot(y, 6).float()
    groups = torch.tensor([0, 0, 1, 1])
    plain = fit_router(x, y, 4, "linear", epochs=100, seed=1)
    zero = fit_router(x, y, 4, "linear", epochs=100, seed=1, groups=groups, group_weight=0.0)
    assert torch.equal(plain.weight, zero.weight)
    weighted = fit_router(x, y, 4, "linear", epochs=100, seed=1, groups=groups, group_weight=3.0)
    assert not torch.equal(plain.weight, weighted.weight)
    with torch.no_grad():
        member = torch.nn.functional.one_hot(groups).float()
        own = {name: (net(x).softmax(-1) @ member)[torch.arange(128), groups[y]].mean().item()
               for name, net in (("plain", plain), ("weighted", weighted))}
        assert (weighted(x).argmax(-1) == y).float().mean() > 0.9
    assert own["weighted"] > own["plain"]


def test_tt_experts_take_the_runs_layout_and_keep_older_keys(pool, tmp_path, monkeypatch):
    """`tt_layout="stacked", tt_rank=4` and `tt_shapes` reach the expert train_expert saves, and such experts are
    keyed apart from the chain's; the chain at rank 5 keeps the key experts had before these were settings (so they
    are reused)."""
    from benchmarks.multitask import ttmoe
    from hf_ttmoe import TTLoRAConfig

    with pytest.raises(ValueError, match="tt_layout='tree' is not one of"):
        Settings(tt_layout="tree")
    with pytest.raises(ValueError, match=r"tt_shapes='\{query' is not JSON"):
        Settings(tt_shapes="{query")
    with pytest.raises(ValueError, match=r"tt_shapes='\[\]' must be a JSON object"):
        Settings(tt_shapes="[]")
    with pytest.raises(ValueError, match=r"tt_shapes\['query'\]=\[16, 24\] must be \[in_modes, out_modes\]"):
        Settings(tt_shapes='{"query": [16, 24]}')
    with pytest.raises(ValueError, match=r"tt_shapes\['query'\]=.* with layout='stacked'"):
        Settings(tt_layout="stacked", tt_shapes='{"query": [[16, 24], [24, 16]]}')
    stacked = Settings(**{**pool.to_dict(), "tt_layout": "stacked", "tt_rank": 4})
    run = Run("stacked", stacked, results_root=tmp_path / "res", work_root=tmp_path / "work")
    ttmoe.tt_expert(run, "single", 1e-2, 0, tmp_path / "expert")
    config = TTLoRAConfig.from_pretrained(tmp_path / "expert")
    assert (config.layout, config.tt_rank) == ("stacked", 4)
    four = '{"query": [[16, 24], [24, 16]], "value": [[16, 24], [24, 16]]}'
    shaped = Settings(**{**pool.to_dict(), "tt_shapes": four})
    assert shaped.tt_shapes == Settings(tt_shapes=four.replace(" ", "")).tt_shapes  # one spelling, one key
    ttmoe.tt_expert(Run("shaped", shaped, results_root=tmp_path / "res", work_root=tmp_path / "work"),
                    "single", 1e-2, 0, tmp_path / "shaped")
    config = TTLoRAConfig.from_pretrained(tmp_path / "shaped")
    assert config.tt_shapes == {"query": [[16, 24], [24, 16]], "value": [[16, 24], [24, 16]]}
    from safetensors import safe_open
    with safe_open(str(tmp_path / "shaped" / "model.safetensors"), "pt") as f:
        cores = [f.get_slice(k).get_shape() for k in f.keys() if "layer.0.attention.self.query" in k]
    assert sorted(cores) == sorted([[1, 16, 5], [5, 24, 5], [5, 24, 5], [5, 16, 1]])  # four cores, not the eight

    folders = {}

    def tune(task, lrs, folder, complete, train, read, extend):  # the folders train_experts would train into
        folders[task] = folder(task, 5e-3)
        return {"chosen": 5e-3}, {}

    monkeypatch.setattr(ttmoe, "tune", tune)
    names = set()
    for settings, extra in ((pool, ()), (stacked, ("stacked", 4)), (shaped, (shaped.tt_shapes,))):
        ttmoe.train_experts(Run(f"r{len(names)}", settings, results_root=tmp_path / "res",
                                work_root=tmp_path / "work"), seed=0)
        assert folders["single"].name == f"single-{settings.training_key('ttlora', 5e-3, 0, *extra)}"
        names.add(folders["single"].name)
    assert len(names) == 3  # three layouts, three keys


@pytest.mark.parametrize("router_layer", [0, 1, 2])
def test_layer_features_are_what_the_router_reads_after_that_layer(tmp_path, router_layer):
    """`layer_features` at layer k equals the library's router input at `router_layer=k` with segment pooling (a
    tiny BERT, pairs and single sentences, batches padded to different lengths), and at layer 0 the segment pooling
    of the embedding features; standardising uses the reference rows' statistics."""
    from datasets import Dataset
    from tiny_pool import PAIRS, TEXTS, save_pool, tiny_tokenizer

    from hf_ttmoe import TTLoRAMoEModel

    experts, _ = save_pool("bert", tmp_path, num_experts=2)
    moe = TTLoRAMoEModel.from_experts([str(p) for p in experts], router_layer=router_layer, pooling="segments")
    moe.eval()
    base, tokenizer = moe.base_model, tiny_tokenizer("bert")
    base = getattr(base, "bert", base)
    for rows in (Dataset.from_list(PAIRS), Dataset.from_list([{"text": t} for t in TEXTS[:5]])):
        pair = "text_pair" in rows.column_names
        got = layer_features(base, tokenizer, rows, max_length=32, layers=[router_layer], batch_size=2)[router_layer]
        library = []
        for start in range(0, len(rows), 2):
            chunk = rows[start : start + 2]
            enc = tokenizer(chunk["text"], chunk["text_pair"] if pair else None, truncation=True, max_length=32,
                            padding=True, return_tensors="pt")
            with torch.no_grad():
                library.append(moe.router_features(**enc))
        torch.testing.assert_close(got, torch.cat(library), rtol=1e-5, atol=1e-6)
        assert (got[:, got.shape[1] // 2 :] != 0).any() == pair  # a single sentence has no second segment
        if router_layer == 0:
            embeddings = embedding_features(base, tokenizer, rows, max_length=32, batch_size=2)
            torch.testing.assert_close(got, pooled(embeddings, "segments"), rtol=1e-5, atol=1e-6)
    z = standardised(got, got)
    torch.testing.assert_close(z.mean(0), torch.zeros(z.shape[1]), rtol=0, atol=1e-5)
    assert torch.allclose(standardised(got[:2], got), z[:2])
