"""The pieces of `benchmarks/bench_quality.py` (the benchmark itself is not run here): the budgets its method table
claims, and the metrics it reports."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
import torch

from benchmarks.bench_quality import (
    DEFAULT_LRS,
    adapter_parameters,
    build,
    correct_by_length,
    length_bucket,
    length_table,
    tt_rank_arg,
)
from hf_ttmoe import DEFAULT_BASE_MODEL
from hf_ttmoe.training import compute_metrics


def args(modules: str, tt_init: str = "zero", **overrides) -> argparse.Namespace:
    return argparse.Namespace(**{**dict(base_model=DEFAULT_BASE_MODEL, gguf_file=None, task="t", tt_rank=5,
                                        tt_alpha=16.0, tt_shapes=None, lora_rank=16, modules=modules, tt_init=tt_init,
                                        tt_layout="chain", stack_rank=4, stack_share="module", mpo_modes=[6, 4, 4, 4],
                                        mpo_ranks=[3, 4, 3], mpo_shapes=None, svd_rank=24), **overrides})


@pytest.fixture(scope="module")
def params():
    counts = {}
    for method in DEFAULT_LRS:
        for modules in ("qv", "all") if method in ("tt", "lora") else ("qv",):
            model, _ = build(method, args(modules=modules), ["a", "b"], 0)
            counts[method if modules == "qv" else f"{method}_all"] = adapter_parameters(model)
            trainable_head = [n for n, p in model.named_parameters() if p.requires_grad and "classifier" in n]
            assert trainable_head, f"{method} must train the task head"
    model, _ = build("tt", args(modules="qv", tt_layout="stacked", tt_rank=4), ["a", "b"], 0)
    counts["tt_layout_stacked"] = adapter_parameters(model)
    model, _ = build("tt", args(modules="qv", tt_rank=tt_rank_arg("4,4,5,10,5,4,4")), ["a", "b"], 0)
    counts["tt_midbond10"] = adapter_parameters(model)
    for modules in ("q", "v"):
        model, _ = build("lora", args(modules=modules, lora_rank=1), ["a", "b"], 0)
        counts[f"lora_r1_{modules}"] = adapter_parameters(model)
        counts[f"lora_r1_{modules}_names"] = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, p in
                                              model.named_parameters() if p.requires_grad and ".lora_" in n}
    return counts


def test_method_budgets_are_what_the_benchmark_says(params):
    # the MoE-LoRA comparison: LoRA of the same trainable parameters, and of the same total rank, on the FFN linears
    assert params["moe"] == params["moe_top2"] == params["moe_nobal"] == params["lora_budget"] == 829_440
    assert params["lora_rank"] == 8 * 4 * (384 + 1536) * 2 * 6  # E·r
    # TT-LoRA against PEFT LoRA r=16 on the same modules: a few percent of its parameters
    assert params["lora"] == 16 * 768 * 2 * 6 and params["lora_all"] == 663_552  # no pooler.dense
    assert params["tt"] / params["lora"] < 0.05 and params["tt_all"] / params["lora_all"] < 0.05
    # the stacked train: per module name U (384 x 4) and V (4 x 384), per layer and module a 4 x 4 core
    assert params["tt_stack"] == 2 * (384 + 384) * 4 + 6 * 2 * 4 * 4 == 6_336
    assert params["tt_layout_stacked"] == params["tt_stack"]  # the library's stacked layout, the same train
    assert params["head"] == 0 and params["full"] > 20_000_000
    # the TT-matrix: cores r_{k-1} * n_k * m_k * r_k, modes [6,4,4,4] on both sides, ranks [1,3,4,3,1]
    assert params["tt_mpo"] == 12 * (36 * 3 + 3 * 16 * 4 + 4 * 16 * 3 + 3 * 16) == 12 * 540 < 0.05 * params["lora"]
    # a larger middle bond (ΔW's matrix rank 10) inside the budget: per 384 x 384 layout [16,4,3,2 | 2,3,4,16],
    # cores r_{k-1} * n_k * r_k with ranks [1,4,4,5,10,5,4,4,1]
    assert params["tt"] == 12 * 610 and params["tt_midbond10"] == 12 * 576 < 0.05 * params["lora"]
    # the core between the frozen singular bases: r x r a matrix, r = 24
    assert params["svd_core"] == 12 * 24 * 24 == 6_912 < 0.05 * params["lora"]
    # one of query / value only (`--modules q|v`): LoRA r=1 on 6 matrices, half of r=1 on both
    assert params["lora_r1_q"] == params["lora_r1_v"] == 6 * 768 == 4_608 < 0.05 * params["lora"]
    assert params["lora_r1_q_names"] == {"query"} and params["lora_r1_v_names"] == {"value"}


def test_mpo_shapes_give_each_module_name_its_own_modes():
    # value: input modes [6,4,4,4], output modes [4,4,4,6]; query keeps --mpo_modes on both sides
    shapes = {"value": [[6, 4, 4, 4], [4, 4, 4, 6]]}
    model, _ = build("tt_mpo", args(modules="qv", mpo_shapes=shapes), ["a", "b"], 0)
    cores = {n: p.shape for n, p in model.named_parameters() if "mpo_cores" in n}
    assert cores["bert.encoder.layer.0.attention.self.query.mpo_cores.0"] == (1, 6, 6, 3)
    assert cores["bert.encoder.layer.0.attention.self.value.mpo_cores.0"] == (1, 6, 4, 3)
    assert cores["bert.encoder.layer.5.attention.self.value.mpo_cores.3"] == (3, 4, 6, 1)
    value = 6 * 4 * 3 + 3 * 4 * 4 * 4 + 4 * 4 * 4 * 3 + 3 * 4 * 6
    assert adapter_parameters(model) == 6 * (540 + value)
    with pytest.raises(ValueError, match="do not make up"):
        build("tt_mpo", args(modules="qv", mpo_shapes={"query": [[6, 4, 4, 4], [4, 4, 4, 4]]}), ["a", "b"], 0)
    with pytest.raises(ValueError, match=r"names \['q_proj'\], not among the adapted modules \['query', 'value'\]"):
        build("tt_mpo", args(modules="qv", mpo_shapes={"q_proj": [[6, 4, 4, 4], [6, 4, 4, 4]]}), ["a", "b"], 0)


def test_tt_rank_flag_reads_one_rank_or_each_bond():
    assert tt_rank_arg("5") == 5 and tt_rank_arg("4,4,5,10,5,4,4") == [4, 4, 5, 10, 5, 4, 4]
    with pytest.raises(ValueError):
        tt_rank_arg("4,x")


def test_by_length_counts_right_predictions_per_bucket():
    from types import SimpleNamespace

    assert [length_bucket(n) for n in (1, 8, 9, 16, 17, 32, 33, 64)] == ["≤8", "≤8", "≤16", "≤16", "≤32", "≤32",
                                                                          ">32", ">32"]
    rows = {"input_ids": [[0] * 5, [0] * 40, [0] * 12, [0] * 7, [0] * 40]}
    labels = np.array([1, 0, 1, 0, 1])
    logits = np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # predicts 1, 1, 0, 0, 1
    counts = correct_by_length(SimpleNamespace(predictions=(logits,), label_ids=labels), rows)  # Trainer.predict's
    assert counts == {"≤8": [2, 2], "≤16": [0, 1], ">32": [1, 2]} and list(counts) == ["≤8", "≤16", ">32"]
    # the table pools the chosen rate's seeds: ≤8 3 of 4 right, ≤16 0 of 2, >32 2 of 4
    other = {"≤8": [1, 2], "≤16": [0, 1], ">32": [1, 2]}
    results = [dict(method="tt", lr=5e-3, seed=s, test_by_length=c) for s, c in ((0, counts), (1, other))]
    results.append(dict(method="tt", lr=1e-2, seed=0, test_by_length={"≤8": [0, 2]}))  # another rate: left out
    table = length_table(argparse.Namespace(seeds=[0, 1], methods=["tt"]), results, {"tt": 5e-3})
    assert table[-1] == "| tt | 75.00 | 0.00 | 50.00 |" and "and bucket: ≤8 2, ≤16 1, >32 2" in table[1]


def test_metrics_include_mcc():
    logits = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.6, 0.4]])
    metrics = compute_metrics((logits, np.array([0, 1, 1, 0])))
    assert metrics["accuracy"] == 0.75 and metrics["mcc"] == pytest.approx(1 / np.sqrt(3))
    assert compute_metrics((logits, np.array([0, 0, 0, 0])))["mcc"] == 0.0  # one class: defined, not NaN


def test_tt_init_flag_reaches_the_layers():
    """`--tt_init orthogonal` builds layers whose input chain has orthonormal rows (scaled); the default's do not."""
    import torch

    from hf_ttmoe import TTLoRALinear

    for flag, isometric in (("orthogonal", True), ("zero", False)):
        model, _ = build("tt", args("qv", tt_init=flag), ["a", "b"], 0)
        for layer in (m for m in model.modules() if isinstance(m, TTLoRALinear)):
            v = layer.factors()[1].double()
            assert torch.allclose(v @ v.T, torch.eye(len(v), dtype=v.dtype) / 3, atol=1e-6) == isometric


