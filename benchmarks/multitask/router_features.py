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
Writes `benchmarks/results/multitask/router_features_<name>.{json,md}`.
"""

from __future__ import annotations

import argparse
import json
import time
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


def pooled(f: dict[str, torch.Tensor], pooling: str) -> torch.Tensor:
    segments = [f["a"], f["b"]]
    return torch.cat({
        "mean": [f["mean"]],
        "segments": segments,
        "mean+max": [f["mean"], f["max"]],
        "segments+lengths": [*segments, torch.log1p(f["lengths"])],
        "segments+diff+prod": [*segments, (f["a"] - f["b"]).abs(), f["a"] * f["b"]],
    }[pooling], -1)


def train_and_score(x, y, x_test, y_test, num_tasks: int, kind: str, epochs: int = 30, lr: float = 1e-2,
                    seed: int = 0) -> torch.Tensor:
    """Test predictions of a router trained as `train_router` does (noise off)."""
    torch.manual_seed(seed)
    net = (torch.nn.Linear(x.shape[1], num_tasks) if kind == "linear" else
           torch.nn.Sequential(torch.nn.Linear(x.shape[1], 256), torch.nn.GELU(), torch.nn.Linear(256, num_tasks)))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for start in range(0, len(order), 256):
            idx = order[start : start + 256]
            loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return net(x_test).argmax(-1)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True)
    parser.add_argument("--tasks", nargs="+", default=["paper"], help="'paper', 'all' or task names")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="router initialisation seeds")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    tasks = {"paper": list(PAPER_TASKS), "all": list(ALL_TASKS)}.get(" ".join(args.tasks), args.tasks)
    settings = Settings(tasks=tasks)
    if missing := settings.missing_data():
        raise SystemExit(f"skipped: the task data is not on this machine: {missing}")
    path, _ = resolve_base_model(settings.base_model)
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    start = time.perf_counter()
    feats = {"train": [], "test": []}
    for task in tasks:
        splits = load_capped(task, settings)
        for split in feats:
            feats[split].append(embedding_features(model, tokenizer, splits[split], settings.max_length))
        print(f"  features of {task}: {time.perf_counter() - start:.0f} s", flush=True)
    data = {}
    for split, parts in feats.items():
        y = torch.cat([torch.full((len(p["mean"]),), i) for i, p in enumerate(parts)])
        data[split] = ({k: torch.cat([p[k] for p in parts]) for k in parts[0]}, y)
    (f_train, y_train), (f_test, y_test) = data["train"], data["test"]
    rows = []
    for pooling in POOLINGS:
        for kind in ("linear", "mlp"):
            accs, per_task = [], torch.zeros(len(tasks))
            for seed in args.seeds:
                pred = train_and_score(pooled(f_train, pooling), y_train, pooled(f_test, pooling), y_test, len(tasks),
                                       kind, seed=seed)
                accs.append((pred == y_test).float().mean().item() * 100)
                per_task += torch.tensor([(pred[y_test == i] == i).float().mean().item() * 100
                                          for i in range(len(tasks))]) / len(args.seeds)
            acc = torch.tensor(accs)
            rows.append({"pooling": pooling, "router": kind, "features": pooled(f_test, pooling).shape[1],
                         "accuracy": acc.mean().item(), "std": acc.std().item() if len(accs) > 1 else 0.0,
                         "per_task": dict(zip(tasks, per_task.tolist()))})
            print(f"  {pooling:20s} {kind:6s} router accuracy {acc.mean():.2f} ± {rows[-1]['std']:.2f}", flush=True)
    result = {"tasks": tasks, "seeds": args.seeds, "train_rows": len(y_train), "test_rows": len(y_test),
              "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"router_features_{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    command = f"python -m benchmarks.multitask.router_features --name {args.name} --tasks {' '.join(args.tasks)}"
    lines = [f"Router accuracy on the {len(y_test)} test rows of {len(tasks)} tasks, layer-0 features, mean ± std "
             f"over router seeds {args.seeds} (`{command}`).", "",
             "| pooling | router | features | accuracy | " + " | ".join(tasks) + " |",
             "|---|---|---:|---:|" + "---:|" * len(tasks)]
    for r in rows:
        lines.append(f"| {r['pooling']} | {r['router']} | {r['features']} | {r['accuracy']:.2f} ± {r['std']:.2f} | "
                     + " | ".join(f"{r['per_task'][t]:.1f}" for t in tasks) + " |")
    (RESULTS / f"router_features_{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
