"""Issue 14, parts 3 and 4, from a finished run's TT-LoRA MoE: how routing holds up as the expert pool grows, and what
routing errors between look-alike tasks cost.

    python -m benchmarks.multitask.scaling --name all18                           # sizes 2 4 8 12 18, 5 task orders
    python -m benchmarks.multitask.scaling --name all18 --sizes 2 6 --orders 3 --threads 1

Everything is read from one lookup table, cached (`runs/multitask/<name>/scaling_cache.safetensors`): the router
features of the rows `train_router` trained on and of the rows `evaluate` scored, and the label probabilities of the
(row, expert) pairs the analysis reads. A pool of k experts is a fresh router (the library's `Router`, trained by
`train_router_on_features` with `train_router`'s defaults) on the k tasks' cached features; the MoE's answer on a row
is the chosen expert's entry of the table, which is what the routed forward computes (checked against the run's own
`evaluate` numbers with its saved router). Only the pairs some router chose, each row's own expert and the saved
router's second choice are computed, as mixed-expert batches: ~2-3 passes over the test rows, not one per expert.

Two scores: strict (`evaluate`'s rule: a row sent to another expert is wrong) and by label name (right when the chosen
expert's predicted label name is the row's gold label name: what `moe.decode` hands a user). Results go to
`benchmarks/results/multitask/<name>/`: `scaling.json`, `scaling.md`, `scaling.png`, `lookalike.png`.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import DataCollatorWithPadding

from hf_ttmoe import Router, TTLoRAMoEModel, load_tokenizer
from hf_ttmoe.commands.evaluate import EvalArguments, name_table, right_by_name
from hf_ttmoe.commands.train_router import RouterArguments, mixed_router_data
from hf_ttmoe.io import atomic_write
from hf_ttmoe.ttlora_moe import compute_router_features, train_router_on_features

from .run import SETTINGS_FILE, write_json
from .settings import RESULTS_ROOT, WORK_ROOT, Settings

CACHE_FILE = "scaling_cache.safetensors"
CACHE_META_FILE = "scaling_cache.json"
CACHE_VERSION = 3  # bump when what the cache holds changes
ROUTER_DEFAULTS = {f.name: f.default for f in dataclasses.fields(RouterArguments)}  # router_epochs, router_lr
# evaluate's batches, so rows are padded as it padded them (the run's router features were batched by 64 too)
BATCH_SIZE = next(f.default for f in dataclasses.fields(EvalArguments) if f.name == "batch_size")
TAUS = (0.5, 0.7, 0.9)  # top-2 fallback below this top-1 router probability
LOOKALIKE_SHARE = 0.01  # a confusion cell is listed from this share of its task's rows
METRICS = ("router_accuracy", "moe_strict", "moe_by_name", "oracle", "gap_strict", "gap_by_name", "router_train_s")


# ----- scoring: plain arrays in, plain arrays out -----


def picked(preds: np.ndarray, experts: np.ndarray) -> np.ndarray:
    """`preds[i, experts[i]]` per row; an error if one was never computed (-1: the table is filled sparsely)."""
    out = preds[np.arange(len(experts)), experts]
    if (out < 0).any():
        raise ValueError(f"{int((out < 0).sum())} (row, expert) predictions were needed but never computed")
    return out


def strict_correct(tasks: np.ndarray, labels: np.ndarray, chosen: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """Per row: the chosen expert is the row's own and predicts its label (`evaluate`'s rule). `tasks`, `labels`,
    `chosen`: `(N,)`; `preds`: `(N, E)`, every expert's predicted label id on every row."""
    return (chosen == tasks) & (picked(preds, chosen) == labels)


def by_name_correct(tasks: np.ndarray, labels: np.ndarray, chosen: np.ndarray, preds: np.ndarray,
                    names: np.ndarray) -> np.ndarray:
    """`evaluate`'s by-name rule (`right_by_name`) on the table's `(N, E)` predictions."""
    return right_by_name(names, tasks, labels, chosen, picked(preds, chosen))


def macro_accuracy(correct: np.ndarray, tasks: np.ndarray) -> float:
    """The mean over the tasks present of each task's share of right rows."""
    return float(np.mean([correct[tasks == t].mean() for t in np.unique(tasks)]))