def test_probe_scores_accuracy_and_mcc():
    """`bench_probe.probe_scores`: a feature that carries the label gives accuracy and MCC 1; features without it, on
    70/30 labels, give a probe that predicts the majority class: accuracy at the prior, MCC 0."""
    import numpy as np

    from benchmarks.bench_probe import probe_scores

    rng = np.random.default_rng(0)
    labels = {s: (rng.random(n) < 0.3).astype(int) for s, n in (("train", 400), ("validation", 200), ("test", 200))}
    carries = {s: (np.c_[y * 4.0 - 2.0, rng.normal(size=(len(y), 3))], y) for s, y in labels.items()}
    assert probe_scores(carries) == {"validation_accuracy": 1.0, "validation_mcc": 1.0, "test_accuracy": 1.0,
                                     "test_mcc": 1.0}
    blind = {s: (rng.normal(size=(len(y), 4)) * 1e-3, y) for s, y in labels.items()}
    scores = probe_scores(blind)
    assert scores["test_mcc"] == 0.0 and scores["test_accuracy"] == pytest.approx(1 - labels["test"].mean())


def test_probe_encodes_sentence_pairs_as_one_input():
    """`bench_probe.features` on a pair task sees both sentences, with BERT's segment ids, as the adapters do."""
    import torch

    from benchmarks.bench_probe import features
    from hf_ttmoe import TTLoRAConfig, load_base_model, load_tokenizer

    config = TTLoRAConfig(base_model_name_or_path=DEFAULT_BASE_MODEL, num_labels=2)
    tokenizer, encoder = load_tokenizer(config), load_base_model(config).eval().base_model
    questions, answers = ["where is the film set?", "who wrote it?"], ["it is set in rome.", "nobody knows."]
    paired = features(encoder, tokenizer, questions, 32, answers)
    with torch.no_grad():
        direct = encoder(**tokenizer(questions, answers, padding=True, return_tensors="pt"))
    assert np.allclose(paired["pooler"], direct.pooler_output.numpy(), atol=1e-5)
    assert not np.allclose(paired["cls"], features(encoder, tokenizer, questions, 32)["cls"], atol=1e-3)


def test_published_init_starts_from_a_nonzero_update():
    """`--tt_init svd_of_random`: every adapted layer starts at the TT-SVD of a kaiming-uniform matrix (ΔW ≠ 0,
    truncated so no larger than that matrix); the default starts at ΔW = 0."""
    import math

    import torch

    from benchmarks.bench_quality import init_cores_from_random_matrix
    from hf_ttmoe import TTLoRALinear

    model, _ = build("tt", args("qv"), ["a", "b"], 0)
    layers = [m for m in model.modules() if isinstance(m, TTLoRALinear)]
    assert len(layers) == 12 and all(torch.count_nonzero(m.delta_weight()) == 0 for m in layers)
    init_cores_from_random_matrix(model)
    for m in layers:
        delta = m.delta_weight() / m.scaling
        bound = math.sqrt(6 / ((1 + 8) * m.base_layer.in_features))  # kaiming_uniform_(a=√8)
        full_norm = bound * math.sqrt(delta.numel() / 3)  # expected Frobenius norm of the uniform matrix
        assert 0.05 * full_norm < delta.norm() < 1.1 * full_norm


