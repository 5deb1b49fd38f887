"""Per-task learning rates chosen on validation rows, the same way for every method that trains a piece per task.

Each piece (a TT-LoRA expert, a LoRA expert, an AdapterFusion adapter) is trained at every rate of its method's grid;
the task keeps the rate with the best validation accuracy, the lowest of equals. Test rows are never looked at.
"""

from __future__ import annotations


def choose_lr(validation_accuracy: dict[float, float]) -> dict:
    """`{lr: validation accuracy}` -> the record a stage saves: the grid, its accuracies, the chosen rate, and whether
    the choice sits at an end of the grid (then the grid may not bracket the best rate: the report says so)."""
    if not validation_accuracy:
        raise ValueError("no learning rate was trained: the grid is empty")
    lrs = sorted(validation_accuracy)
    best = max(validation_accuracy.values())
    chosen = next(lr for lr in lrs if validation_accuracy[lr] == best)
    return {"lrs": lrs, "validation_accuracy": [validation_accuracy[lr] for lr in lrs], "chosen": chosen,
            "at_edge": len(lrs) > 1 and chosen in (lrs[0], lrs[-1])}