def top2(router_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per row: the router's first and second expert and their softmax probabilities `(p1, p2)` over all experts."""
    logits = np.asarray(router_logits, dtype=np.float64)  # (N, E)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    first = logits.argmax(1)  # as the model's argmax: the first of equal logits
    second = np.where(np.arange(logits.shape[1]) == first[:, None], -np.inf, logits).argmax(1)
    rows = np.arange(len(logits))
    return first, second, probs[rows, first], probs[rows, second]


def policy_answers(router_logits: np.ndarray, probs: np.ndarray, preds: np.ndarray, names: np.ndarray,
                   tau: float = 0.0, same_space: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The label name id each row is answered with, and which rows ran a second expert.

    A row answers with its top-1 expert's prediction, unless its top-1 router probability is below `tau` or (with
    `same_space`) its top-2 experts have the same set of label names: then it runs both, weights their label
    probabilities by the router's top-2 probabilities renormalised, sums them over equal label names across the union
    of the two label spaces, and answers the name with the most. `tau=0` is plain top-1; `tau > 1`, always two.

    Args:
        router_logits: `(N, E)`.
        probs: `(N, E, C_max)` every expert's probabilities over its own labels (0 past them).
        preds: `(N, E)` every expert's predicted label id.
        names: `(E, C_max)` label name ids from `name_table`.
    """
    first, second, p1, p2 = top2(router_logits)
    rows = np.arange(len(first))
    answers = names[first, preds[rows, first]]
    both = p1 < tau
    if same_space:
        spaces = [frozenset(r[r >= 0].tolist()) for r in names]
        same = np.array([[a == b for b in spaces] for a in spaces])  # (E, E)
        both |= same[first, second]
    picked = rows[both]
    if len(picked):
        vocab = int(names.max()) + 1
        votes = np.zeros((len(picked), vocab + 1))  # (n, V + 1): names[e] = -1 past e's labels lands in the last
        w1 = p1[picked] / (p1[picked] + p2[picked])
        for experts, weight in ((first[picked], w1), (second[picked], 1 - w1)):
            np.add.at(votes, (np.arange(len(picked))[:, None], names[experts]),  # names[experts]: (n, C_max)
                      weight[:, None] * probs[picked, experts])
        answers[picked] = votes[:, :vocab].argmax(1)
    return answers, both


def pool_rows(tasks: np.ndarray, pool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows of the pool's tasks (a mask) and their task ids renumbered to positions in `pool` (0..k-1).

    >>> pool_rows(np.array([0, 3, 1, 3, 2]), np.array([3, 1]))[1].tolist()
    [0, 1, 0]
    """
    local = np.full(max(int(tasks.max()), int(pool.max())) + 1, -1)
    local[pool] = np.arange(len(pool))
    mask = local[tasks] >= 0
    return mask, local[tasks[mask]]


def scores(tasks: np.ndarray, labels: np.ndarray, chosen: np.ndarray, preds: np.ndarray, names: np.ndarray,
           task_names: list[str]) -> dict:
    """Routing, MoE (strict and by name) and oracle accuracy, macro over the tasks present, and per task."""
    rows = np.arange(len(tasks))
    correct = {"router_accuracy": chosen == tasks, "moe_strict": strict_correct(tasks, labels, chosen, preds),
               "moe_by_name": by_name_correct(tasks, labels, chosen, preds, names),
               "oracle": preds[rows, tasks] == labels}
    out = {k: macro_accuracy(v, tasks) for k, v in correct.items()}
    out["gap_strict"] = out["moe_strict"] - out["oracle"]
    out["gap_by_name"] = out["moe_by_name"] - out["oracle"]
    out["per_task"] = {task_names[t]: {"rows": int((tasks == t).sum()),
                                       **{k: float(v[tasks == t].mean()) for k, v in correct.items()}}
                       for t in np.unique(tasks)}
    return out


# ----- routers over part of the pool -----


def train_pool_router(features: torch.Tensor, task_ids: torch.Tensor, num_experts: int, router_config: dict,
                      seed: int) -> tuple[Router, float]:
    """A fresh router of the saved model's kind with `num_experts` outputs, trained on cached features with
    `train_router`'s defaults; returns it (eval mode) and its training seconds."""
    torch.manual_seed(seed)
    router = Router(features.shape[1], num_experts, router_config["router_type"],
                    hidden_size=router_config["router_hidden_size"], noisy_gating=router_config["noisy_gating"])
    holder = SimpleNamespace(router=router, config=SimpleNamespace(**router_config))
    t0 = time.perf_counter()
    train_router_on_features(holder, features, task_ids, epochs=ROUTER_DEFAULTS["router_epochs"],
                             lr=ROUTER_DEFAULTS["router_lr"], seed=seed)
    return router, time.perf_counter() - t0


def route_pools(table: dict[str, np.ndarray], meta: dict, sizes: list[int], orders: int) -> list[dict]:
    """For each task order (a permutation seeded by its number) and pool size k: a router over the order's first k
    tasks, trained on their cached train features; returns which test rows it routed where, and its training time."""
    train_features, test_features = torch.from_numpy(table["train_features"]), torch.from_numpy(table["test_features"])
    routes = []
    for order in range(orders):
        permutation = np.random.default_rng(order).permutation(len(meta["tasks"]))
        for k in sizes:
            pool = permutation[:k]
            train, train_ids = pool_rows(table["train_tasks"], pool)
            router, seconds = train_pool_router(train_features[torch.from_numpy(train)], torch.from_numpy(train_ids),
                                                k, meta["router"], seed=order)
            test, _ = pool_rows(table["test_tasks"], pool)
            with torch.no_grad():
                chosen = pool[router(test_features[torch.from_numpy(test)]).argmax(-1).numpy()]  # (n,) expert ids
            routes.append({"order": order, "size": k, "pool": pool, "rows": np.flatnonzero(test), "chosen": chosen,
                           "router_train_s": seconds})
    return routes


def score_routes(table: dict[str, np.ndarray], meta: dict, routes: list[dict]) -> list[dict]:
    names = name_table(meta["label_names"])[1]
    records = []
    for r in routes:
        rows = r["rows"]
        result = scores(table["test_tasks"][rows], table["test_labels"][rows], r["chosen"], table["test_preds"][rows],
                        names, meta["tasks"])
        records.append({"order": r["order"], "size": r["size"], "tasks": [meta["tasks"][t] for t in r["pool"]],
                        "router_train_s": r["router_train_s"], **({"layer": r["layer"]} if "layer" in r else {}),
                        **result})
    return records


def route_layers(lookup: LookupTable, layers: list[int]) -> list[dict]:
    """The full pool routed from deeper base layers: a router per layer (the saved router's kind, `train_router`'s
    defaults, seed 0) on features after that layer; returns the routes, scored like the pools."""
    table, meta = lookup.arrays, lookup.meta
    routes = []
    for layer in layers:
        train, test = lookup.layer_features(layer)
        pool = np.arange(len(meta["tasks"]))
        router, seconds = train_pool_router(torch.from_numpy(train), torch.from_numpy(table["train_tasks"]),
                                            len(pool), meta["router"], seed=0)
        with torch.no_grad():
            chosen = router(torch.from_numpy(test)).argmax(-1).numpy()
        routes.append({"order": 0, "size": len(pool), "pool": pool, "rows": np.arange(len(test)), "chosen": chosen,
                       "router_train_s": seconds, "layer": layer})
    return routes


def needed_pairs(table: dict[str, np.ndarray], routes: list[dict]) -> np.ndarray:
    """The (row, expert) outputs the analysis reads, `(P, 2)`: each row's own expert (oracle), the saved router's
    first and second choice (top-1, the policies), and every pool router's choice."""
    rows = np.arange(len(table["test_tasks"]))
    order = np.argsort(-table["test_router_logits"], axis=1, kind="stable")  # ties: the lower id first, as argmax
    pairs = [np.stack([rows, table["test_tasks"]], 1), np.stack([rows, order[:, 0]], 1),
             np.stack([rows, order[:, 1]], 1) if order.shape[1] > 1 else np.zeros((0, 2), dtype=np.int64),
             *[np.stack([r["rows"], r["chosen"]], 1) for r in routes]]
    return np.unique(np.concatenate(pairs).astype(np.int64), axis=0)


def summarize(records: list[dict], sizes: list[int]) -> dict:
    """Per size: mean and sample standard deviation over orders of every metric."""
    summary = {}
    for k in sizes:
        runs = [r for r in records if r["size"] == k]
        summary[str(k)] = {"orders": len(runs), **{m: {"mean": float(np.mean([r[m] for r in runs])),
                                                        "std": float(np.std([r[m] for r in runs],
                                                                            ddof=1 if len(runs) > 1 else 0))}
                                                    for m in METRICS}}
    return summary


# ----- the full pool with the run's saved router -----


def library_check(table: dict[str, np.ndarray], meta: dict, stage: dict) -> dict:
    """The lookup's strict MoE and oracle accuracy per task, with the saved router, against what `evaluate` wrote."""
    names = name_table(meta["label_names"])[1]
    chosen = table["test_router_logits"].argmax(1)
    ours = scores(table["test_tasks"], table["test_labels"], chosen, table["test_preds"], names, meta["tasks"])
    methods = stage["methods"]
    moe = {t: abs(ours["per_task"][t]["moe_strict"] - methods["ttmoe"]["per_task"][t]["accuracy"])
           for t in meta["tasks"]}
    oracle = {t: abs(ours["per_task"][t]["oracle"] - methods["ttmoe_oracle"]["per_task"][t]["accuracy"])
              for t in meta["tasks"]} if "ttmoe_oracle" in methods else {}
    return {"saved_router": ours, "moe_abs_diff": moe, "oracle_abs_diff": oracle,
            "max_abs_diff": max([*moe.values(), *oracle.values()]),
            "router_accuracy_abs_diff": abs(float((chosen == table["test_tasks"]).mean())
                                            - methods["ttmoe"]["router_accuracy"])}


def lookalike(table: dict[str, np.ndarray], meta: dict) -> dict:
    """The task x chosen-expert confusion of the saved router, and what each sizeable confusion cell costs."""
    tasks, labels, preds = table["test_tasks"], table["test_labels"], table["test_preds"]
    chosen = table["test_router_logits"].argmax(1)
    names = name_table(meta["label_names"])[1]
    num = len(meta["tasks"])
    confusion = np.zeros((num, num), dtype=np.int64)
    np.add.at(confusion, (tasks, chosen), 1)
    right = by_name_correct(tasks, labels, chosen, preds, names)
    own = preds[np.arange(len(tasks)), tasks] == labels
    cells = []
    for t, e in zip(*np.nonzero(confusion)):
        if t == e or confusion[t, e] < LOOKALIKE_SHARE * confusion[t].sum():
            continue
        sel = (tasks == t) & (chosen == e)
        cells.append({"task": meta["tasks"][t], "expert": meta["tasks"][e], "rows": int(sel.sum()),
                      "share": float(sel.sum() / confusion[t].sum()), "right_by_name": float(right[sel].mean()),
                      "own_expert_right": float(own[sel].mean()),
                      "rows_lost": int(own[sel].sum() - right[sel].sum()),
                      "same_label_names": set(meta["label_names"][t]) == set(meta["label_names"][e])})
    return {"confusion": confusion.tolist(), "cells": sorted(cells, key=lambda c: -c["rows"])}


def policies(table: dict[str, np.ndarray], meta: dict) -> list[dict]:
    """Macro accuracy by label name of top-1, top-2 fallbacks and the same-label-space merge, with the share of rows
    each runs through a second expert; the oracle (own expert) last, for reference."""
    tasks, names = table["test_tasks"], name_table(meta["label_names"])[1]
    gold = names[tasks, table["test_labels"]]
    chosen = [("top-1 (the library today)", 0.0, False),
              *[(f"top-2 when the top-1 probability < {tau}", tau, False) for tau in TAUS],
              ("top-2 when both share one label-name set", 0.0, True)]
    out = []
    for label, tau, same_space in chosen:
        answers, both = policy_answers(table["test_router_logits"], table["test_probs"], table["test_preds"], names,
                                       tau=tau, same_space=same_space)
        out.append({"policy": label, "tau": tau, "same_space": same_space,
                    "accuracy_by_name": macro_accuracy(answers == gold, tasks),
                    "second_expert_rows": float(both.mean())})
    oracle = table["test_preds"][np.arange(len(tasks)), tasks] == table["test_labels"]
    out.append({"policy": "oracle: the row's own expert", "tau": None, "same_space": False,
                "accuracy_by_name": macro_accuracy(oracle, tasks), "second_expert_rows": 0.0})
    return out


# ----- the lookup table: computed once per run, cached -----


@torch.no_grad()
def pair_outputs(moe: TTLoRAMoEModel, data, pairs: np.ndarray, collate) -> tuple[torch.Tensor, torch.Tensor]:
    """Expert `pairs[i, 1]` on test row `pairs[i, 0]` of `data` (tokenized rows), for every pair: probabilities over
    the expert's own labels `(P, C_max)` (0 past them) and predictions `(P,)`. Pairs are batched by row length as
    mixed-expert batches, one forward each: what the routed forward computes for a row sent to that expert (the
    logits are -inf past an expert's labels, so a row's softmax is its expert's distribution)."""
    moe.eval()
    lengths = np.array([len(data[int(i)]["input_ids"]) for i in pairs[:, 0]])
    order = np.argsort(lengths, kind="stable")
    probs = torch.zeros(len(pairs), max(map(len, moe.label_names)))
    preds = torch.full((len(pairs),), -1, dtype=torch.long)
    for start in tqdm(range(0, len(order), BATCH_SIZE), desc=f"{len(pairs)} (row, expert) outputs"):
        idx = order[start:start + BATCH_SIZE]
        batch = collate([{k: v for k, v in data[int(pairs[i, 0])].items() if k not in ("task_ids", "labels")}
                         for i in idx])
        logits = moe(**batch, expert_index=pairs[idx, 1].tolist()).logits.float()  # (B, C_max)
        probs[idx], preds[idx] = logits.softmax(-1), logits.argmax(-1)
    return probs, preds


def base_table(moe: TTLoRAMoEModel, rows) -> dict[str, torch.Tensor]:
    """Router features of the train and test rows (`rows(split)`: as `train_router` and `evaluate` load them), the
    test rows' tasks and labels, the saved router's logits; and empty expert outputs (`test_preds` -1 until
    computed)."""
    tokenizer = load_tokenizer(moe.config)
    table = {}
    for split in ("train", "test"):
        data = rows(split)
        loader = DataLoader(data, batch_size=BATCH_SIZE, collate_fn=DataCollatorWithPadding(tokenizer))
        table[f"{split}_features"], table[f"{split}_tasks"] = compute_router_features(
            moe, loader, desc=f"router features, {split}")
        if split == "test":
            table["test_labels"] = torch.tensor(data["labels"])
    with torch.no_grad():
        table["test_router_logits"] = moe.router.eval()(table["test_features"])  # (N, E)
    n, e = table["test_router_logits"].shape
    table["test_probs"] = torch.zeros(n, e, max(map(len, moe.label_names)))
    table["test_preds"] = torch.full((n, e), -1, dtype=torch.long)
    return table


class LookupTable:
    """The run's lookup table, cached in `folder` (numpy arrays in `.arrays`, tasks / label names / router kind in
    `.meta`), keyed by the run, its settings, seed and experts. Its base part is computed on first use; expert outputs
    are added as the analysis asks for them (`fill`), and kept for the next run."""

    def __init__(self, folder: Path, settings: Settings, stage: dict, seed: int):
        self.folder, self.settings, self.stage = Path(folder), settings, stage
        self.path, self.meta_path = self.folder / CACHE_FILE, self.folder / CACHE_META_FILE
        self._moe, self._rows = None, {}
        key = hashlib.sha256(json.dumps([CACHE_VERSION, settings.to_dict(), seed, stage["router_dir"],
                                         stage["experts"]], sort_keys=True).encode()).hexdigest()[:16]
        if self.path.exists() and self.meta_path.exists() and json.loads(self.meta_path.read_text())["key"] == key:
            print(f"lookup table: cached, {self.path}", flush=True)
            self.arrays = {k: v.numpy() for k, v in load_file(self.path).items()}
            self.meta = json.loads(self.meta_path.read_text())
            return
        print(f"lookup table: router features of the rows -> {self.path}", flush=True)
        moe = self.moe()
        c = moe.config
        self.arrays = {k: v.numpy() for k, v in base_table(moe, self.rows).items()}
        self.meta = {"key": key, "seed": seed, "tasks": moe.tasks, "label_names": moe.label_names,
                     "router_dir": stage["router_dir"],
                     "router": {"router_type": c.router_type, "router_hidden_size": c.router_hidden_size,
                                "noisy_gating": c.noisy_gating, "router_aux_loss_coef": c.router_aux_loss_coef,
                                "router_layer": c.router_layer}}
        self.save()

    def moe(self) -> TTLoRAMoEModel:
        if self._moe is None:
            self._moe = TTLoRAMoEModel.from_pretrained(self.stage["router_dir"])
            if self._moe.tasks != list(self.stage["experts"]):
                raise SystemExit(f"the saved MoE's experts {self._moe.tasks} are not the run's "
                                 f"{list(self.stage['experts'])}")
        return self._moe

    def rows(self, split: str):
        """The split's rows, tokenized, in the order `train_router` and `evaluate` load them (once per process)."""
        if split not in self._rows:
            moe, s = self.moe(), self.settings
            cap = s.max_train if split == "train" else s.max_eval
            self._rows[split] = mixed_router_data(moe, moe.tasks, split, cap, s.max_length, s.data_dir("glue"),
                                                  s.split_seed, load_tokenizer(moe.config), s.data_dir("tasks"))
        return self._rows[split]

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, lambda p: save_file({k: torch.from_numpy(np.ascontiguousarray(v))
                                                     for k, v in self.arrays.items()}, p))
        write_json(self.meta_path, self.meta)

    def layer_features(self, layer: int) -> tuple[np.ndarray, np.ndarray]:
        """Router features of the train and test rows after base layer `layer` (the saved router's own layer is the
        table's), computed once with the experts composed under a router at that layer."""
        if layer == self.meta["router"]["router_layer"]:
            return self.arrays["train_features"], self.arrays["test_features"]
        keys = (f"train_features_layer{layer}", f"test_features_layer{layer}")
        if keys[0] not in self.arrays:
            print(f"lookup table: router features after layer {layer}", flush=True)
            moe = TTLoRAMoEModel.from_experts(list(self.stage["experts"].values()), router_layer=layer)
            s, tokenizer = self.settings, load_tokenizer(moe.config)
            for key, split, cap in zip(keys, ("train", "test"), (s.max_train, s.max_eval)):
                data = mixed_router_data(moe, moe.tasks, split, cap, s.max_length, s.data_dir("glue"), s.split_seed,
                                         tokenizer, s.data_dir("tasks"))
                loader = DataLoader(data, batch_size=BATCH_SIZE, collate_fn=DataCollatorWithPadding(tokenizer))
                features, tasks = compute_router_features(moe, loader, desc=f"router features, {split}, layer {layer}")
                if not np.array_equal(tasks.numpy(), self.arrays[f"{split}_tasks"]):
                    raise RuntimeError(f"the {split} rows came in another order than when the table was made")
                self.arrays[key] = features.numpy()
            self.save()
        return self.arrays[keys[0]], self.arrays[keys[1]]

    def fill(self, pairs: np.ndarray) -> None:
        """Compute the expert outputs of `pairs` ((row, expert), `(P, 2)`) the table lacks, and save them."""
        missing = pairs[self.arrays["test_preds"][pairs[:, 0], pairs[:, 1]] < 0]
        print(f"lookup table: {len(pairs)} (row, expert) outputs needed, {len(missing)} to compute "
              f"(of {self.arrays['test_preds'].size} for every expert on every row)", flush=True)
        if not len(missing):
            return
        moe, data = self.moe(), self.rows("test")
        if not np.array_equal(np.array(data["task_ids"]), self.arrays["test_tasks"]):
            raise RuntimeError("the test rows came in another order than when the table was made")
        probs, preds = pair_outputs(moe, data, missing, DataCollatorWithPadding(load_tokenizer(moe.config)))
        self.arrays["test_probs"][missing[:, 0], missing[:, 1]] = probs.numpy()
        self.arrays["test_preds"][missing[:, 0], missing[:, 1]] = preds.numpy()
        self.save()