def test_module_sets_follow_the_architecture(tmp_path):
    """On a decoder (Llama layout) every method adapts the linears its name says: query/value are q_proj/v_proj, the
    feed-forward linears are gate/up/down_proj, "all" is every linear of a layer; LoRA at MoE-LoRA's budget lands
    within one rank's worth of its parameters."""
    from conftest import tiny_base

    from hf_ttmoe import DenseMoELoRAConfig

    path = tmp_path / "tiny-llama"
    tiny_base("llama", num_labels=2).save_pretrained(path)
    a = argparse.Namespace(**{**vars(args("qv")), "base_model": str(path)})

    def lora_targets(model):
        return {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in model.named_parameters() if ".lora_A" in n}

    def linear_names(model, kind):
        return {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if type(m).__name__ == kind}

    tt, _ = build("tt", a, ["a", "b"], 0)
    assert linear_names(tt, "TTLoRALinear") == {"q_proj", "v_proj"}
    lora, _ = build("lora", a, ["a", "b"], 0)
    assert lora_targets(lora) == {"q_proj", "v_proj"}
    for modules, names in (("q", {"q_proj"}), ("v", {"v_proj"})):
        one, _ = build("lora", argparse.Namespace(**{**vars(a), "modules": modules}), ["a", "b"], 0)
        assert lora_targets(one) == names
    lora_all, _ = build("lora", argparse.Namespace(**{**vars(a), "modules": "all"}), ["a", "b"], 0)
    assert lora_targets(lora_all) == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    moe, _ = build("moe", a, ["a", "b"], 0)
    budget, _ = build("lora_budget", a, ["a", "b"], 0)
    assert lora_targets(budget) == {
        "gate_proj", "up_proj", "down_proj"}
    assert linear_names(moe, "DenseMoELoRALinear") == {"gate_proj", "up_proj", "down_proj"}
    per_rank = 2 * 3 * (32 + 64)  # LoRA parameters per unit of rank: 2 layers x 3 linears x (in + out)
    assert abs(adapter_parameters(budget) - adapter_parameters(moe)) <= per_rank / 2
    assert DenseMoELoRAConfig().num_experts * DenseMoELoRAConfig().lora_rank == 32


def test_budget_arguments_fixed_or_early_stopping_on_metric_or_loss(tmp_path):
    """`bench_quality.budget_arguments`: a fixed budget trains `--epochs` with no evaluation; early stopping evaluates
    every `--eval_steps`, keeps the best checkpoint by the dev metric (higher is better) or, with `--stop_on loss`,
    by the dev loss (lower is better), and Trainer accepts the arguments as they are."""
    from transformers import EarlyStoppingCallback, TrainingArguments

    from benchmarks.bench_quality import budget_arguments

    base = dict(epochs=2.0, early_stopping=0, eval_steps=25, max_epochs=5.0, metric="mcc", stop_on="metric")
    fixed, callbacks = budget_arguments(argparse.Namespace(**base))
    assert fixed == {"num_train_epochs": 2.0, "save_strategy": "no"} and callbacks == []
    for stop_on, watched, higher in (("metric", "mcc", True), ("loss", "loss", False)):
        kwargs, callbacks = budget_arguments(argparse.Namespace(**{**base, "early_stopping": 3, "stop_on": stop_on}))
        made = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], **kwargs)
        assert (made.metric_for_best_model, made.greater_is_better) == (watched, higher)
        assert made.num_train_epochs == 5.0 and made.eval_steps == made.save_steps == 25
        assert made.load_best_model_at_end
        assert [type(c) for c in callbacks] == [EarlyStoppingCallback] and callbacks[0].early_stopping_patience == 3


def test_summary_pairs_seeds_at_each_methods_chosen_rate(tmp_path):
    """`quality_summary`: each method at its own chosen rate, the difference paired by seed, in the run's metric; an
    unfinished run uses the first seed's best dev rate and is marked."""
    import json

    from benchmarks import quality_summary

    def row(method, lr, seed, dev, test):
        return {"method": method, "lr": lr, "seed": seed, "dev_mcc": dev, "test_mcc": test, "test_accuracy": test,
                "adapter_params": 10}

    rows = [row("moe", 1e-3, 0, 0.5, 0.40), row("moe", 2e-3, 0, 0.6, 0.30), row("lora_budget", 1e-3, 0, 0.7, 0.35),
            row("moe", 2e-3, 1, 0, 0.50), row("lora_budget", 1e-3, 1, 0, 0.40),
            row("moe", 1e-3, 1, 0, 0.99)]  # a rate that was not chosen: never read
    finished = {"args": {"task": "cola", "metric": "mcc", "seeds": [0, 1], "methods": ["moe", "lora_budget"],
                         "base_model": "org/tiny-base"},
                "rows": rows, "chosen_lr": {"moe": 2e-3, "lora_budget": 1e-3}}
    (tmp_path / "cola.json").write_text(json.dumps(finished))
    unfinished = {**finished, "rows": rows[:3]}
    del unfinished["chosen_lr"]
    (tmp_path / "part.json").write_text(json.dumps(unfinished))
    out = quality_summary.main(["--pair", "moe", "lora_budget", "--runs", "cola", "part", "--name", "s"], tmp_path)
    assert out[0]["diffs"] == pytest.approx([-0.05, 0.10]) and out[0]["complete"]
    assert out[0]["moe"]["mean"] == pytest.approx(0.40) and out[0]["lora_budget"]["lr"] == 1e-3
    assert out[1]["seeds"] == [0] and not out[1]["complete"] and out[1]["moe"]["lr"] == 2e-3
    text = (tmp_path / "s.md").read_text()
    assert "| cola | tiny-base | 1 ep | MCC | 40.00 ± 10.00 (0.002) | 37.50 ± 2.50 (0.001) | +2.50 ± 7.50 (ahead)" \
        in text
    assert "0 (unfinished)" in text and "moe ≥ lora_budget on 1 of 1 finished rows (task, base, budget)." in text
    assert (tmp_path / "s.png").stat().st_size > 0
    with pytest.raises(SystemExit, match="does not run"):
        quality_summary.main(["--pair", "moe", "tt", "--runs", "cola", "--name", "s"], tmp_path)


