"""TT-LoRA MoE through the library's own commands: one TT-LoRA expert per task (`train_expert`), the top-1 router
over the frozen experts (`train_router`), routed and oracle evaluation (`evaluate`). Each task's expert is the best
on validation rows of those trained at the rates of `Settings.tt_lrs`."""

from __future__ import annotations

import json
from pathlib import Path

from hf_ttmoe.commands import evaluate, train_expert, train_router
from hf_ttmoe.io import WEIGHTS_NAME

from ..lr_grid import tune
from .params import stored_parameters
from .run import Run

EXPERT_FILES = (WEIGHTS_NAME, "results.json")


def data_args(run: Run) -> list[str]:
    s = run.settings
    return ["--tasks_dir", s.data_dir("tasks"), "--glue_dir", s.data_dir("glue"), "--split_seed", str(s.split_seed),
            "--max_length", str(s.max_length)]


def tt_expert(run: Run, task: str, lr: float, seed: int, out: Path) -> None:
    """Trains a TT-LoRA expert for `task` at `lr` into `out` with the library's own command."""
    s = run.settings
    train_expert.main(["--task", task, *data_args(run), "--output_dir", str(out),
                       "--max_train_samples", str(s.max_train), "--max_eval_samples", str(s.max_eval),
                       "--num_train_epochs", str(s.epochs), "--per_device_train_batch_size", str(s.batch_size),
                       "--per_device_eval_batch_size", "64", "--learning_rate", str(lr),
                       "--seed", str(seed), "--report_to", "none", "--save_strategy", "no",
                       "--logging_steps", "10", "--disable_tqdm", "true", "--layout", s.tt_layout,
                       "--tt_rank", str(s.tt_rank), *(["--tt_shapes", s.tt_shapes] if s.tt_shapes else [])])


def read_record(out: Path) -> dict:
    """`results.json` in the names `lr_grid.tune` reads."""
    r = json.loads((out / "results.json").read_text())
    return {**r, "validation_accuracy": r["eval_accuracy"], "train_s": r["train_runtime"]}


def train_experts(run: Run, seed: int) -> tuple[dict[str, Path], dict[str, dict], float]:
    """Per task, an expert at each rate of `tt_lrs` (reused when one trained alike exists: model.safetensors +
    results.json); the task keeps the best on validation rows (`lr_grid`). Returns the chosen experts, the choices,
    and the training seconds of every expert of the grid."""
    s = run.settings
    # experts trained before the layout, rank and shapes were settings keep their keys (chain, rank 5, automatic)
    layout = () if (s.tt_layout, s.tt_rank) == ("chain", 5) else (s.tt_layout, s.tt_rank)
    layout += (s.tt_shapes,) if s.tt_shapes else ()

    def folder(task: str, lr: float) -> Path:
        return run.expert_dir("ttlora", task, s.training_key("ttlora", lr, seed, *layout))

    def complete(out: Path) -> bool:
        return all((out / f).exists() for f in EXPERT_FILES)

    def train(task: str, lr: float, out: Path) -> None:
        tt_expert(run, task, lr, seed, out)

    experts, choices, train_s = {}, {}, 0.0
    for i, task in enumerate(s.tasks):
        print(f"  TT-LoRA expert {task} ({i + 1}/{len(s.tasks)})", flush=True)
        choices[task], records = tune(task, s.tt_lrs, folder, complete, train, read_record, s.extend_grid)
        experts[task] = folder(task, choices[task]["chosen"])
        train_s += sum(r["train_s"] for r in records.values())
    return experts, choices, train_s


def run_ttmoe(run: Run, seed: int, rows_dir: Path | None = None) -> dict:
    """Experts, router, evaluation. `rows_dir` is not read: the library's commands load the tasks themselves, with
    the run's caps and split seed, which gives the exported rows (`rows.load_capped`)."""
    s = run.settings
    experts, choices, grid_train_s = train_experts(run, seed)
    router = run.work / f"seed{seed}" / "ttmoe_router"
    if not (router / WEIGHTS_NAME).exists():
        print("  training the router", flush=True)
        train_router.main(["--experts", *map(str, experts.values()), *data_args(run), "--output_dir", str(router),
                           "--max_per_task", str(s.max_train), "--per_device_eval_batch_size", "64",
                           "--seed", str(seed), "--report_to", "none"])
    out = run.results / f"seed{seed}" / "ttmoe"
    print("  evaluating routed and oracle", flush=True)
    result = evaluate.main(["--moe", str(router), "--output_dir", str(out), *data_args(run),
                            "--max_per_task", str(s.max_eval)])
    expert_files = [e / WEIGHTS_NAME for e in experts.values()]
    experts_params = stored_parameters(*expert_files)  # TT cores + heads: all of it trained
    router_params = stored_parameters(router / WEIGHTS_NAME)
    train = [json.loads((e / "results.json").read_text()) for e in experts.values()]
    common = {"trainable_params": experts_params + router_params, "stored_params": experts_params + router_params,
              "composition_params": router_params}
    rows = {r["task"]: r for r in result["per_task"]}
    return {
        "methods": {
            "ttmoe": {**common, "task_given": False, "router_accuracy": result["router_accuracy"],
                      "confusion": result["confusion"], "per_task": {
                          t: {"rows": r["rows"], "accuracy": r["moe_accuracy"], "f1": r["moe_f1"]}
                          for t, r in rows.items()}},
            "ttmoe_oracle": {**common, "task_given": True, "per_task": {
                t: {"rows": r["rows"], "accuracy": r["oracle_accuracy"], "f1": r["oracle_f1"]}
                for t, r in rows.items()}},
        },
        "training": {"expert_train_s": sum(r["train_runtime"] for r in train),
                     "expert_steps": sum(round(r["train_runtime"] * r["train_steps_per_second"]) for r in train),
                     "grid_train_s": grid_train_s},
        "lr_choice": choices,
        "router_dir": str(router), "experts": {t: str(p) for t, p in experts.items()},
    }
