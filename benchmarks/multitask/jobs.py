"""The method stages of a run, and running them as parallel processes (`--jobs N`).

The stages of one seed are independent (each trains and scores its own method; only timing and the report read
them all), so on a machine with N cores they can run as N one-thread processes instead of one after another. Each
stage still writes its JSON when it finishes: an interrupted parallel run resumes like a serial one.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import torch

from .adapterfusion import run_adapterfusion
from .mtl_lora import run_mtl_lora
from .peft_experts import run_peft_experts
from .run import Run, method_stage
from .settings import Settings
from .ttmoe import run_ttmoe

# method -> the stage that runs it (arrow and xlora run in the LoRA experts' stage, over its experts)
STAGES = {"ttmoe": run_ttmoe, "lora": run_peft_experts, "mtl_lora": run_mtl_lora, "adapterfusion": run_adapterfusion}
# Minutes each stage took in the six-task run at the default caps, two processes of one thread each
# (benchmarks/README.md, "The six tasks as two processes"): what `split_stages` balances.
STAGE_MINUTES = {"ttmoe": 25, "lora": 39, "mtl_lora": 9, "adapterfusion": 36}


def pending_stages(run: Run) -> list[tuple[int, str]]:
    """(seed, method) of every method stage the run's settings ask for that has not finished, in run order."""
    s = run.settings
    return [(seed, method) for seed in s.seeds for method in STAGES
            if method in s.methods and run.done(method_stage(seed, method)) is None]


def split_stages(stages: Sequence[tuple[int, str]], jobs: int) -> list[list[tuple[int, str]]]:
    """`stages` in at most `jobs` groups of about equal measured cost (`STAGE_MINUTES`): the longest first, each to
    the group with the least so far. Within a group the stages keep their run order."""
    if jobs < 1:
        raise ValueError(f"jobs={jobs} must be >= 1")
    groups: list[list[tuple[int, str]]] = [[] for _ in range(jobs)]
    load = [0] * jobs
    for stage in sorted(stages, key=lambda st: -STAGE_MINUTES[st[1]]):
        i = load.index(min(load))
        groups[i].append(stage)
        load[i] += STAGE_MINUTES[stage[1]]
    order = {stage: k for k, stage in enumerate(stages)}
    return [sorted(g, key=order.__getitem__) for g in groups if g]


def run_stages(run: Run, stages: Sequence[tuple[int, str]], rows_dir: Path) -> None:
    """Runs `stages` one after another, each saved when it finishes."""
    for seed, method in stages:
        run.stage(method_stage(seed, method), partial(STAGES[method], run, seed, rows_dir))


def stage_worker(stages: Sequence[tuple[int, str]], name: str, settings: Settings, rows_dir: Path,
                 threads: int | None, results_root: Path, work_root: Path) -> None:
    """`run_stages` in a process of its own (`run_in_processes`): the run rebuilt from what pickles."""
    if threads:
        torch.set_num_threads(threads)
    run_stages(Run(name, settings, results_root, work_root), stages, rows_dir)


def run_in_processes(groups: Sequence, fn: Callable, *args) -> list:
    """`fn(group, *args)` for every group, each in a fresh process (spawned: no state shared with this one), all at
    once; their results in the order of `groups`. Waits for every group; if any failed, raises SystemExit naming each
    with its error, after the others finished (what they saved is kept, and a rerun resumes)."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=len(groups), mp_context=context) as pool:
        futures = [pool.submit(fn, group, *args) for group in groups]
        results, failed = [], []
        for group, future in zip(groups, futures):
            try:
                results.append(future.result())
            except Exception as error:  # reported below with the group it came from
                failed.append(f"{group}: {type(error).__name__}: {error}")
    if failed:
        raise SystemExit("stages failed in their worker processes (finished ones are saved; rerun to resume):\n  "
                         + "\n  ".join(failed))
    return results
