"""Per-task classification heads over one encoder, and scoring mixed-task predictions alike for every method.

Tasks have label spaces of different sizes, so every method keeps one head per task on BERT's pooled output (the
base's own pooler, frozen). A row is answered by the head of the task its method chose: the true task for methods
that are told it (oracle, multi-task LoRA, AdapterFusion), the routed task otherwise. A row sent to another task's
head counts as wrong, as in `hf_ttmoe.commands.evaluate`.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import accuracy_score
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding

from hf_ttmoe.commands.evaluate import f1


class TaskHeads(nn.Module):
    """One linear head per task, with the dropout BERT's classifier puts before its linear.

    Args:
        hidden_size: width of the pooled output.
        num_labels: label count of each task, in task-id order.
        dropout: dropout on the pooled output in training.
    """

    def __init__(self, hidden_size: int, num_labels: list[int], dropout: float = 0.1):
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(hidden_size, n) for n in num_labels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, pooled: torch.Tensor, head_ids: torch.Tensor, labels: torch.Tensor | None = None):
        """Per-row predictions from each row's head `head_ids` (B,), and the mean cross-entropy if `labels`."""
        pooled = self.dropout(pooled)  # (B, H)
        preds = torch.empty_like(head_ids)
        loss = pooled.new_zeros(())
        for t in head_ids.unique().tolist():
            rows = head_ids == t
            logits = self.heads[t](pooled[rows])  # (b_t, num_labels[t])
            preds[rows] = logits.argmax(-1)
            if labels is not None:
                loss = loss + F.cross_entropy(logits, labels[rows], reduction="sum")
        return (loss / len(head_ids) if labels is not None else None), preds


@torch.no_grad()
def predict_rows(predict_batch, data, tokenizer, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Run `predict_batch(batch) -> (chosen task ids, predictions)` over `data` (with `task_ids`, `labels`)."""
    out = {"task": [], "label": [], "chosen": [], "pred": []}
    for batch in DataLoader(data, batch_size=batch_size, collate_fn=DataCollatorWithPadding(tokenizer)):
        task_ids, labels = batch.pop("task_ids"), batch.pop("labels")
        chosen, preds = predict_batch(batch, task_ids)
        out["task"] += task_ids.tolist()
        out["label"] += labels.tolist()
        out["chosen"] += chosen.tolist()
        out["pred"] += preds.tolist()
    return {k: np.array(v) for k, v in out.items()}


def score(rows: dict[str, np.ndarray], tasks: list[str], num_labels: list[int], routed: bool) -> dict:
    """Per-task accuracy and F1 (binary F1 of class 1 for two labels, else macro), rows sent to another task's head
    counted wrong; with `routed`, the routing accuracy and the task -> chosen-task confusion matrix too."""
    per_task = {}
    for t, name in enumerate(tasks):
        sel = rows["task"] == t
        preds = np.where(rows["chosen"][sel] == t, rows["pred"][sel], -1)
        labels = rows["label"][sel]
        per_task[name] = {"rows": int(sel.sum()), "accuracy": float(accuracy_score(labels, preds)),
                          "f1": float(f1(labels, preds, num_labels[t]))}
    result = {"per_task": per_task}
    if routed:
        confusion = np.zeros((len(tasks), len(tasks)), dtype=int)
        np.add.at(confusion, (rows["task"], rows["chosen"]), 1)
        result.update(router_accuracy=float((rows["chosen"] == rows["task"]).mean()), confusion=confusion.tolist())
    return result