def test_summary_reads_two_runs_joined_by_plus_as_one(tmp_path):
    """Two methods run as separate processes (one per core) are read as one run by "A+B": rows and chosen rates
    joined, the same table as one run of both; runs that differ in their rows or budget are refused, by name."""
    import json

    from benchmarks import quality_summary

    def row(method, lr, seed, dev, test):
        return {"method": method, "lr": lr, "seed": seed, "dev_accuracy": dev, "test_accuracy": test,
                "adapter_params": 10}

    args = {"task": "rte", "metric": "accuracy", "seeds": [0, 1], "base_model": "org/tiny-base",
            "early_stopping": 3, "eval_steps": 25, "max_epochs": 3.0, "stop_on": "metric", "threads": 1}
    moe = [row("moe", 1e-3, 0, 0.6, 0.55), row("moe", 2e-3, 0, 0.5, 0.90), row("moe", 1e-3, 1, 0, 0.57)]
    lora = [row("lora_budget", 1e-3, 0, 0.7, 0.52), row("lora_budget", 1e-3, 1, 0, 0.50)]
    runs = {"a": {"args": {**args, "methods": ["moe"]}, "rows": moe, "chosen_lr": {"moe": 1e-3}},
            "b": {"args": {**args, "methods": ["lora_budget"], "threads": 2}, "rows": lora,
                  "chosen_lr": {"lora_budget": 1e-3}},
            "both": {"args": {**args, "methods": ["moe", "lora_budget"]}, "rows": moe + lora,
                     "chosen_lr": {"moe": 1e-3, "lora_budget": 1e-3}},
            "longer": {"args": {**args, "methods": ["lora_budget"], "max_epochs": 10.0}, "rows": lora}}
    for name, run in runs.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(run))
    joined = quality_summary.main(["--pair", "moe", "lora_budget", "--runs", "a+b", "--name", "j"], tmp_path)
    one = quality_summary.main(["--pair", "moe", "lora_budget", "--runs", "both", "--name", "o"], tmp_path)
    assert joined == one and joined[0]["diffs"] == pytest.approx([0.03, 0.07]) and joined[0]["complete"]
    assert "| rte | tiny-base | ES 3x25, ≤3 ep | accuracy | 56.00 ± 1.00 (0.001) |" in (tmp_path / "j.md").read_text()
    with pytest.raises(SystemExit, match=r"a\+longer.*longer differs in max_epochs \(max_epochs=10.0 vs 3.0\)"):
        quality_summary.main(["--pair", "moe", "lora_budget", "--runs", "a+longer", "--name", "x"], tmp_path)
    older = {**runs["b"], "args": {k: v for k, v in runs["b"]["args"].items() if k != "stop_on"}}
    (tmp_path / "older.json").write_text(json.dumps(older))  # saved before --stop_on: it stopped on the metric
    assert quality_summary.main(["--pair", "moe", "lora_budget", "--runs", "a+older", "--name", "x"], tmp_path) == one
    on_loss = {**runs["b"], "args": {**runs["b"]["args"], "stop_on": "loss"}}
    (tmp_path / "on_loss.json").write_text(json.dumps(on_loss))
    with pytest.raises(SystemExit, match="differs in stop_on"):
        quality_summary.main(["--pair", "moe", "lora_budget", "--runs", "a+on_loss", "--name", "x"], tmp_path)
    out = quality_summary.main(["--pair", "lora_budget", "lora_budget", "--runs", "on_loss", "--name", "l"], tmp_path)
    assert out[0]["budget"] == "ES 3x25 on loss, ≤3 ep"
    with pytest.raises(SystemExit, match="no results .*missing.json"):
        quality_summary.main(["--pair", "moe", "lora_budget", "--runs", "a+missing", "--name", "x"], tmp_path)


def test_tables_show_the_best_checkpoint_step_when_every_run_has_one():
    """`bench_quality.tables`: the test table's steps column carries the median dev-best step of early-stopped runs,
    and only the steps run when a row has none (a fixed budget, or a row saved before rows recorded it)."""
    from benchmarks.bench_quality import METRICS, tables

    def row(seed, steps, best=None):
        r = {"method": "moe", "lr": 2e-4, "seed": seed, "steps": steps, "adapter_params": 10,
             **{f"{split}_{k}": 0.5 for split in ("dev", "test") for k in METRICS}}
        return r if best is None else {**r, "best_step": best}

    args = argparse.Namespace(seeds=[0, 1, 2], methods=["moe"], metric="mcc")
    early = tables(args, [row(0, 1150, 650), row(1, 1100, 600), row(2, 1150, 900)], {"moe": 2e-4})
    assert "| moe | 10 | 0.0002 | 1150 (best 650) |" in early
    mixed = tables(args, [row(0, 1150, 650), row(1, 1100)], {"moe": 2e-4})
    assert "| moe | 10 | 0.0002 | 1125 |" in mixed