# ----- report -----


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def markdown(result: dict) -> str:
    s, check = result["settings"], result["library_check"]
    lines = [f"Run `{result['name']}`, seed {result['seed']}: {len(result['tasks'])} TT-LoRA experts, "
             f"{s['max_train']} router-training and {s['max_eval']} test rows per task. Accuracies in %, macro over "
             "the pool's tasks; mean ± sample std over random task orders (the pool is an order's first k tasks; each "
             f"router trained {result['router_training']['epochs']} epochs at lr {result['router_training']['lr']:g} "
             "on cached features, seeded by its order).", "",
             "| size | orders | router acc. | MoE strict | MoE by name | oracle | gap strict | gap by name "
             "| router train s |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for k, v in result["summary"].items():
        cells = [f"{pct(v[m]['mean'])} ± {pct(v[m]['std'])}" for m in METRICS[:-1]]
        lines.append(f"| {k} | {v['orders']} | " + " | ".join(cells)
                     + f" | {v['router_train_s']['mean']:.2f} ± {v['router_train_s']['std']:.2f} |")
    if result.get("router_layers"):
        lines += ["", "The full pool routed from deeper base layers (one router per layer, same kind and training, "
                  "seed 0). Routing after layer k runs the base's first k layers again once the experts are chosen: "
                  "routed / right-expert-by-hand inference 0.967 / 1.537 / 1.995 at layers 0 / 3 / 6 "
                  "(benchmarks/README.md, end-to-end routed inference).", "",
                  "| router layer | router acc. | MoE strict | MoE by name | oracle | gap strict | gap by name "
                  "| router train s |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in result["router_layers"]:
            lines.append(f"| {r['layer']} | " + " | ".join(pct(r[m]) for m in METRICS[:-1])
                         + f" | {r['router_train_s']:.2f} |")
    lines += ["", "Strict counts a row sent to another expert wrong (`evaluate`'s rule); by name counts it right when "
              "that expert's predicted label name is the row's gold name (what `moe.decode` returns); the gaps are "
              "to the oracle, which gives every row its own expert.", "",
              f"Check against the library: with the run's saved {len(result['tasks'])}-expert router the lookup's "
              f"per-task strict MoE and oracle accuracies differ from `evaluate`'s by at most "
              f"{check['max_abs_diff']:.4f} (router accuracy by {check['router_accuracy_abs_diff']:.4f}).", "",
              f"Look-alike tasks (saved router, full pool): confusion cells holding ≥ {100 * LOOKALIKE_SHARE:g}% of "
              "a task's test rows. Strict scoring loses every such row; *right by name* is the share the other "
              "expert still answers right, *own right* the share the row's own expert gets right, and *rows lost* "
              "their difference in rows: what the confusion costs.", "",
              "| task | sent to | rows | share of task | same label names | right by name | own right | rows lost |",
              "|---|---|---:|---:|:-:|---:|---:|---:|"]
    for c in result["lookalike"]["cells"]:
        lines.append(f"| {c['task']} | {c['expert']} | {c['rows']} | {pct(c['share'])} | "
                     f"{'yes' if c['same_label_names'] else 'no'} | {pct(c['right_by_name'])} | "
                     f"{pct(c['own_expert_right'])} | {c['rows_lost']} |")
    top1 = result["policies"][0]["accuracy_by_name"]
    lines += ["", "Routing policies (saved router, full pool), scored by label name, macro over tasks. A top-2 row "
              "runs its two best experts and weights their label probabilities by the router's renormalised top-2 "
              "probabilities, summed over equal label names; *second-expert rows* is the share of rows that pay "
              "that extra expert pass.", "",
              "| policy | accuracy by name | vs top-1 | second-expert rows |", "|---|---:|---:|---:|"]
    for p in result["policies"]:
        lines.append(f"| {p['policy']} | {pct(p['accuracy_by_name'])} | {100 * (p['accuracy_by_name'] - top1):+.2f} "
                     f"| {pct(p['second_expert_rows'])} |")
    return "\n".join(lines) + "\n"


def plots(result: dict, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = result["summary"]
    sizes = [int(k) for k in summary]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    shift = 0.01 * (max(sizes) - min(sizes))  # by name is drawn a little to the right: it can equal strict
    for ax, metrics in ((left, [("router_accuracy", "router accuracy", 0, "-")]),
                        (right, [("gap_strict", "MoE − oracle, strict", 0, "-"),
                                 ("gap_by_name", "MoE − oracle, by name", shift, "--")])):
        for m, label, dx, style in metrics:
            ax.errorbar([k + dx for k in sizes], [100 * summary[str(k)][m]["mean"] for k in sizes],
                        yerr=[100 * summary[str(k)][m]["std"] for k in sizes], marker="o", capsize=4, label=label,
                        linestyle=style)
        ax.set_xticks(sizes)
        ax.set_xlabel("experts in the pool")
        ax.legend(fontsize=8)
    left.set_ylabel("accuracy (%), macro over tasks")
    right.set_ylabel("points")
    right.axhline(0, color="grey", lw=0.8)
    fig.suptitle(f"TT-LoRA MoE as the pool grows ({result['name']}; mean ± std over {result['orders']} task orders)",
                 fontsize=10)
    fig.tight_layout()
    written = [folder / "scaling.png"]
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)

    conf, tasks = np.array(result["lookalike"]["confusion"]), result["tasks"]
    fig, ax = plt.subplots(figsize=(0.55 * len(tasks) + 3, 0.5 * len(tasks) + 2.2))
    ax.imshow(conf / conf.sum(1, keepdims=True).clip(min=1), cmap="Blues", vmin=0, vmax=1)
    for i in range(len(tasks)):
        for j in range(len(tasks)):
            if conf[i, j]:
                ax.text(j, i, str(conf[i, j]), ha="center", va="center", fontsize=6)
    ax.set_xticks(range(len(tasks)), tasks, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(tasks)), tasks, fontsize=8)
    ax.set_xlabel("expert chosen by the saved router")
    ax.set_ylabel("true task")
    ax.set_title("Routing confusion, full pool (row-normalised colour, counts in cells)", fontsize=9)
    fig.tight_layout()
    written.append(folder / "lookalike.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)
    return written


# ----- command -----


def read_run(results: Path, seed: int) -> tuple[Settings, dict]:
    """A finished run's settings and its TT-LoRA MoE stage. Settings fields this version lacks (a run made by an
    older one, e.g. `tt_lr` before the learning-rate grid) are dropped: only the rows' caps and data are read."""
    settings_path, stage_path = results / SETTINGS_FILE, results / f"seed{seed}" / "ttmoe.json"
    for path in (settings_path, stage_path):
        if not path.exists():
            raise SystemExit(f"{path} not found: this analysis reads a finished run's TT-LoRA MoE stage (python -m "
                             f"benchmarks.multitask --name {results.name} --methods ttmoe ..., seed {seed}).")
    saved, known = json.loads(settings_path.read_text()), {f.name for f in dataclasses.fields(Settings)}
    return Settings(**{k: v for k, v in saved.items() if k in known}), json.loads(stage_path.read_text())


def pool_sizes(sizes: list[int], num: int) -> list[int]:
    kept = sorted({k for k in sizes if 2 <= k <= num})
    if dropped := sorted(set(sizes) - set(kept)):
        print(f"sizes {dropped} dropped: the pool has {num} experts, a router needs at least 2", flush=True)
    if not kept:
        raise SystemExit(f"no pool size left of {sizes} (valid: 2..{num})")
    return kept


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.multitask.scaling", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="a finished run: results/multitask/<name>/seed<seed>/ttmoe.json")
    parser.add_argument("--sizes", nargs="+", type=int, default=[2, 4, 8, 12, 18], help="pool sizes (experts)")
    parser.add_argument("--orders", type=int, default=5, help="random task orders (seeds 0..orders-1)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0, help="which of the run's seeds")
    parser.add_argument("--router_layers", nargs="*", type=int, default=[0, 3, 6],
                        help="the full pool also routed from the base's state after these layers (0 = embeddings)")
    args = parser.parse_args(argv)
    if args.orders < 1:
        parser.error(f"--orders {args.orders} must be at least 1")
    return args


def main(argv: list[str] | None = None, results_root: Path = RESULTS_ROOT, work_root: Path = WORK_ROOT) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    results = Path(results_root) / args.name
    settings, stage = read_run(results, args.seed)
    lookup = LookupTable(Path(work_root) / args.name, settings, stage, args.seed)
    table, meta = lookup.arrays, lookup.meta
    sizes = pool_sizes(args.sizes, len(meta["tasks"]))
    routes = route_pools(table, meta, sizes, args.orders)
    layer_routes = route_layers(lookup, args.router_layers)
    lookup.fill(needed_pairs(table, routes + layer_routes))
    records = score_routes(table, meta, routes)
    layers = score_routes(table, meta, layer_routes)
    result = {"name": args.name, "seed": args.seed, "settings": settings.to_dict(), "tasks": meta["tasks"],
              "label_names": meta["label_names"], "sizes": sizes, "orders": args.orders, "router": meta["router"],
              "router_training": {"epochs": ROUTER_DEFAULTS["router_epochs"], "lr": ROUTER_DEFAULTS["router_lr"]},
              "summary": summarize(records, sizes), "records": records, "router_layers": layers,
              "library_check": library_check(table, meta, stage), "lookalike": lookalike(table, meta),
              "policies": policies(table, meta)}
    if result["library_check"]["max_abs_diff"] > 0.005:
        print(f"WARNING: the lookup differs from evaluate's per-task accuracy by up to "
              f"{result['library_check']['max_abs_diff']:.4f} (padding or thread-count numerics?)", flush=True)
    write_json(results / "scaling.json", result)
    table_md = markdown(result)
    (results / "scaling.md").write_text(table_md)
    written = plots(result, results)
    print(table_md)
    print(f"wrote {results / 'scaling.json'}, {results / 'scaling.md'}, " + ", ".join(p.name for p in written),
          flush=True)
    return result


if __name__ == "__main__":
    main()
