"""TT-LoRA MoE on real GLUE data (issue 4): SST-2 and MRPC experts, a router at several layers, evaluated without
task ids against the right expert by hand.

    python -m benchmarks.bench_glue_moe --glue_dir ../shared/data/glue
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.common import save
from hf_ttmoe.commands import evaluate, train_expert, train_router


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--glue_dir", required=True)
    parser.add_argument("--out", default="runs/bench_glue_moe")
    parser.add_argument("--router_layers", type=int, nargs="+", default=[0, 6])
    parser.add_argument("--router_types", nargs="+", default=["linear", "mlp"], choices=["linear", "mlp"])
    parser.add_argument("--router_rows", type=int, default=2000, help="router training rows per task")
    parser.add_argument("--sst2_train", type=int, default=4000)
    parser.add_argument("--eval_per_task", type=int, default=None, help="test rows per task (default: all)")
    args = parser.parse_args()
    out = Path(args.out)
    common = ["--glue_dir", args.glue_dir, "--learning_rate", "5e-3", "--per_device_train_batch_size", "32",
              "--per_device_eval_batch_size", "128", "--num_train_epochs", "1", "--save_strategy", "no",
              "--report_to", "none", "--use_cpu", "--seed", "0", "--logging_steps", "50"]
    experts = {}
    for task, extra in (("sst2", ["--max_length", "64", "--max_train_samples", str(args.sst2_train)]),
                        ("mrpc", ["--max_length", "128"])):
        path = out / "experts" / task
        if (path / "results.json").exists():  # trained by an earlier run of this script
            experts[task] = json.loads((path / "results.json").read_text())
            continue
        experts[task] = train_expert.main(["--task", task, "--output_dir", str(path), *extra, *common])
    rows = []
    for layer in args.router_layers:
        for router_type in args.router_types:
            moe_dir = out / f"moe_layer{layer}_{router_type}"
            t0 = time.perf_counter()
            train_router.main(["--experts", str(out / "experts/sst2"), str(out / "experts/mrpc"), "--glue_dir",
                               args.glue_dir, "--output_dir", str(moe_dir), "--router_layer", str(layer),
                               "--router_type", router_type, "--max_per_task", str(args.router_rows),
                               "--max_length", "128", "--report_to", "none", "--use_cpu"])
            router_s = time.perf_counter() - t0
            cap = [] if args.eval_per_task is None else ["--max_per_task", str(args.eval_per_task)]
            result = evaluate.main(["--moe", str(moe_dir), "--output_dir", str(moe_dir / "eval"), "--glue_dir",
                                    args.glue_dir, "--max_length", "128", *cap])
            rows.append({"router_layer": layer, "router_type": router_type, "router_train_s": router_s, **result})
            save("glue_moe", {"args": vars(args), "experts": experts, "rows": rows})
    print("\n| router_layer | router | router accuracy | " + " | ".join(
        f"{t['task']} MoE / oracle acc." for t in rows[0]["per_task"]) + " | router training (s) |")
    for r in rows:
        cells = [f"{100 * t['moe_accuracy']:.2f} / {100 * t['oracle_accuracy']:.2f}" for t in r["per_task"]]
        print(f"| {r['router_layer']} | {r['router_type']} | {100 * r['router_accuracy']:.2f}% | {' | '.join(cells)} "
              f"| {r['router_train_s']:.0f} |")


if __name__ == "__main__":
    main()