@pytest.mark.parametrize("share", ["module", "all"])
def test_stacked_tt_is_one_train_over_the_layers(share):
    """`stacked_tt.stack_tt_` on random shapes: ΔW = 0 at step 0; each layer's output minus its base's is
    x (scaling · U S_l V)ᵀ, the slice of one three-core train whose U, V the layers share (per name and shape, or per
    shape), and U's gradient sums every layer's (float64, 1e-10)."""
    import torch
    from torch import nn

    from benchmarks.stacked_tt import StackedTTLinear, stack_tt_

    torch.manual_seed(0)
    model = nn.ModuleDict({f"l{i}": nn.ModuleDict({"q": nn.Linear(7, 5), "v": nn.Linear(7, 5), "o": nn.Linear(5, 9)})
                           for i in range(3)}).double()
    targets = [f"l{i}.{n}" for i in range(3) for n in "qvo"]
    x7, x5 = torch.randn(4, 7, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    stacks = stack_tt_(model, targets, rank=3, alpha=6.0, share=share)
    assert sorted(stacks) == (["5x9", "7x5"] if share == "all" else ["o_5x9", "q_7x5", "v_7x5"])
    layers = {t: model.get_submodule(t) for t in targets}
    assert all(isinstance(m, StackedTTLinear) and m.scaling == 2.0 for m in layers.values())
    for t, m in layers.items():
        x = x5 if t.endswith("o") else x7
        assert torch.equal(m(x), m.base_layer(x))  # S = 0
        with torch.no_grad():
            m.s.normal_()
    same = layers["l0.q"]._cores[0] is layers["l2.v"]._cores[0]
    assert same == (share == "all") and layers["l0.q"]._cores[0] is layers["l1.q"]._cores[0]
    assert len(list(model.parameters())) == 9 * 2 + 9 + len(stacks) * 2  # 9 weights and biases, 9 S, U and V once
    for t, m in layers.items():
        x = x5 if t.endswith("o") else x7
        cores = m._cores[0]
        expected = m.base_layer(x) + x @ (2.0 * cores.u @ m.s @ cores.v).T
        assert torch.allclose(m(x), expected, atol=1e-10) and torch.allclose(m.delta_weight(),
                                                                              2.0 * cores.u @ m.s @ cores.v)
    u = layers["l0.q"]._cores[0].u
    sharing = [m for m in layers.values() if m._cores[0].u is u]
    sum(m(x7).square().sum() for m in sharing).backward()
    grads = []
    for m in sharing:
        u_alone = u.detach().clone().requires_grad_(True)
        c = m._cores[0]
        out = m.base_layer(x7) + ((x7 @ c.v.T) @ (m.scaling * m.s).T) @ u_alone.T
        grads.append(torch.autograd.grad(out.square().sum(), u_alone)[0])
    assert len(sharing) == (2 * 3 if share == "all" else 3) and torch.allclose(u.grad, sum(grads), atol=1e-10)
    with pytest.raises(ValueError, match="share='layer' is not one of"):
        stack_tt_(model, [], rank=3, alpha=6.0, share="layer")


def test_mpo_tt_is_a_tt_matrix_of_paired_modes():
    """`mpo_tt.MPOLinear` on random modes and ranks: ΔW = 0 at step 0; with random cores, ΔWᵀ equals the entry-wise
    definition (the product of each core's (i_k, j_k) slice) and the layer adds x · scaling · ΔWᵀ (float64, 1e-10);
    the parameter count is the cores'; modes that do not make up the linear are refused."""
    import itertools

    import torch
    from torch import nn

    from benchmarks.mpo_tt import MPOLinear, mpo_num_params, mpo_to_matrix_t, mpo_tt_

    torch.manual_seed(0)
    layouts = [([2, 3, 2], [3, 2, 2], [2, 3]), ([3, 4], [5, 2], [4]), ([2, 2, 3, 2], [2, 3, 1, 2], [3, 2, 2])]
    for in_modes, out_modes, ranks in layouts:
        n, m = math.prod(in_modes), math.prod(out_modes)
        model = nn.ModuleDict({"q": nn.Linear(n, m)})
        mpo_tt_(model, ["q"], in_modes, out_modes, ranks, alpha=8.0)
        model.double()
        layer, x = model["q"], torch.randn(5, n, dtype=torch.float64)
        assert torch.equal(layer(x), layer.base_layer(x))  # the last core is zero
        assert sum(p.numel() for p in layer.mpo_cores) == mpo_num_params(in_modes, out_modes, ranks)
        with torch.no_grad():
            layer.mpo_cores[-1].normal_()
        cores = [c.detach() for c in layer.mpo_cores]
        expected = torch.zeros(n, m, dtype=torch.float64)
        for i in itertools.product(*map(range, in_modes)):
            for j in itertools.product(*map(range, out_modes)):
                chain = torch.ones(1, 1, dtype=torch.float64)
                for core, a, b in zip(cores, i, j):
                    chain = chain @ core[:, a, b, :]
                row = sum(a * math.prod(in_modes[k + 1:]) for k, a in enumerate(i))
                col = sum(b * math.prod(out_modes[k + 1:]) for k, b in enumerate(j))
                expected[row, col] = chain.item()
        assert torch.allclose(mpo_to_matrix_t(cores), expected, atol=1e-10)
        assert layer.scaling == 8.0 / ranks[-1]
        assert torch.allclose(layer(x), layer.base_layer(x) + x @ (layer.scaling * expected), atol=1e-10)
    with pytest.raises(ValueError, match=r"do not make up a 12 -> 12 linear"):
        MPOLinear(nn.Linear(12, 12), [2, 2, 2], [2, 2, 3], [2, 2], alpha=8.0)
    with pytest.raises(ValueError, match=r"one rank fewer"):
        MPOLinear(nn.Linear(12, 12), [3, 4], [4, 3], [2, 2], alpha=8.0)


@pytest.mark.parametrize("shape, rank", [((7, 5), 3), ((4, 9), 4), ((6, 6), 6)])
def test_svd_core_trains_a_core_between_the_weights_singular_bases(shape, rank):
    """`svd_core.SVDCoreLinear` on random (out, in) weights: its bases are the weight's own top singular pairs (A B is
    the best rank-r approximation of Wᵀ, Eckart-Young, so Wᵀ itself at full rank); ΔW = 0 at step 0; with a random
    core the layer adds x · scaling · A R B, and `delta_weight` is its transpose (float64, 1e-10); only the core
    trains, and its gradient at step 0 is Aᵀ (xᵀ g) Bᵀ, not zero; a rank the weight cannot give is refused."""
    import torch
    from torch import nn

    from benchmarks.svd_core import SVDCoreLinear, svd_core_

    torch.manual_seed(0)
    model = nn.ModuleDict({"q": nn.Linear(shape[1], shape[0]).double()})
    base_weight = model["q"].weight.detach().clone()
    svd_core_(model, ["q"], rank, alpha=8.0)
    layer, x = model["q"], torch.randn(5, shape[1], dtype=torch.float64)
    u, s, vh = torch.linalg.svd(base_weight.T)
    best = u[:, :rank] @ torch.diag(s[:rank]) @ vh[:rank]
    assert torch.allclose(layer.svd_a @ layer.svd_b, best, atol=1e-10)
    if rank == min(shape):
        assert torch.allclose(layer.svd_a @ layer.svd_b, base_weight.T, atol=1e-10)
    assert torch.equal(layer(x), layer.base_layer(x))  # the core starts at zero
    trainable = {n for n, p in layer.named_parameters() if p.requires_grad}
    assert trainable == {"svd_core", "base_layer.weight", "base_layer.bias"}  # bases are buffers; build freezes base
    layer.base_layer.requires_grad_(False)
    g = torch.randn(5, shape[0], dtype=torch.float64)
    (layer(x) * g).sum().backward()
    expected_grad = layer.scaling * layer.svd_a.T @ (x.T @ g) @ layer.svd_b.T
    assert torch.allclose(layer.svd_core.grad, expected_grad, atol=1e-10) and expected_grad.abs().max() > 0
    assert layer.svd_a.grad is None and layer.svd_b.grad is None and layer.base_layer.weight.grad is None
    with torch.no_grad():
        layer.svd_core.normal_()
    delta_t = layer.scaling * layer.svd_a @ layer.svd_core @ layer.svd_b
    assert layer.scaling == 8.0 / rank and torch.allclose(layer.delta_weight(), delta_t.T, atol=1e-10)
    assert torch.allclose(layer(x), x @ (base_weight.T + delta_t) + layer.base_layer.bias, atol=1e-10)
    assert torch.equal(layer.base_layer.weight, base_weight)  # the base weights are read, never changed
    with pytest.raises(ValueError, match=r"rank 8 is not between 1 and 6 for a \(6, 7\) weight"):
        SVDCoreLinear(nn.Linear(7, 6), 8, alpha=8.0)


def test_closest_setting_table_pairs_seeds_and_keeps_the_protocol(tmp_path):
    """`quality_closest`: runs grouped by comparable rows; each setting against LoRA r=16 of its modules, paired by
    seed; the closest is the best with 3 seeds at ≤ 5% of the reference's parameters; runs that did not choose their
    rate on seed 0, and runs on other rows, are not read into the group."""
    import json

    from benchmarks import quality_closest

    def rows(method, lr, tests, params, dev=0.5):
        return [{"method": method, "lr": lr, "seed": s, "dev_accuracy": dev, "test_accuracy": t,
                 "adapter_params": params} for s, t in enumerate(tests)]

    args = {"task": "sick", "metric": "accuracy", "seeds": [0, 1, 2], "base_model": "org/tiny-base", "modules": "qv"}
    runs = {
        "quality_ref": ({"methods": ["lora", "tt"]}, rows("lora", 1e-3, [0.80, 0.82, 0.78], 1000)
                        + rows("tt", 5e-3, [0.75, 0.77, 0.76], 50) + rows("tt", 1e-2, [0.99], 50, dev=0.4)),
        "quality_mpo": ({"methods": ["tt_mpo"], "mpo_ranks": [4, 4, 4]}, rows("tt_mpo", 1e-2, [0.79, 0.82, 0.77], 44)),
        "quality_big": ({"methods": ["tt"], "tt_rank": 9}, rows("tt", 1e-2, [0.81, 0.82, 0.79], 60)),
        "quality_svd": ({"methods": ["svd_core"], "svd_rank": 16}, rows("svd_core", 2e-2, [0.78, 0.80, 0.77], 45)),
        "quality_one": ({"methods": ["tt_stack"], "seeds": [0]}, rows("tt_stack", 5e-3, [0.83], 40)),
        "quality_rerun": ({"methods": ["tt_mpo"], "mpo_ranks": [4, 4, 4], "seeds": [0]},
                          rows("tt_mpo", 1e-2, [0.10], 44)),  # the same setting, fewer seeds: not read
        "quality_seed1": ({"methods": ["tt_mpo"], "seeds": [1]}, rows("tt_mpo", 1e-2, [0.0, 0.99], 44)[1:]),
        "quality_other_rows": ({"methods": ["tt_mpo"], "max_test_samples": 100}, rows("tt_mpo", 1e-2, [0.9] * 3, 44)),
        # PEFT LoRA's own budget curve: rank 1 on value only (inside 5%), rank 4 on both (over), rank 1 with weight
        # decay (a recipe change: not on the curve)
        "quality_lora_v": ({"methods": ["lora"], "lora_rank": 1, "modules": "v"},
                           rows("lora", 5e-3, [0.78, 0.79, 0.78], 30)),
        "quality_lora_r4": ({"methods": ["lora"], "lora_rank": 4}, rows("lora", 2e-3, [0.80, 0.81, 0.78], 250)),
        "quality_lora_wd": ({"methods": ["lora"], "lora_rank": 1, "weight_decay": 0.1},
                            rows("lora", 5e-3, [0.795, 0.82, 0.78], 40)),
        # a two-core chain on value is LoRA's form: with PEFT LoRA inside the budget, never the closest TT setting
        "quality_two_cores": ({"methods": ["tt"], "modules": "v", "tt_rank": 1, "tt_shapes": {"value": [[8], [8]]}},
                              rows("tt", 5e-3, [0.80, 0.82, 0.78], 16)),
    }
    for name, (extra, rs) in runs.items():
        run = {"args": {**args, **extra}, "rows": rs}
        if name != "quality_one":
            run["chosen_lr"] = {extra["methods"][0]: rs[0]["lr"]}  # quality_one: unfinished, read from dev
        (tmp_path / f"{name}.json").write_text(json.dumps(run))
    (tables,) = quality_closest.main(["--name", "c"], tmp_path)
    by = {r["label"]: r for r in tables}
    assert set(by) == {"lora", "tt", "tt_mpo (mpo_ranks=[4,4,4])", "tt (tt_rank=9)", "tt_stack",
                       "svd_core (svd_rank=16)", 'lora (lora_rank=1, modules="v")', "lora (lora_rank=4)",
                       "lora (lora_rank=1, weight_decay=0.1)",
                       'tt (tt_rank=1, tt_shapes={"value":[[8],[8]]}, modules="v")'}
    two = by['tt (tt_rank=1, tt_shapes={"value":[[8],[8]]}, modules="v")']
    assert two["lora_form"] and not by["tt"]["lora_form"] and not by["tt (tt_rank=9)"]["lora_form"]
    assert two["diff"] == pytest.approx(0.0) and not two["eligible"] and not two["closest"] and two["lora_in_budget"]
    # one of query / value against the query/value reference; LoRA inside the budget is never "closest" (the goal is
    # TT's), the best of it is reported beside
    lora_v, wd = by['lora (lora_rank=1, modules="v")'], by["lora (lora_rank=1, weight_decay=0.1)"]
    assert lora_v["diff"] == pytest.approx(-0.0167, abs=1e-4) and lora_v["share"] == pytest.approx(0.03)
    assert not lora_v["eligible"] and lora_v["lora_in_budget"] and wd["lora_in_budget"]
    assert two["best_lora"] and not wd["best_lora"] and not lora_v["best_lora"]  # 0.0 beats -0.0017, -0.0167
    curve = ("lora", "lora (lora_rank=4)", 'lora (lora_rank=1, modules="v")')
    assert [by[k]["lora_rank"] for k in curve] == [16, 4, 1]
    assert wd["lora_rank"] is None and by["tt"]["lora_rank"] is None  # off LoRA's curve
    svd = by["svd_core (svd_rank=16)"]
    assert svd["eligible"] and not svd["closest"] and svd["diff"] == pytest.approx(-0.0167, abs=1e-4)
    assert by["lora"]["reference"] and by["tt"]["lr"] == 5e-3
    assert by["tt"]["diff"] == pytest.approx(-0.04) and by["tt"]["share"] == pytest.approx(0.05)
    mpo = by["tt_mpo (mpo_ranks=[4,4,4])"]
    assert mpo["run"] == "quality_mpo" and mpo["diff"] == pytest.approx(-0.0067, abs=1e-4)
    assert mpo["diff_std"] == pytest.approx(0.0047, abs=1e-4)  # paired: -0.01, 0.00, -0.01
    assert mpo["closest"] and mpo["eligible"]
    assert not by["tt (tt_rank=9)"]["eligible"]  # 6% of LoRA's parameters, though closer
    assert not by["tt_stack"]["eligible"] and by["tt_stack"]["n"] == 1  # one seed, though ahead
    assert [r["label"] for r in tables][:3] == ["tt_stack", "tt (tt_rank=9)", "lora"]  # best difference first
    text = (tmp_path / "c.md").read_text()
    # the default chain beside the closest setting: its test, share and paired difference (-0.05, -0.05, -0.02)
    assert ("| sick, tiny-base, 1 ep (accuracy) | 80.00 ± 1.63 | 76.00 ± 0.82 (5.00%): -4.00 ± 1.41 | "
            "`tt_mpo (mpo_ranks=[4,4,4])` | 44 (4.40%) | "
            "79.33 ± 2.05 | -0.67 ± 0.47 | yes | 3 / 9 | `tt (tt_rank=1, tt_shapes={\"value\":[[8],[8]]}, "
            "modules=\"v\")`, 1.60%: +0.00 ± 0.00 |") in text
    assert (tmp_path / "c.png").stat().st_size > 0 and (tmp_path / "c_frontier.png").stat().st_size > 0


def test_closest_groups_runs_batched_by_length_with_their_own_reference(tmp_path):
    """Runs with batches grouped by length (the convergence runs) are compared with a LoRA r=16 reference batched the
    same way, never with one batched at random; the group's title says so."""
    import json

    from benchmarks import quality_closest

    base = {"task": "rte", "metric": "accuracy", "seeds": [0, 1, 2], "base_model": "org/tiny-base",
            "early_stopping": 10, "eval_steps": 50, "max_epochs": 10.0}
    runs = {"quality_lora": ({}, "lora", [0.60, 0.58, 0.59], 1000),
            "quality_tt": ({}, "tt", [0.55, 0.54, 0.56], 50),
            "quality_lora_bl": ({"group_by_length": True}, "lora", [0.57, 0.61, 0.60], 1000),
            "quality_tt_bl": ({"group_by_length": True}, "tt", [0.58, 0.60, 0.57], 50)}
    for name, (extra, method, tests, params) in runs.items():
        rows = [{"method": method, "lr": 1e-3, "seed": s, "dev_accuracy": 0.5, "test_accuracy": t,
                 "adapter_params": params} for s, t in enumerate(tests)]
        run = {"args": {**base, **extra, "methods": [method]}, "rows": rows, "chosen_lr": {method: 1e-3}}
        (tmp_path / f"{name}.json").write_text(json.dumps(run))
    tables = quality_closest.main(["--name", "c"], tmp_path)
    by_run = {r["run"]: r for rows in tables for r in rows}
    assert len(tables) == 2 and by_run["quality_lora_bl"]["reference"] and by_run["quality_lora"]["reference"]
    assert by_run["quality_tt_bl"]["label"] == "tt" and by_run["quality_tt_bl"]["closest"]
    assert by_run["quality_tt_bl"]["diff"] == pytest.approx(-0.01)  # against quality_lora_bl, paired by seed
    assert by_run["quality_tt"]["diff"] == pytest.approx(-0.04)
    assert by_run["quality_tt_bl"]["budget"] == "ES 10x50, ≤10 ep, by length"
    assert ("| rte, tiny-base, ES 10x50, ≤10 ep, by length (accuracy) | 59.33 ± 1.70 | 58.33 ± 1.25 (5.00%): "
            "-1.00 ± 1.63 | `tt` |") in (tmp_path / "c.md").read_text()


def test_closest_summary_names_the_default_chain_or_says_it_was_not_run():
    """The summary's default-chain cell: the `tt` row on query/value only (not a `tt` setting on value), its seed
    count when short of the protocol's 3, and "—" for a group that never ran it."""
    from benchmarks.quality_closest import default_chain

    chain = {"label": "tt", "modules": "qv", "mean": 0.5, "std": 0.0, "n": 1, "share": 0.0496, "diff": -0.1,
             "diff_std": 0.0}
    on_v = {**chain, "label": 'tt (modules="v")', "modules": "v", "n": 3}
    assert default_chain([on_v, chain]) == "50.00 ± 0.00 (4.96%, 1 seed): -10.00 ± 0.00"
    assert default_chain([on_v]) == "—"


def kept(grad, v) -> float:
    """The share of ‖G‖ left after projecting G's rows on the row space of `v`."""
    import torch

    q, _ = torch.linalg.qr(v.T.double())
    return ((grad.double() @ q).norm() / grad.norm()).item()


def test_lora_form_needs_every_linear_of_the_bases_layers(tmp_path):
    """`--modules all` with a two-core chain on every linear is LoRA's form; one linear left to the automatic layout
    is a tensor train. The count is the base's: six linears in a BERT layer, seven in a Llama layer."""
    from conftest import tiny_base

    from benchmarks.quality_closest import MODULE_COUNT, defaults, lora_form

    default = defaults()
    for kind, names in (("bert", ["query", "key", "value", "attention.output.dense", "intermediate.dense",
                                  "output.dense"]),
                        ("llama", ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])):
        tiny_base(kind, num_labels=2).save_pretrained(tmp_path / kind)
        run = {"modules": "all", "base_model": str(tmp_path / kind), "tt_rank": 1}
        every = {name: [[8], [8]] for name in names}
        assert lora_form("tt", {**run, "tt_shapes": every}, default)
        assert not lora_form("tt", {**run, "tt_shapes": dict(list(every.items())[:-1])}, default)
        assert not lora_form("tt", {**run, "tt_shapes": {**every, names[0]: [[4, 2], [8]]}}, default)
        assert not lora_form("tt_stack", {**run, "tt_shapes": every}, default)
    assert "all" not in MODULE_COUNT  # counted per base, never assumed


