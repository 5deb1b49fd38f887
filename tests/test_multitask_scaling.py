"""`benchmarks/multitask/scaling.py`: the lookup table equals the library's routed forward, by-name and strict
scoring, the top-2 policies, routers over part of the pool, and the command end to end on a tiny saved pool (against
the library's own `evaluate`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_pool import LABELS, TEXTS, WORDS, save_pool, tiny_tokenizer
from transformers import DataCollatorWithPadding

from benchmarks.multitask import scaling
from benchmarks.multitask.run import write_json
from benchmarks.multitask.scaling import (
    by_name_correct,
    macro_accuracy,
    pair_outputs,
    policy_answers,
    pool_rows,
    strict_correct,
    train_pool_router,
)
from benchmarks.multitask.settings import Settings
from hf_ttmoe import TTLoRAMoEModel
from hf_ttmoe.commands import evaluate
from hf_ttmoe.commands.evaluate import name_table
from hf_ttmoe.ttlora_moe import compute_router_features

NUM_EXPERTS = 3  # tiny_pool's task0..2: 2, 3 and 2 labels


@pytest.fixture(scope="module")
def tiny_moe(tmp_path_factory):
    _, moe_dir = save_pool("bert", tmp_path_factory.mktemp("pool"), num_experts=NUM_EXPERTS)
    return moe_dir


def test_lookup_equals_the_routed_forward(tiny_moe):
    moe = TTLoRAMoEModel.from_pretrained(tiny_moe).eval()
    tokenizer = tiny_tokenizer("bert")
    num_labels = [len(n) for n in moe.label_names]
    assert sorted(set(num_labels)) == [2, 3]
    batches = []
    for start in (0, 7):  # two batches padded to different lengths
        texts = TEXTS[start:start + 7] + TEXTS[:start]
        batch = dict(tokenizer(texts, padding=True, return_tensors="pt"))
        tasks = torch.arange(len(texts)) % NUM_EXPERTS
        with torch.no_grad():
            routed = moe(**batch)
        # labels the routed forward gets right on even rows and wrong on odd ones (within each row's own labels)
        own = torch.tensor([num_labels[t] for t in tasks])
        labels = (routed.predictions + torch.arange(len(texts)) % 2) % own
        batches.append({**batch, "task_ids": tasks, "labels": labels, "routed": routed})

    library = {"chosen": [], "pred": []}
    for b in batches:
        routed = b.pop("routed")
        library["chosen"].append(routed.expert_index)
        library["pred"].append(routed.predictions)
    library = {k: torch.cat(v).numpy() for k, v in library.items()}
    features, _ = compute_router_features(moe, batches)
    rows = [{k: v[i][b["attention_mask"][i].bool()].tolist() for k, v in b.items()
             if k in ("input_ids", "attention_mask", "token_type_ids")}
            for b in batches for i in range(len(b["input_ids"]))]  # unpadded, batches' order
    n = len(rows)
    pairs = np.stack(np.meshgrid(np.arange(n), np.arange(NUM_EXPERTS), indexing="ij"), -1).reshape(-1, 2)
    pair_probs, pair_preds = pair_outputs(moe, rows, pairs, DataCollatorWithPadding(tokenizer))
    table = {"probs": pair_probs.reshape(n, NUM_EXPERTS, -1), "preds": pair_preds.reshape(n, NUM_EXPERTS)}
    with torch.no_grad():
        chosen = moe.router(features).argmax(-1).numpy()
    tasks = torch.cat([b["task_ids"] for b in batches]).numpy()
    labels, preds = torch.cat([b["labels"] for b in batches]).numpy(), table["preds"].numpy()
    assert len(set(chosen.tolist())) == NUM_EXPERTS  # the routed rows use every expert
    assert (chosen == library["chosen"]).all()
    assert (preds[np.arange(len(chosen)), chosen] == library["pred"]).all()
    want = (library["chosen"] == tasks) & (library["pred"] == labels)
    got = strict_correct(tasks, labels, chosen, preds)
    assert want.any() and not want.all() and (got == want).all()
    probs = table["probs"].numpy()  # (N, E, C_max): each expert's own labels only
    for e, n in enumerate(num_labels):
        assert np.allclose(probs[:, e, :n].sum(-1), 1) and (probs[:, e, n:] == 0).all()
        assert (probs[:, e].argmax(-1) == preds[:, e]).all()


def test_by_name_counts_a_misrouted_row_right_only_in_the_same_label_names():
    _, names = name_table([["negative", "positive"], ["negative", "positive"], ["no", "yes", "maybe"]])
    tasks = np.array([0, 0, 2, 1, 1])
    labels = np.array([1, 0, 2, 0, 0])
    chosen = np.array([1, 2, 2, 1, 0])  # row 0: to a same-names expert; row 1: to another label space
    preds = np.array([[0, 1, 2], [1, 1, 0], [0, 0, 2], [0, 1, 0], [0, 1, 0]])  # (N, E)
    assert by_name_correct(tasks, labels, chosen, preds, names).tolist() == [True, False, True, False, True]
    assert strict_correct(tasks, labels, chosen, preds).tolist() == [False, False, True, False, False]
    right = by_name_correct(tasks, labels, chosen, preds, names)
    assert macro_accuracy(right, tasks) == pytest.approx((0.5 + 1.0 + 0.5) / 3)  # macro over tasks 0, 1, 2
    sparse = preds.copy()
    sparse[0, 1] = -1  # the table is filled sparsely: a needed output that was never computed is an error
    with pytest.raises(ValueError, match="1 .* never computed"):
        by_name_correct(tasks, labels, chosen, sparse, names)


def random_outputs(n: int, num_labels: list[int], seed: int = 0):
    """Router logits `(n, E)`, every expert's probabilities `(n, E, C_max)` and predictions `(n, E)`."""
    rng = np.random.default_rng(seed)
    probs = np.zeros((n, len(num_labels), max(num_labels)))
    for e, c in enumerate(num_labels):
        probs[:, e, :c] = rng.dirichlet(np.ones(c), size=n)
    return rng.normal(size=(n, len(num_labels))), probs, probs.argmax(-1)


