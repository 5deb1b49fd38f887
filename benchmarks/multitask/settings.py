"""What one multi-task comparison is run with: the task pool, the caps, the training budget, the learning rates.

A run's settings are written once (`settings.json` in its results folder); a rerun under the same name must have the
same settings, so every stage it skips was made with them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from hf_ttmoe import DEFAULT_BASE_MODEL, TTLoRAConfig
from hf_ttmoe.data import EMBEDDED_TASKS, GLUE_TASKS
from hf_ttmoe.ttlora.stacked import LAYOUTS

REPO = Path(__file__).resolve().parents[2]
RESULTS_ROOT = REPO / "benchmarks" / "results" / "multitask"  # JSON, markdown, PNG: small, meant for git
WORK_ROOT = REPO / "runs" / "multitask"  # rows, experts, routers, adapters: git-ignored

# The paper's router table: six GLUE experts.
PAPER_TASKS = ("mnli", "cola", "rte", "sst2", "qnli", "qqp")
# Every task with data on the project's machine: 12 folders of ../shared/data/tasks, GLUE sst2 + mrpc, 4 embedded.
ALL_TASKS = (*PAPER_TASKS, "boolq", "cb", "sick", "scitail", "cr", "mpqa", "subj", "mrpc",
             *sorted(EMBEDDED_TASKS))
METHODS = ("ttmoe", "lora", "arrow", "xlora", "mtl_lora", "adapterfusion")


@dataclass
class Settings:
    """Everything that decides a result. Caps are per task and stratified (`hf_ttmoe.data.stratified_cap`)."""

    tasks: list[str] = field(default_factory=lambda: list(PAPER_TASKS))
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    seeds: list[int] = field(default_factory=lambda: [0])
    max_train: int = 1000  # training rows per task (experts, adapters, the router, the multi-task union)
    max_eval: int = 250  # validation rows and test rows per task
    epochs: float = 1.0
    batch_size: int = 32
    max_length: int = 128
    split_seed: int = 42
    # Per-task pieces (TT-LoRA experts, LoRA experts, AdapterFusion's adapters) are trained at every learning rate of
    # their grid and each task keeps the one with the best validation accuracy (never test). Grids of equal size; each
    # spans 1x to 4-5x the rate chosen for its method over 250 SST-2 steps (benchmarks/README.md), since 1 epoch of the
    # default caps is ~32 steps and short runs want larger rates.
    tt_lrs: list[float] = field(default_factory=lambda: [5e-3, 1e-2, 2e-2])
    # The TT-LoRA experts' layout and rank (`TTLoRAConfig.layout`, `tt_rank`): the paper's chain at rank 5, or the
    # stacked layout (one train across the layers) at rank 4, 4.3% of LoRA r=16 on MiniLM's query/value.
    tt_layout: str = "chain"
    tt_rank: int = 5
    # Mode layout per module as JSON (`train_expert --tt_shapes`), e.g. four larger cores on MiniLM's query/value:
    # '{"query": [[16, 24], [24, 16]], "value": [[16, 24], [24, 16]]}'; "" = the automatic layout.
    tt_shapes: str = ""
    lora_lrs: list[float] = field(default_factory=lambda: [2e-3, 5e-3, 1e-2])
    af_adapter_lrs: list[float] = field(default_factory=lambda: [1e-3, 3e-3, 1e-2])
    # While a grid's end is strictly best, the next rate past it is tried too, at most this many per side
    # (benchmarks/lr_grid.py, as bench_quality does); 0 keeps the grids as given (runs made before stop 23).
    extend_grid: int = 2
    # Composition pieces trained once over the pool, at one rate each.
    mtl_lr: float = 2e-3
    xlora_lr: float = 1e-3
    af_fusion_lr: float = 5e-4
    arrow_top_k: int = 3
    timing_rows: int = 32  # one mixed batch, drawn from every task's test rows
    timing_reps: int = 5
    base_model: str = DEFAULT_BASE_MODEL
    tasks_dir: str = "../shared/data/tasks"  # relative paths are taken from the repository root
    glue_dir: str = "../shared/data/glue"

    def __post_init__(self):
        if unknown := [m for m in self.methods if m not in METHODS]:
            raise ValueError(f"methods {unknown} unknown; valid: {list(METHODS)}")
        if len(set(self.tasks)) != len(self.tasks) or len(self.tasks) < 2:
            raise ValueError(f"tasks={self.tasks}: at least two distinct tasks are needed for a multi-task pool")
        if "arrow" in self.methods or "xlora" in self.methods:
            if "lora" not in self.methods:
                raise ValueError("arrow and xlora route over the per-task LoRA experts: add 'lora' to --methods")
        for name in ("max_train", "max_eval", "batch_size", "max_length", "timing_rows", "timing_reps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be positive")
        if self.tt_layout not in LAYOUTS:
            raise ValueError(f"tt_layout={self.tt_layout!r} is not one of {LAYOUTS}")
        if self.tt_shapes:
            try:
                shapes = json.loads(self.tt_shapes)
            except json.JSONDecodeError as e:
                raise ValueError(f"tt_shapes={self.tt_shapes!r} is not JSON ({e}); expected e.g. "
                                 '\'{"query": [[16, 24], [24, 16]]}\'') from None
            if not isinstance(shapes, dict) or not shapes:
                raise ValueError(f"tt_shapes={self.tt_shapes!r} must be a JSON object of module name -> "
                                 "[input modes, output modes]")
            # each layout's form and its fit with the layout, as the experts' config will check it (the modes'
            # products are checked against the base's linears when the first expert is built)
            shapes = TTLoRAConfig(tt_rank=self.tt_rank, tt_shapes=shapes, layout=self.tt_layout).tt_shapes
            self.tt_shapes = json.dumps(shapes, sort_keys=True, separators=(",", ":"))  # one spelling, one key
        if self.extend_grid < 0:
            raise ValueError(f"extend_grid={self.extend_grid} must be >= 0 (0: the grids as given)")
        for name in ("tt_lrs", "lora_lrs", "af_adapter_lrs"):
            lrs = getattr(self, name)
            if not lrs or any(lr <= 0 for lr in lrs) or len(set(lrs)) != len(lrs):
                raise ValueError(f"{name}={lrs} must be distinct positive learning rates (at least one)")

    def data_dir(self, kind: str) -> str:
        """`tasks_dir` or `glue_dir` as a path from the current directory (relative ones are from the repo root)."""
        return str((REPO / getattr(self, f"{kind}_dir")).resolve())

    def missing_data(self) -> list[str]:
        """The data folders the pool needs that do not exist (the shared data is not on every machine)."""
        missing = []
        for task in self.tasks:
            if task in GLUE_TASKS:
                folder = Path(self.data_dir("glue"), task)
            elif task not in EMBEDDED_TASKS:
                folder = Path(self.data_dir("tasks"), task)
            else:
                continue
            if not folder.is_dir():
                missing.append(f"{task}: {folder}")
        return missing

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def training_key(self, *extra) -> str:
        """A short digest of what trains one per-task model: experts with equal keys are reused across runs."""
        what = [self.base_model, self.max_train, self.max_eval, self.epochs, self.batch_size, self.max_length,
                self.split_seed, self.tasks_dir, self.glue_dir, *extra]
        return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:10]
