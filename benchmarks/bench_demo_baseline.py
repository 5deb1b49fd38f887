"""The baseline beside the demo's table (issue 13): PEFT LoRA r=16 on the demo's own rows, measured once.

    python -m benchmarks.bench_demo_baseline --threads 1

For each embedded task, `benchmarks.bench_quality` trains PEFT LoRA r=16 on query/value (with `--methods lora tt`,
TT-LoRA r=5 on the same protocol too) on exactly the rows `scripts/demo.py` gives its experts: its training cap,
epochs, max length, batch and test cap, read from `DemoArguments` so they cannot drift apart. Each method's learning
rate is chosen on the task's validation rows (as many as the demo's test cap), never on test, from its grid widened
past an edge while the edge is best (bench_quality's `--extend_grid`). The LoRA results are
written to `hf_ttmoe/commands/demo_baseline.json`, which ships with the package: the demo prints them beside its own
experts when it runs with the settings they were measured at. The per-run tables go to
`benchmarks/results/demo_baseline_<task>.{json,md}`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

from hf_ttmoe.commands.demo import BASELINE_FILE, DemoArguments, baseline_settings
from hf_ttmoe.data import EMBEDDED_TASKS
from hf_ttmoe.io import atomic_write

REPO = Path(__file__).resolve().parents[1]
GRIDS = {"lora": "1e-3,2e-3,5e-3", "tt": "5e-3,1e-2,2e-2"}


def run_task(task: str, demo: DemoArguments, methods: list[str], threads: int | None, resume: bool) -> dict:
    """bench_quality for `task` on the demo's rows; returns its saved results."""
    name = f"demo_baseline_{task}"
    cmd = [sys.executable, "-m", "benchmarks.bench_quality", "--task", task, "--methods", *methods,
           "--lrs", *(f"{m}={GRIDS[m]}" for m in methods), "--seeds", "0",
           "--max_train_samples", str(demo.train_samples), "--max_dev_samples", str(demo.eval_samples),
           "--max_test_samples", str(demo.eval_samples), "--max_length", str(demo.max_length),
           "--batch_size", str(demo.batch_size), "--epochs", str(demo.epochs), "--name", name]
    if threads:
        cmd += ["--threads", str(threads)]
    if resume:
        cmd.append("--resume")
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)
    return json.loads((REPO / "benchmarks" / "results" / f"{name}.json").read_text())


def chosen(result: dict, method: str) -> dict:
    lr = result["chosen_lr"][method]
    row = next(r for r in result["rows"] if r["method"] == method and r["lr"] == lr)
    return {"lr": lr, "test_accuracy": row["test_accuracy"], "dev_accuracy": row["dev_accuracy"],
            "adapter_params": row["adapter_params"]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["lora"], choices=sorted(GRIDS),
                        help="lora (the baseline the demo shows); tt adds TT-LoRA on the same protocol")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--resume", action="store_true", help="keep the runs already saved")
    args = parser.parse_args(argv)
    demo = DemoArguments()
    if "lora" not in args.methods:
        parser.error("--methods must include lora: it is the baseline the demo shows")
    per_task, tt, tried = {}, {}, set()
    for task in EMBEDDED_TASKS:
        result = run_task(task, demo, args.methods, args.threads, args.resume)
        per_task[task] = chosen(result, "lora")
        tried |= {r["lr"] for r in result["rows"] if r["method"] == "lora"}
        if "tt" in args.methods:
            tt[task] = chosen(result, "tt")
    baseline = {
        "method": "PEFT LoRA r=16 (alpha 16) on query/value, learning rate chosen on validation rows",
        "lr_grid": sorted(tried),  # GRIDS["lora"], widened past its edge where the edge was best (bench_quality)
        "settings": baseline_settings(demo),
        "command": "python -m benchmarks.bench_demo_baseline --threads 1",
        "per_task": per_task,
    }
    atomic_write(str(BASELINE_FILE), lambda p: Path(p).write_text(json.dumps(baseline, indent=2) + "\n"))
    lines = ["| task | PEFT LoRA r=16: lr | dev acc. | test acc. |" + (" TT-LoRA r=5, same protocol: lr | test acc. |"
                                                                       if tt else ""),
             "|---|---:|---:|---:|" + ("---:|---:|" if tt else "")]
    for task in EMBEDDED_TASKS:
        lo = per_task[task]
        cells = f"| {task} | {lo['lr']:g} | {100 * lo['dev_accuracy']:.2f} | {100 * lo['test_accuracy']:.2f} |"
        if tt:
            cells += f" {tt[task]['lr']:g} | {100 * tt[task]['test_accuracy']:.2f} |"
        lines.append(cells)
    table = "\n".join(lines)
    (REPO / "benchmarks" / "results" / "demo_baseline.md").write_text(
        f"Demo rows ({dataclasses.asdict(demo)}), one seed.\n\n{table}\n")
    print(table)
    print(f"wrote {BASELINE_FILE}")
    return baseline


if __name__ == "__main__":
    main()