def test_top2_policy_bounds_and_a_flipped_answer():
    _, names = name_table([["negative", "positive"], ["negative", "positive"], ["no", "yes"], ["a", "b", "c"]])
    logits, probs, preds = random_outputs(200, [2, 2, 2, 3])
    top1 = names[logits.argmax(1), preds[np.arange(200), logits.argmax(1)]]
    answers, both = policy_answers(logits, probs, preds, names, tau=0.0)
    assert (answers == top1).all() and not both.any()
    answers, both = policy_answers(logits, probs, preds, names, tau=1.01)
    assert both.all() and (answers != top1).any()

    _, names = name_table([["negative", "positive"], ["negative", "positive"], ["no", "yes"]])
    logits = np.log([[0.55, 0.44, 0.01], [0.60, 0.01, 0.39], [0.95, 0.04, 0.01]])
    probs = np.array([[[0.6, 0.4], [0.1, 0.9], [0.5, 0.5]],  # top-1 says negative; with expert 1: positive
                      [[0.7, 0.3], [0.5, 0.5], [0.1, 0.9]],  # top-2 is another label space: still negative
                      [[0.2, 0.8], [0.9, 0.1], [0.5, 0.5]]])
    preds = probs.argmax(-1)
    neg, pos = 0, 1
    answers, both = policy_answers(logits, probs, preds, names, tau=0.0)
    assert answers.tolist() == [neg, neg, pos] and not both.any()
    answers, both = policy_answers(logits, probs, preds, names, tau=0.7)
    assert answers.tolist() == [pos, neg, pos] and both.tolist() == [True, True, False]
    answers, both = policy_answers(logits, probs, preds, names, same_space=True)
    assert answers.tolist() == [pos, neg, pos] and both.tolist() == [True, False, True]


@pytest.mark.parametrize("router_type", ["linear", "mlp"])
def test_a_pool_router_has_k_outputs_and_learns_the_renumbered_tasks(router_type):
    g = torch.Generator().manual_seed(0)
    tasks = np.repeat(np.arange(4), 30)
    features = 4 * torch.eye(8)[torch.from_numpy(tasks)] + torch.randn(len(tasks), 8, generator=g)  # (N, H)
    pool = np.array([2, 0, 3])
    mask, local = pool_rows(tasks, pool)
    assert (mask == (tasks != 1)).all()
    renumbered = {2: 0, 0: 1, 3: 2}
    assert local.tolist() == [renumbered[t] for t in tasks[mask]]
    config = {"router_type": router_type, "router_hidden_size": 16, "noisy_gating": True, "router_aux_loss_coef": 0.0}
    router, seconds = train_pool_router(features[torch.from_numpy(mask)], torch.from_numpy(local), len(pool), config,
                                        seed=0)
    assert seconds >= 0 and not router.training
    with torch.no_grad():
        logits = router(features[torch.from_numpy(mask)])
    assert logits.shape == (mask.sum(), len(pool))
    assert (pool[logits.argmax(-1).numpy()] == tasks[mask]).mean() >= 0.95