def test_gradient_init_aligns_the_cores_with_the_weights_gradient():
    """`--tt_init gradient`: ΔW stays 0, the base weights stay frozen and unchanged, and every core but the last is the
    TT-SVD of the weight's gradient on the given rows (scaled), computed here apart with plain autograd; so the input
    chain keeps more of that gradient than the default's random chain does."""
    import torch
    from datasets import Dataset
    from transformers import DataCollatorWithPadding

    from benchmarks.bench_quality import init_cores_from_gradient
    from hf_ttmoe import TTLoRALinear, load_tokenizer, tt
    from hf_ttmoe.ttlora import TTLoRAConfig

    tokenizer = load_tokenizer(TTLoRAConfig(base_model_name_or_path=DEFAULT_BASE_MODEL))
    texts = ["a fine film", "dull and long", "i loved every minute of it", "a waste of time", "bright", "grim"]
    rows = Dataset.from_dict({**tokenizer(texts), "labels": [1, 0, 1, 0, 1, 0]})
    collator = DataCollatorWithPadding(tokenizer)

    def model_and_layers():
        torch.manual_seed(0)
        model, _ = build("tt", args("qv"), ["a", "b"], 0)
        return model, [m for m in model.modules() if isinstance(m, TTLoRALinear)]

    reference, ref_layers = model_and_layers()  # the gradient by hand: all rows in one batch, eval mode
    for m in ref_layers:
        m.base_layer.weight.requires_grad_(True)
    reference.eval()
    reference(**collator([rows[i] for i in range(len(rows))])).loss.backward()

    model, layers = model_and_layers()
    before = [m.base_layer.weight.clone() for m in layers]
    init_cores_from_gradient(model, rows, collator, rows=len(rows), batch_size=4)  # two batches, weighted by size
    kept_default = []
    for m, ref, weight in zip(layers, ref_layers, before, strict=True):
        assert torch.count_nonzero(m.delta_weight()) == 0 and torch.equal(m.base_layer.weight, weight)
        assert not m.base_layer.weight.requires_grad and m.base_layer.weight.grad is None
        grad = ref.base_layer.weight.grad
        expected = tt.tt_svd(grad, m.in_modes, m.out_modes, m.ranks[1:-1])
        for core, svd_core in zip(list(m.ttlora_cores)[:-1], expected[:-1], strict=True):
            gain = core.norm() / svd_core.norm()  # each core its init="orthogonal" gain
            # batches of 4 and 2 rows pad otherwise than one of 6: the gradients agree to float32 rounding, which the
            # SVDs of later bonds amplify where singular values nearly tie; 1% of the core's largest entry allows it
            torch.testing.assert_close(core, svd_core * gain, rtol=0, atol=1e-2 * core.abs().max().item())

        assert kept(grad, m.factors()[1]) > kept(grad, ref.factors()[1])
        kept_default.append(kept(grad, ref.factors()[1]))
    assert all(p.grad is None for p in model.parameters())
    assert max(kept_default) < 0.5  # the default's random chain keeps little of it


