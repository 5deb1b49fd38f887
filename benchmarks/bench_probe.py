"""Linear probes of the frozen base (issue 13): how much of a task the base model's own features carry, by pooling.

    python -m benchmarks.bench_probe --glue_dir ../shared/data/glue [--task sst2 --max_train_samples 4000]
    python -m benchmarks.bench_probe --tasks_dir ../shared/data/tasks --task qnli --max_length 128

Features of the frozen MiniLM for three poolings (BERT's [CLS] pooler `tanh(W h_CLS)`, the raw [CLS] state, the
masked mean of the last hidden states: what all-MiniLM-L6-v2 was trained for; a sentence pair is encoded as one
input, as the adapters see it), then a logistic regression (sklearn)
on the training rows; dev and test accuracy, and MCC (CoLA's metric; 0 for a probe that only predicts the majority
class). Results `benchmarks/results/probe_<task>.json`.
"""

from __future__ import annotations

import argparse

import torch
from sklearn.linear_model import LogisticRegression

from benchmarks.common import save
from hf_ttmoe import DEFAULT_BASE_MODEL, TTLoRAConfig, load_base_model, load_task, load_tokenizer
from hf_ttmoe.training import compute_metrics


@torch.no_grad()
def features(encoder, tokenizer, texts: list[str], max_length: int,
             pairs: list[str] | None = None) -> dict[str, torch.Tensor]:
    """The three poolings of each text (or sentence pair, encoded together as the adapters see it)."""
    out = {"pooler": [], "cls": [], "mean": []}
    for i in range(0, len(texts), 128):
        second = None if pairs is None else pairs[i:i + 128]
        batch = tokenizer(texts[i:i + 128], second, padding=True, truncation=True, max_length=max_length,
                          return_tensors="pt")
        hidden = encoder(**batch)
        mask = batch["attention_mask"].unsqueeze(-1).float()  # (B, T, 1)
        out["pooler"].append(hidden.pooler_output)
        out["cls"].append(hidden.last_hidden_state[:, 0])
        out["mean"].append((hidden.last_hidden_state * mask).sum(1) / mask.sum(1))
    return {k: torch.cat(v).numpy() for k, v in out.items()}


def probe_scores(data: dict[str, tuple]) -> dict[str, float]:
    """A logistic regression fitted on `data["train"]` (features, labels), scored on the "validation" and "test"
    splits: accuracy and MCC of each, as the adapters' evaluation computes them (`compute_metrics`)."""
    probe = LogisticRegression(max_iter=2000).fit(*data["train"])
    scores = {}
    for split in ("validation", "test"):
        x, y = data[split]
        metrics = compute_metrics((probe.predict_proba(x), y))
        scores.update({f"{split}_{k}": metrics[k] for k in ("accuracy", "mcc")})
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--glue_dir")
    parser.add_argument("--tasks_dir")
    parser.add_argument("--max_train_samples", type=int, default=4000)
    parser.add_argument("--max_eval_samples", type=int, default=2000)
    parser.add_argument("--max_length", type=int, default=64)
    args = parser.parse_args()
    config = TTLoRAConfig(base_model_name_or_path=DEFAULT_BASE_MODEL, num_labels=2)
    tokenizer, model = load_tokenizer(config), load_base_model(config).eval()
    encoder = model.base_model  # BertModel: the pooler is part of it
    splits = load_task(args.task, glue_dir=args.glue_dir, tasks_dir=args.tasks_dir,
                       max_train_samples=args.max_train_samples, max_eval_samples=args.max_eval_samples)
    feats = {s: features(encoder, tokenizer, splits[s]["text"], args.max_length,
                         splits[s]["text_pair"] if "text_pair" in splits[s].column_names else None) for s in splits}
    rows = []
    for pooling in ("pooler", "cls", "mean"):
        rows.append({"pooling": pooling, **probe_scores({s: (feats[s][pooling], splits[s]["label"]) for s in splits})})
        print(rows[-1])
    save(f"probe_{args.task}", {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
