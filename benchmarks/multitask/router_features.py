"""Which pooled features should the router see? Router accuracy of several poolings of the embeddings (layer 0).

    python -m benchmarks.multitask.router_features --tasks paper --name paper6
    python -m benchmarks.multitask.router_features --tasks all --name all18

Every task's rows under the multi-task benchmark's default caps and split seed (1,000 training rows, 250 test rows
per task, max length 128). The base's embedding layer output (what `router_layer=0` routes on) is pooled several
ways, and a router (linear, or the 2-layer MLP) is trained on the training rows' features with `train_router`'s
settings (AdamW, lr 1e-2, 30 epochs, batch 256; no noise: the clean logits decide at inference) and scored on the test
rows: the share of rows sent to their own task's expert. Only the router is compared (no expert runs), so this takes
a minute. Poolings: `mean` (one mean over the input, the library's pooling until stop 22), `segments` (each segment of
a pair by its `token_type_ids`, side by side: the library's default now), and three richer ones the library does not
offer, to see what is left: `mean+max`, `segments+lengths` (log token counts of both segments),
`segments+diff+prod` (|A - B| and A * B beside A and B, as sentence-pair encoders use).

Then two upper references for a router on the same layer 0, neither offered by the library (stop 35): more
router-training rows per task (`--train_rows`, the segment-pooled linear router again; routing needs only the inputs
and their task, no labels, so a user may have more of them than of labelled rows), and a learned attention pooling
(`AttentionRouter`: per segment, `heads` learned queries weigh the tokens, their weighted means side by side feed a
linear router; trained on the token embeddings, not on cached means, 4 epochs: seed 0's validation rows of the
18-task pool peaked there).
Then, with `--layers` (stop 39), the segment-pooled linear router on the hidden state after each base layer k (what
`router_layer=k` routes on; the paper's router reads the base model's output, the last layer), on raw features and on
features standardised with the training rows' mean and std, to see whether a deeper representation carries the task
signal the embeddings lack.
Then, with `--label_groups` (stop 41), what a routing error costs by label name, router only: the tasks fall into
groups with the same label names (MNLI, CB and SICK answer contradiction / entailment / neutral; SST-2, CR, MPQA and
Rotten Tomatoes negative / positive), and a row routed inside its group can still get its label right, a row routed
to another group cannot ("answerable": the row's gold label name is among the chosen expert's names, what the MoE
scored by label name needs first). Two label-aware rules are scored beside top-1: deciding group first (the group
with the most router probability, then its most probable expert), and training the router with the group's
cross-entropy added to the task's (`--group_weights`).
Writes `benchmarks/results/multitask/router_features_<name>.{json,md}`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from functools import partial
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer

from hf_ttmoe.adapter import resolve_base_model
from hf_ttmoe.ttlora_moe.model import masked_mean

from .rows import load_capped
from .settings import ALL_TASKS, PAPER_TASKS, Settings

RESULTS = Path(__file__).resolve().parents[1] / "results" / "multitask"
POOLINGS = ("mean", "segments", "mean+max", "segments+lengths", "segments+diff+prod")


@torch.no_grad()
def embedding_features(model, tokenizer, rows, max_length: int, batch_size: int = 128) -> dict[str, torch.Tensor]:
    """Per row: the mean of each segment (A, B), the overall mean and max, the segments' token counts."""
    out = []
    pair = "text_pair" in rows.column_names
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        enc = tokenizer(chunk["text"], chunk["text_pair"] if pair else None, truncation=True, max_length=max_length,
                        padding=True, return_tensors="pt")
        types = enc.get("token_type_ids", torch.zeros_like(enc["input_ids"]))
        hidden = model.embeddings(input_ids=enc["input_ids"], token_type_ids=types)
        mask = enc["attention_mask"].float()
        second = mask * (types == 1).float()
        out.append({"a": masked_mean(hidden, mask - second), "b": masked_mean(hidden, second),
                    "mean": masked_mean(hidden, mask), "max": hidden.masked_fill(mask[..., None] == 0, -1e4).amax(1),
                    "lengths": torch.stack([(mask - second).sum(1), second.sum(1)], -1)})
    return {k: torch.cat([o[k] for o in out]) for k in out[0]}