def test_param_groups_give_the_zero_cores_and_the_head_their_own_rates():
    """`--zero_core_lr_ratio` (LoRA+'s rule) and `--head_lr`: each trainable parameter in exactly one group; the last
    core of every TT-LoRA layer at ratio x lr, the head at its own rate, the rest at lr; no groups without either flag,
    and a clear error for the ratio on a method without cores."""
    from benchmarks.bench_quality import param_groups
    from hf_ttmoe import TTLoRALinear

    model, _ = build("tt", args("qv"), ["a", "b"], 0)
    assert param_groups(model, 5e-3, args("qv", head_lr=None, zero_core_lr_ratio=1.0)) is None
    groups = param_groups(model, 5e-3, args("qv", head_lr=2e-3, zero_core_lr_ratio=16.0))
    rate = {id(p): g["lr"] for g in groups for p in g["params"]}
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert sum(len(g["params"]) for g in groups) == len(rate) == len(trainable)
    zero_cores = {id(m.ttlora_cores[-1]) for m in model.modules() if isinstance(m, TTLoRALinear)}
    assert len(zero_cores) == 12
    for name, p in trainable:
        expected = 2e-3 if "classifier" in name else 16 * 5e-3 if id(p) in zero_cores else 5e-3
        assert rate[id(p)] == pytest.approx(expected), name
    lora, _ = build("lora", args("qv"), ["a", "b"], 0)
    with pytest.raises(ValueError, match="zero_core_lr_ratio 4.0 needs TT-LoRA cores"):
        param_groups(lora, 1e-3, args("qv", head_lr=None, zero_core_lr_ratio=4.0))


