"""Learning rates chosen on validation rows: one protocol for every benchmark that tunes (`bench_quality`,
`bench_demo_baseline`, the multi-task comparison's per-task pieces).

Each rate of a method's grid is scored on validation rows (test rows are never looked at) and the best is kept, the
lowest of equals. While the best is *strictly* better than every other rate tried and sits at an end of what was
tried, the next rate past that end (`next_lr`, the 1-2-5 ladder) is tried too, at most `extend` per side: a rate is
never chosen only because the grid stopped there. A tie is not widened (a flat score says nothing about the
direction).

This file imports only the standard library: the AdapterFusion worker loads it by path in its own environment.
"""

from __future__ import annotations

import math


def next_lr(lr: float, up: bool) -> float:
    """The neighbour of `lr` on the 1-2-5 ladder (1e-3 -> 2e-3 -> 5e-3 -> 1e-2); off the ladder, x2 or /2."""
    exponent = math.floor(math.log10(lr) + 1e-9)
    mantissa = round(lr / 10**exponent, 6)
    ladder = {1.0: (0.5, 2.0), 2.0: (1.0, 5.0), 5.0: (2.0, 10.0)}
    down, upper = ladder.get(mantissa, (mantissa / 2, mantissa * 2))
    return float(f"{(upper if up else down) * 10**exponent:.6g}")


def best_lr(scores: dict[float, float]) -> float:
    """The rate with the best score, the lowest of equals."""
    return max(sorted(scores), key=lambda lr: (scores[lr], -lr))


def widen(grid, score, extend: int = 2) -> dict[float, float]:
    """`{lr: score(lr)}` for every rate of `grid`, and past an end of it while that end is strictly best (at most
    `extend` more rates per side). `score` is called once per rate, in order: the grid ascending, then the
    widening."""
    if not grid:
        raise ValueError("no learning rate to try: the grid is empty")
    if extend < 0:
        raise ValueError(f"extend={extend} must be >= 0 (0: the grid as given)")
    scores = {lr: score(lr) for lr in sorted(grid)}
    extra = {True: 0, False: 0}
    while True:
        tried = sorted(scores)
        best = best_lr(scores)
        others = [scores[lr] for lr in tried if lr != best]
        if not others or scores[best] <= max(others) or best not in (tried[0], tried[-1]):
            return scores
        up = best == tried[-1]
        if extra[up] >= extend:
            return scores
        extra[up] += 1
        lr = next_lr(best, up)
        scores[lr] = score(lr)


def tune_lr(grid, score, extend: int = 2) -> float:
    """The chosen rate of `grid` under `score` (see the module's protocol)."""
    return best_lr(widen(grid, score, extend))


def choose_lr(validation_accuracy: dict[float, float]) -> dict:
    """`{lr: validation accuracy}` -> the record a stage saves: the rates tried, their accuracies, the chosen rate,
    and whether the choice sits at an end of what was tried (then the rates may not bracket the best: a tie at the
    end, or the widening's limit reached; the report marks it)."""
    if not validation_accuracy:
        raise ValueError("no learning rate was trained: the grid is empty")
    lrs = sorted(validation_accuracy)
    chosen = best_lr(validation_accuracy)
    return {"lrs": lrs, "validation_accuracy": [validation_accuracy[lr] for lr in lrs], "chosen": chosen,
            "at_edge": len(lrs) > 1 and chosen in (lrs[0], lrs[-1])}


def tune(task: str, lrs, folder, complete, train, read, extend: int = 2) -> tuple[dict, dict[float, dict]]:
    """One task's pieces over a grid: the piece at each rate is reused when its folder is complete, else trained;
    the choice is made on the validation accuracy each piece's record holds, widened past an end as `widen` does.

    Args:
        task: the task the pieces are for.
        lrs: the method's grid.
        folder: `(task, lr) -> Path`, where the piece trained at `lr` lives.
        complete: `Path -> bool`, whether a folder holds a finished piece (else it is trained again).
        train: `(task, lr, Path) -> None`, trains the piece and saves it there, its record written last.
        read: `Path -> dict`, the piece's record, with `validation_accuracy` (a fraction) and `train_s` (seconds).
        extend: at most this many rates past each end of `lrs` (0: the grid as given).

    Returns:
        `choose_lr`'s record, and every rate's record.
    """
    records = {}

    def accuracy(lr: float) -> float:
        out = folder(task, lr)
        if complete(out):
            print(f"    lr {lr:g}: reused {out}", flush=True)
        else:
            print(f"    lr {lr:g}: training -> {out}", flush=True)
            train(task, lr, out)
        records[lr] = read(out)
        return records[lr]["validation_accuracy"]

    choice = choose_lr(widen(lrs, accuracy, extend))
    print(f"    chose lr {choice['chosen']:g} (validation accuracy "
          + ", ".join(f"{lr:g}: {a:.3f}" for lr, a in zip(choice["lrs"], choice["validation_accuracy"])) + ")",
          flush=True)
    return choice, records