@torch.no_grad()
def layer_features(model, tokenizer, rows, max_length: int, layers: list[int],
                   batch_size: int = 128) -> dict[int, torch.Tensor]:
    """Per row and base layer k of `layers` (0 = the embeddings): each segment's mean of the hidden state after layer
    k, side by side, `(N, 2H)` (the library's `pooling="segments"` at `router_layer=k`)."""
    out = {k: [] for k in layers}
    pair = "text_pair" in rows.column_names
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        enc = tokenizer(chunk["text"], chunk["text_pair"] if pair else None, truncation=True, max_length=max_length,
                        padding=True, return_tensors="pt")
        hidden = model(**enc, output_hidden_states=True).hidden_states  # L + 1 of (B, T, H)
        mask = enc["attention_mask"].float()
        second = mask * (enc.get("token_type_ids", torch.zeros_like(enc["input_ids"])) == 1).float()
        for k in layers:
            out[k].append(torch.cat([masked_mean(hidden[k], mask - second), masked_mean(hidden[k], second)], -1))
    return {k: torch.cat(v) for k, v in out.items()}


def standardised(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """`x` with each feature centred and scaled by `reference`'s (the training rows') mean and std."""
    return (x - reference.mean(0)) / (reference.std(0) + 1e-6)


def pooled(f: dict[str, torch.Tensor], pooling: str) -> torch.Tensor:
    segments = [f["a"], f["b"]]
    return torch.cat({
        "mean": [f["mean"]],
        "segments": segments,
        "mean+max": [f["mean"], f["max"]],
        "segments+lengths": [*segments, torch.log1p(f["lengths"])],
        "segments+diff+prod": [*segments, (f["a"] - f["b"]).abs(), f["a"] * f["b"]],
    }[pooling], -1)


class AttentionRouter(torch.nn.Module):
    """Learned attention pooling of frozen token features, then a linear router: in each segment (`token_type_ids`
    0 and 1) every one of `heads` queries scores the tokens, and the softmax-weighted mean of the segment's tokens
    per head goes side by side into one linear layer. A segment without tokens pools to zeros."""

    def __init__(self, hidden: int, num_tasks: int, heads: int = 4):
        super().__init__()
        self.score = torch.nn.Linear(hidden, heads)
        self.out = torch.nn.Linear(2 * heads * hidden, num_tasks)

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        """`(B, T, H)` tokens, `(B, T)` mask and token types -> `(B, 2 * heads * H)`."""
        scores, pooled = self.score(hidden), []
        for segment in (0, 1):
            inside = (mask > 0) & (types == segment)
            weights = scores.masked_fill(~inside[..., None], float("-inf")).softmax(1).nan_to_num(0.0)
            pooled.append(torch.einsum("bth,btd->bhd", weights, hidden).flatten(1))
        return torch.cat(pooled, -1)

    def forward(self, hidden, mask, types):
        return self.out(self.pool(hidden, mask, types))


def token_rows(tokenizer, rows, max_length: int) -> list[tuple[list[int], list[int]]]:
    pair = "text_pair" in rows.column_names
    enc = tokenizer(list(rows["text"]), list(rows["text_pair"]) if pair else None, truncation=True,
                    max_length=max_length)
    types = enc.get("token_type_ids") or [[0] * len(ids) for ids in enc["input_ids"]]
    return list(zip(enc["input_ids"], types))


def padded(chunk: list[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token rows -> `input_ids`, `token_type_ids`, `attention_mask`, right-padded to the longest."""
    ids = torch.zeros(len(chunk), max(len(r[0]) for r in chunk), dtype=torch.long)
    types, mask = torch.zeros_like(ids), torch.zeros_like(ids)
    for i, (row_ids, row_types) in enumerate(chunk):
        ids[i, : len(row_ids)], types[i, : len(row_ids)] = torch.tensor(row_ids), torch.tensor(row_types)
        mask[i, : len(row_ids)] = 1
    return ids, types, mask


def train_and_score_attention(model, train: list, y, test: list, num_tasks: int, epochs: int = 4, lr: float = 2e-3,
                              seed: int = 0, batch_size: int = 256) -> torch.Tensor:
    """Test predictions of an `AttentionRouter` on the base's embedding-layer output (frozen), AdamW, weight decay
    0.01."""
    torch.manual_seed(seed)
    net = AttentionRouter(model.config.hidden_size, num_tasks)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)

    def logits(chunk):
        ids, types, mask = padded(chunk)
        with torch.no_grad():
            hidden = model.embeddings(input_ids=ids, token_type_ids=types)
        return net(hidden, mask, types)

    for _ in range(epochs):
        order = torch.randperm(len(train), generator=g).tolist()
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            loss = torch.nn.functional.cross_entropy(logits([train[i] for i in idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return torch.cat([logits(test[s : s + 512]).argmax(-1) for s in range(0, len(test), 512)])


def fit_router(x, y, num_tasks: int, kind: str, epochs: int = 30, lr: float = 1e-2, seed: int = 0,
               groups: torch.Tensor | None = None, group_weight: float = 0.0) -> torch.nn.Module:
    """A router trained as `train_router` does (noise off). With `group_weight`, the cross-entropy of each row's
    label group (`groups`: the group id of each task; a group's probability is the sum of its tasks') is added."""
    torch.manual_seed(seed)
    net = (torch.nn.Linear(x.shape[1], num_tasks) if kind == "linear" else
           torch.nn.Sequential(torch.nn.Linear(x.shape[1], 256), torch.nn.GELU(), torch.nn.Linear(256, num_tasks)))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    member = torch.nn.functional.one_hot(groups).float() if group_weight else None  # (E, groups)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for start in range(0, len(order), 256):
            idx = order[start : start + 256]
            logits = net(x[idx])
            loss = torch.nn.functional.cross_entropy(logits, y[idx])
            if group_weight:
                in_group = logits.softmax(-1) @ member  # (B, groups)
                loss = loss + group_weight * torch.nn.functional.nll_loss(in_group.clamp_min(1e-9).log(),
                                                                          groups[y[idx]])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net


def train_and_score(x, y, x_test, y_test, num_tasks: int, kind: str, epochs: int = 30, lr: float = 1e-2,
                    seed: int = 0) -> torch.Tensor:
    """Test predictions of a router trained as `train_router` does (noise off)."""
    net = fit_router(x, y, num_tasks, kind, epochs, lr, seed)
    with torch.no_grad():
        return net(x_test).argmax(-1)


def label_groups(names: list[list[str]]) -> torch.Tensor:
    """The group id of each task, tasks with the same set of label names in one group, numbered in order of first
    appearance."""
    ids = {}
    return torch.tensor([ids.setdefault(frozenset(n), len(ids)) for n in names])


def group_first(probs: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """`(N, E)` router probabilities -> per row, the most probable expert of the group with the most probability."""
    member = torch.nn.functional.one_hot(groups).float()  # (E, G)
    best = (probs @ member).argmax(-1)  # (N,)
    return (probs * member.T[best]).argmax(-1)


def answerable(choice: torch.Tensor, gold: list[str], names: list[list[str]], y: torch.Tensor) -> tuple[float, float]:
    """The share of rows (%) whose gold label name is among the chosen expert's label names: over all rows, and
    averaged over the tasks (`y`, each row's task), as the benchmark averages accuracy."""
    ok = torch.tensor([g in names[c] for g, c in zip(gold, choice.tolist())]).float()
    per_task = [ok[y == t].mean().item() for t in range(len(names)) if (y == t).any()]
    return 100 * ok.mean().item(), 100 * sum(per_task) / len(per_task)


def summary(preds: list[torch.Tensor], y: torch.Tensor, tasks: list[str]) -> dict:
    """Accuracy (mean ± sample std over the seeds' predictions) and each task's share routed right (mean)."""
    acc = torch.tensor([(p == y).float().mean().item() * 100 for p in preds])
    per_task = [sum((p[y == i] == i).float().mean().item() * 100 for p in preds) / len(preds)
                for i in range(len(tasks))]
    return {"accuracy": acc.mean().item(), "std": acc.std().item() if len(preds) > 1 else 0.0,
            "per_task": dict(zip(tasks, per_task))}


def joined(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Per-task feature dicts (`embedding_features`) -> one dict over all their rows, in task order."""
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def labelled(parts: list) -> torch.Tensor:
    """Task ids of rows grouped by task, `parts` one sized group per task."""
    return torch.cat([torch.full((len(p),), i) for i, p in enumerate(parts)])


def label_group_rows(x, y, x_test, y_test, names: list[list[str]], groups: torch.Tensor, gold: list[str],
                     seeds: list[int], weights: list[float]) -> list[dict]:
    """Per router training (the task's loss, then with each weight of the group's loss) and decision (top-1, group
    first): router accuracy, the answerable share of rows (over rows, averaged over tasks) and the share of decisions
    unlike the plain router's top-1, means over the seeds (the std is the accuracy's). `groups` is
    `label_groups(names)`."""
    out, plain = [], {}
    for weight in [0.0, *weights]:
        per = {"top-1": [], "group first": []}
        for seed in seeds:
            net = fit_router(x, y, len(names), "linear", seed=seed, groups=groups, group_weight=weight)
            with torch.no_grad():
                probs = net(x_test).softmax(-1)
            plain.setdefault(seed, probs.argmax(-1))
            for decision, choice in (("top-1", probs.argmax(-1)), ("group first", group_first(probs, groups))):
                per[decision].append(((choice == y_test).float().mean().item() * 100,
                                      *answerable(choice, gold, names, y_test),
                                      (choice != plain[seed]).float().mean().item() * 100))
        for decision, values in per.items():
            v = torch.tensor(values)
            out.append({"training": "task loss" if not weight else f"task + {weight:g} x group loss",
                        "group_weight": weight, "decision": decision, "accuracy": v[:, 0].mean().item(),
                        "std": v[:, 0].std().item() if len(seeds) > 1 else 0.0,
                        "answerable_rows": v[:, 1].mean().item(), "answerable_tasks": v[:, 2].mean().item(),
                        "changed": v[:, 3].mean().item()})
            print(f"  {out[-1]['training']:24s} {decision:12s} router {out[-1]['accuracy']:.2f} answerable "
                  f"{out[-1]['answerable_rows']:.2f} / {out[-1]['answerable_tasks']:.2f}", flush=True)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True)
    parser.add_argument("--tasks", nargs="+", default=["paper"], help="'paper', 'all' or task names")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="router initialisation seeds")
    parser.add_argument("--train_rows", nargs="*", type=int, default=[],
                        help="router-training rows per task for the upper references (segments linear and the "
                             "attention router at each); none: the pooling table only")
    parser.add_argument("--layers", nargs="*", type=int, default=[],
                        help="base layers whose hidden state the segment-pooled linear router is also trained on "
                             "(0 = the embeddings); none: no layer table")
    parser.add_argument("--label_groups", action="store_true",
                        help="also score routing by label name: top-1 against group-first decisions and a router "
                             "trained with the label group's loss added")
    parser.add_argument("--group_weights", nargs="+", type=float, default=[1.0, 3.0],
                        help="weights of the label group's loss for --label_groups (0, the plain router, always runs)")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    tasks = {"paper": list(PAPER_TASKS), "all": list(ALL_TASKS)}.get(" ".join(args.tasks), args.tasks)
    settings = Settings(tasks=tasks)
    if missing := settings.missing_data():
        raise SystemExit(f"skipped: the task data is not on this machine: {missing}")
    if bad := [n for n in args.train_rows if n < 1]:
        raise SystemExit(f"--train_rows {bad}: router-training rows per task must be positive")
    path, _ = resolve_base_model(settings.base_model)
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    if bad := [k for k in args.layers if not 0 <= k <= model.config.num_hidden_layers]:
        raise SystemExit(f"--layers {bad}: the base's layers are 0 (the embeddings) to "
                         f"{model.config.num_hidden_layers}")
    start = time.perf_counter()
    feats = {"train": [], "test": []}
    deeper = {"train": [], "test": []}  # per task, {layer: (N, 2H)}
    test_tokens, label_names, gold = [], [], []
    for task in tasks:
        splits = load_capped(task, settings)
        label_names.append(splits["train"].features["label"].names)
        gold += [label_names[-1][i] for i in splits["test"]["label"]]
        for split in feats:
            feats[split].append(embedding_features(model, tokenizer, splits[split], settings.max_length))
            if args.layers:
                deeper[split].append(layer_features(model, tokenizer, splits[split], settings.max_length, args.layers))
        test_tokens.append(token_rows(tokenizer, splits["test"], settings.max_length))
        print(f"  features of {task}: {time.perf_counter() - start:.0f} s", flush=True)
    data = {split: (joined(parts), labelled([p["mean"] for p in parts])) for split, parts in feats.items()}
    (f_train, y_train), (f_test, y_test) = data["train"], data["test"]
    rows = []
    for pooling in POOLINGS:
        for kind in ("linear", "mlp"):
            x, x_test = pooled(f_train, pooling), pooled(f_test, pooling)
            preds = [train_and_score(x, y_train, x_test, y_test, len(tasks), kind, seed=seed) for seed in args.seeds]
            rows.append({"pooling": pooling, "router": kind, "features": x_test.shape[1],
                         **summary(preds, y_test, tasks)})
            print(f"  {pooling:20s} {kind:6s} router accuracy {rows[-1]['accuracy']:.2f} ± {rows[-1]['std']:.2f}",
                  flush=True)
    references = []
    test_flat = [row for part in test_tokens for row in part]
    segments_test = pooled(f_test, "segments")
    for cap in args.train_rows:
        capped_settings = dataclasses.replace(settings, max_train=cap)
        feats_cap, tokens_cap = [], []
        for task in tasks:
            train = load_capped(task, capped_settings)["train"]
            feats_cap.append(embedding_features(model, tokenizer, train, settings.max_length))
            tokens_cap.append(token_rows(tokenizer, train, settings.max_length))
        y_cap = labelled(tokens_cap)
        x_cap = pooled(joined(feats_cap), "segments")
        flat = [row for part in tokens_cap for row in part]
        trainers = {
            "segments linear": partial(train_and_score, x_cap, y_cap, segments_test, y_test, len(tasks), "linear"),
            "attention": partial(train_and_score_attention, model, flat, y_cap, test_flat, len(tasks)),
        }
        for kind, train_router in trainers.items():
            preds = [train_router(seed=seed) for seed in args.seeds]
            references.append({"train_rows_per_task": cap, "train_rows": len(y_cap), "router": kind,
                               **summary(preds, y_test, tasks)})
            print(f"  {cap:6d} rows per task, {kind:15s} router accuracy {references[-1]['accuracy']:.2f} ± "
                  f"{references[-1]['std']:.2f} ({time.perf_counter() - start:.0f} s)", flush=True)
    layer_rows = []
    for k in args.layers:
        x, x_test = (torch.cat([part[k] for part in deeper[split]]) for split in ("train", "test"))
        for features, (x_k, x_test_k) in {"raw": (x, x_test),
                                          "standardised": (standardised(x, x), standardised(x_test, x))}.items():
            preds = [train_and_score(x_k, y_train, x_test_k, y_test, len(tasks), "linear", seed=seed)
                     for seed in args.seeds]
            layer_rows.append({"layer": k, "features": features, **summary(preds, y_test, tasks)})
            print(f"  layer {k} {features:12s} router accuracy {layer_rows[-1]['accuracy']:.2f} ± "
                  f"{layer_rows[-1]['std']:.2f}", flush=True)
    groups = label_groups(label_names)
    group_rows = label_group_rows(pooled(f_train, "segments"), y_train, segments_test, y_test, label_names, groups,
                                  gold, args.seeds, args.group_weights) if args.label_groups else []
    result = {"tasks": tasks, "seeds": args.seeds, "train_rows": len(y_train), "test_rows": len(y_test),
              "rows": rows, "references": references, "layers": layer_rows, "label_groups": group_rows,
              "groups": [[t for t, g in zip(tasks, groups.tolist()) if g == k] for k in range(int(groups.max()) + 1)]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"router_features_{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    command = f"python -m benchmarks.multitask.router_features --name {args.name} --tasks {' '.join(args.tasks)}"
    if args.train_rows:
        command += " --train_rows " + " ".join(map(str, args.train_rows))
    if args.layers:
        command += " --layers " + " ".join(map(str, args.layers))
    if args.label_groups:
        command += " --label_groups --group_weights " + " ".join(f"{w:g}" for w in args.group_weights)
    columns = " | ".join(tasks) + " |"
    lines = [f"Router accuracy on the {len(y_test)} test rows of {len(tasks)} tasks, layer-0 features, mean ± std "
             f"over router seeds {args.seeds} (`{command}`).", "",
             "| pooling | router | features | accuracy | " + columns, "|---|---|---:|---:|" + "---:|" * len(tasks)]
    lines += [f"| {r['pooling']} | {r['router']} | {r['features']} | {r['accuracy']:.2f} ± {r['std']:.2f} | "
              + " | ".join(f"{r['per_task'][t]:.1f}" for t in tasks) + " |" for r in rows]
    if references:
        lines += ["", "Upper references on the same test rows: more router-training rows per task (capped as the "
                  "benchmark caps, stratified), and the attention router (`AttentionRouter`, 4 heads per segment, "
                  "trained on the token embeddings).", "",
                  "| rows per task | rows | router | accuracy | " + columns,
                  "|---:|---:|---|---:|" + "---:|" * len(tasks)]
        lines += [f"| {r['train_rows_per_task']} | {r['train_rows']} | {r['router']} | {r['accuracy']:.2f} ± "
                  f"{r['std']:.2f} | " + " | ".join(f"{r['per_task'][t]:.1f}" for t in tasks) + " |"
                  for r in references]
    if layer_rows:
        lines += ["", "The segment-pooled linear router on the hidden state after each base layer (`router_layer=k`; "
                  "0 = the embeddings), raw or standardised with the training rows' mean and std.", "",
                  "| layer | features | accuracy | " + columns, "|---:|---|---:|" + "---:|" * len(tasks)]
        lines += [f"| {r['layer']} | {r['features']} | {r['accuracy']:.2f} ± {r['std']:.2f} | "
                  + " | ".join(f"{r['per_task'][t]:.1f}" for t in tasks) + " |" for r in layer_rows]
    if group_rows:
        lines += ["", "Routing by label name, the segment-pooled linear router on the embeddings. Groups of tasks "
                  "with the same label names: " + "; ".join(", ".join(g) for g in result["groups"] if len(g) > 1)
                  + " (every other task alone). Answerable: the row's gold label name is among the chosen expert's "
                  "names. Changed: decisions unlike the plain router's top-1 (same seed).", "",
                  "| router training | decision | router accuracy | answerable, rows | answerable, task average | "
                  "changed |", "|---|---|---:|---:|---:|---:|"]
        lines += [f"| {r['training']} | {r['decision']} | {r['accuracy']:.2f} ± {r['std']:.2f} | "
                  f"{r['answerable_rows']:.2f} | {r['answerable_tasks']:.2f} | {r['changed']:.2f}% |"
                  for r in group_rows]
    (RESULTS / f"router_features_{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