@pytest.mark.parametrize("flags", [["--methods", "tt", "--tt_layout", "stacked"], ["--methods", "tt", "lora"]])
def test_zero_core_ratio_is_refused_outside_the_chains(flags, monkeypatch, capsys):
    """The ratio names a chain's last core: a stacked layout, or a run that also trains another method, is refused
    before anything loads, naming the flag and what was given."""
    from benchmarks import bench_quality

    monkeypatch.setattr("sys.argv", ["bench_quality", "--task", "sst2", "--name", "n", "--zero_core_lr_ratio", "4",
                                     *flags])
    with pytest.raises(SystemExit):
        bench_quality.main()
    assert "--zero_core_lr_ratio 4.0 applies to the tt method's chains alone" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["gradient", "gauge"])
def test_tt_precondition_flag_builds_the_riemannian_optimizer(mode):
    """`--tt_precondition REG` trains the chain with `create_riemannian_optimizer` in the given mode, over every
    trainable parameter, with the run's weight decay; without it Trainer builds its own optimizer."""
    from benchmarks.bench_quality import make_optimizer

    model, _ = build("tt", args("qv"), ["a", "b"], 0)
    flags = dict(head_lr=None, zero_core_lr_ratio=1.0, weight_decay=0.1, tt_precondition_mode=mode)
    assert make_optimizer(model, 5e-3, args("qv", tt_precondition=None, **flags)) is None
    optimizer = make_optimizer(model, 5e-3, args("qv", tt_precondition=1e-3, **flags))
    assert type(optimizer).__name__ == "RiemannianTTAdamW"
    (group,) = optimizer.param_groups
    assert group["lr"] == 5e-3 and group["weight_decay"] == 0.1
    assert {id(p) for p in group["params"]} == {id(p) for p in model.parameters() if p.requires_grad}
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.ones_like(p)
    cores = [p for n, p in model.named_parameters() if ".ttlora_cores." in n]
    before = [c.detach().clone() for c in cores]
    optimizer.step()
    assert all(not torch.equal(c, b) for c, b in zip(cores[-1:], before[-1:], strict=True))


def test_tt_precondition_is_refused_outside_the_chains(monkeypatch, capsys):
    from benchmarks import bench_quality

    monkeypatch.setattr("sys.argv", ["bench_quality", "--task", "sst2", "--name", "n", "--tt_precondition", "1e-2",
                                     "--methods", "tt", "lora"])
    with pytest.raises(SystemExit):
        bench_quality.main()
    assert "--tt_precondition 0.01 applies to the tt method's chains alone" in capsys.readouterr().err
