"""The multi-task comparison in one resumable command (issue 14): TT-LoRA MoE against AdapterFusion, PEFT's routers
over LoRA experts and one multi-task LoRA, on the same base, rows, steps and seeds.

    python -m benchmarks.multitask --name paper6                 # the paper's six GLUE tasks, default caps
    python -m benchmarks.multitask --name all18 --tasks all       # every task on the machine (18)
    python -m benchmarks.multitask --name smoke --tasks rte cola --max_train 32 --max_eval 16 --timing_reps 2
    python -m benchmarks.multitask --name paper6 --jobs 2       # the method stages as two processes

Stages, each skipped on rerun when its JSON exists (benchmarks/results/multitask/<name>/): rows -> per seed:
ttmoe, lora (+ arrow, xlora), mtl_lora, adapterfusion -> timing -> report (results.json, results.md, PNGs).
With `--jobs N` the method stages run in N processes at once (balanced by their measured cost), each with
`--threads` threads (default: the machine's cores / N); a stage trains and saves the same whichever process runs it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from functools import partial

import torch

from .jobs import pending_stages, run_in_processes, run_stages, split_stages, stage_worker
from .report import write_report
from .rows import export_rows
from .run import Run
from .settings import ALL_TASKS, METHODS, PAPER_TASKS, Settings
from .timing import run_timing


def parse_args(argv: list[str] | None = None) -> tuple[str, Settings, int | None, int]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.multitask", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="run name: results/multitask/<name>/, runs/multitask/<name>/")
    parser.add_argument("--tasks", nargs="+", default=list(PAPER_TASKS),
                        help=f"task pool; 'paper' = {' '.join(PAPER_TASKS)}; 'all' = the {len(ALL_TASKS)} tasks")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--threads", type=int,
                        help="torch intra-op threads per process (default: torch's; with --jobs N, cores / N)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="processes that run the method stages at once (each trains its own methods)")
    defaults = Settings()
    for f in dataclasses.fields(Settings):
        if f.name in ("tasks", "methods"):
            continue
        value = getattr(defaults, f.name)
        if isinstance(value, list):
            parser.add_argument(f"--{f.name}", nargs="+", type=type(value[0]), default=value)
        else:
            parser.add_argument(f"--{f.name}", type=type(value), default=value)
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs {args.jobs}: expected a number of processes >= 1")
    tasks = {"paper": list(PAPER_TASKS), "all": list(ALL_TASKS)}.get(" ".join(args.tasks), args.tasks)
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(Settings)}
    return args.name, Settings(**{**values, "tasks": tasks}), args.threads, args.jobs


def main(argv: list[str] | None = None) -> dict:
    name, settings, threads, jobs = parse_args(argv)
    if missing := settings.missing_data():
        raise SystemExit("skipped: the task data is not on this machine (../shared/data, see benchmarks/README.md): "
                         + "; ".join(missing))
    if jobs > 1 and not threads:
        threads = max(1, (os.cpu_count() or 1) // jobs)
    if threads:
        torch.set_num_threads(threads)
    run = Run(name, settings)
    print(f"[{name}] {len(settings.tasks)} tasks {settings.tasks}; methods {settings.methods}; "
          f"seeds {settings.seeds}; {settings.max_train} train / {settings.max_eval} eval rows per task, "
          f"{settings.epochs:g} epoch(s), batch {settings.batch_size}, max length {settings.max_length}", flush=True)
    rows_dir = run.work / "rows"
    run.stage("rows", lambda: {"tasks": export_rows(settings.tasks, settings, rows_dir)})
    stages = pending_stages(run)
    if jobs > 1 and len(stages) > 1:
        groups = split_stages(stages, jobs)
        print(f"[{name}] {len(groups)} processes, {threads} thread(s) each: {groups}", flush=True)
        run_in_processes(groups, stage_worker, name, settings, rows_dir, threads, run.results.parent, run.work.parent)
    else:
        run_stages(run, stages, rows_dir)
    run.stage("timing", partial(run_timing, run, settings.seeds[0], rows_dir))
    return write_report(run)


if __name__ == "__main__":
    main()
