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


def tune(task: str, lrs, folder, complete, train, read) -> tuple[dict, dict[float, dict]]:
    """One task's grid: the piece at every rate of `lrs` is reused when its folder is complete, else trained; the
    choice is made on the validation accuracy each piece's record holds.

    Args:
        task: the task the pieces are for.
        lrs: the method's grid.
        folder: `(task, lr) -> Path`, where the piece trained at `lr` lives.
        complete: `Path -> bool`, whether a folder holds a finished piece (else it is trained again).
        train: `(task, lr, Path) -> None`, trains the piece and saves it there, its record written last.
        read: `Path -> dict`, the piece's record, with `validation_accuracy` (a fraction) and `train_s` (seconds).

    Returns:
        `choose_lr`'s record, and every rate's record.
    """
    records = {}
    for lr in lrs:
        out = folder(task, lr)
        if complete(out):
            print(f"    lr {lr:g}: reused {out}", flush=True)
        else:
            print(f"    lr {lr:g}: training -> {out}", flush=True)
            train(task, lr, out)
        records[lr] = read(out)
    choice = choose_lr({lr: r["validation_accuracy"] for lr, r in records.items()})
    print(f"    chose lr {choice['chosen']:g} (validation accuracy "
          + ", ".join(f"{lr:g}: {a:.3f}" for lr, a in zip(choice["lrs"], choice["validation_accuracy"])) + ")",
          flush=True)
    return choice, records