def write_tasks(folder, num_rows: int = 24) -> None:
    """Task folders task0..2 with tiny_pool's label names and sentences of its words."""
    rng = np.random.default_rng(0)
    for t in range(NUM_EXPERTS):
        (folder / f"task{t}").mkdir(parents=True)
        for split in ("train", "test"):
            rows = [" ".join(rng.choice(WORDS, size=rng.integers(2, 7))) + f"\t{LABELS[t][i % len(LABELS[t])]}"
                    for i in range(num_rows)]
            (folder / f"task{t}" / f"{split}.tsv").write_text("text\tlabel\n" + "\n".join(rows) + "\n")


def test_command_matches_evaluate_and_reuses_its_cache(tiny_moe, tmp_path, monkeypatch):
    write_tasks(tmp_path / "tasks")
    settings = Settings(tasks=[f"task{t}" for t in range(NUM_EXPERTS)], methods=["ttmoe"], max_train=12, max_eval=8,
                        max_length=16, tasks_dir=str(tmp_path / "tasks"), glue_dir=str(tmp_path / "glue"))
    evaluated = evaluate.main(["--moe", str(tiny_moe), "--output_dir", str(tmp_path / "eval"),
                               "--tasks_dir", settings.data_dir("tasks"), "--glue_dir", settings.data_dir("glue"),
                               "--split_seed", str(settings.split_seed), "--max_length", str(settings.max_length),
                               "--max_per_task", str(settings.max_eval)])
    per_task = {r["task"]: r for r in evaluated["per_task"]}
    moe = TTLoRAMoEModel.from_pretrained(tiny_moe)
    stage = {"methods": {
        "ttmoe": {"router_accuracy": evaluated["router_accuracy"],
                  "per_task": {t: {"accuracy": r["moe_accuracy"]} for t, r in per_task.items()}},
        "ttmoe_oracle": {"per_task": {t: {"accuracy": r["oracle_accuracy"]} for t, r in per_task.items()}}},
        "router_dir": str(tiny_moe), "experts": {t: str(e.path) for t, e in zip(moe.tasks, moe.expert_sources)}}
    results = tmp_path / "results"
    write_json(results / "tiny" / "settings.json", {**settings.to_dict(), "tt_lr": 5e-3})  # a field of older runs
    write_json(results / "tiny" / "seed0" / "ttmoe.json", stage)
    argv = ["--name", "tiny", "--sizes", "2", "3", "8", "--orders", "2", "--router_layers", "0", "2"]

    result = scaling.main(argv, results_root=results, work_root=tmp_path / "work")
    check = result["library_check"]
    assert check["max_abs_diff"] < 1e-9 and check["router_accuracy_abs_diff"] < 1e-9
    assert 0 < evaluated["router_accuracy"] < 1  # misrouted rows exist, so the strict check means something
    assert result["sizes"] == [2, 3] and len(result["records"]) == 4
    assert [len(r["tasks"]) for r in result["records"]] == [2, 3, 2, 3]
    assert sum(map(sum, result["lookalike"]["confusion"])) == NUM_EXPERTS * settings.max_eval
    assert "| 3 | 2 |" in (results / "tiny" / "scaling.md").read_text()
    layers = result["router_layers"]  # the full pool routed after the embeddings and after the tiny base's 2 layers
    assert [r["layer"] for r in layers] == [0, 2] and all(r["size"] == NUM_EXPERTS for r in layers)
    from safetensors.numpy import load_file

    cache = load_file(tmp_path / "work" / "tiny" / scaling.CACHE_FILE)
    assert cache["test_features_layer2"].shape == cache["test_features"].shape
    assert not np.allclose(cache["test_features_layer2"], cache["test_features"])  # the state after layer 2
    for png in ("scaling.png", "lookalike.png"):
        assert (results / "tiny" / png).read_bytes()[:4] == b"\x89PNG"
    assert json.loads((results / "tiny" / "scaling.json").read_text())["orders"] == 2

    def no_model(*args, **kwargs):
        raise AssertionError("the rerun loaded the model instead of reading the cache")

    monkeypatch.setattr(TTLoRAMoEModel, "from_pretrained", no_model)
    again = scaling.main(argv, results_root=results, work_root=tmp_path / "work")
    assert again["library_check"] == check
    assert [r["moe_by_name"] for r in again["records"]] == [r["moe_by_name"] for r in result["records"]]
    with pytest.raises(SystemExit, match="seed1.*not found"):
        scaling.main([*argv, "--seed", "1"], results_root=results, work_root=tmp_path / "work")
