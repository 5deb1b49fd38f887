"""AdapterFusion, run as a subprocess in its own environment (AdapterHub's `adapters` pins transformers 4.57): this
side creates the environment if needed, writes the job (base model folder, rows, budget) and reads the results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from hf_ttmoe.adapter import resolve_base_model

from .rows import timing_rows
from .run import Run, write_json
from .settings import WORK_ROOT

HERE = Path(__file__).resolve().parent
ENV_DIR = WORK_ROOT / ".venv-adapters"  # git-ignored, outside the source tree (1.3 GB of site-packages)
SETUP = HERE / "setup_adapters_env.sh"
WORKER = HERE / "adapterfusion_worker.py"


def adapters_python(env_dir: Path = ENV_DIR) -> Path:
    """The environment's interpreter, after `setup_adapters_env.sh` made sure it is complete (idempotent)."""
    subprocess.run(["bash", str(SETUP), str(env_dir)], check=True)
    return env_dir / "bin" / "python"


def job(run: Run, seed: int, rows_dir: Path) -> dict:
    s = run.settings
    key = s.training_key("adapterfusion", "seq_bn", seed)  # one folder per rate inside: <task>/lr<rate>
    return {"base": resolve_base_model(s.base_model)[0], "rows_dir": str(rows_dir), "tasks": s.tasks,
            "adapters_dir": str(run.experts_root / "adapterfusion" / key), "seed": seed,
            "max_length": s.max_length, "batch_size": s.batch_size, "epochs": s.epochs,
            "adapter_lrs": s.af_adapter_lrs, "extend_grid": s.extend_grid, "fusion_lr": s.af_fusion_lr,
            "threads": torch.get_num_threads(),
            "timing": {"rows": timing_rows(rows_dir, s.tasks, s.timing_rows, seed=0), "reps": s.timing_reps},
            "out": str(run.work / f"seed{seed}" / "adapterfusion.json")}


def run_adapterfusion(run: Run, seed: int, rows_dir: Path) -> dict:
    spec = job(run, seed, rows_dir)
    path = run.work / f"seed{seed}" / "adapterfusion_job.json"
    write_json(path, spec)
    python = adapters_python()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["HF_HUB_OFFLINE"] = "1"  # the base is a local folder; nothing is downloaded
    print(f"  running {WORKER.name} in {python.parent.parent}", flush=True)
    subprocess.run([str(python), str(WORKER), str(path)], check=True, env=env, stdout=sys.stdout, stderr=sys.stderr)
    result = json.loads(Path(spec["out"]).read_text())
    timing, training = result.pop("timing"), result.pop("training")
    versions = result.pop("versions")
    choices = result.pop("lr_choice")
    return {"methods": {"adapterfusion": result}, "timing": timing, "training": training, "versions": versions,
            "lr_choice": choices}
