"""Benchmarks of TT-LoRA MoE (issue 4). Interleaved repetitions, medians and ratios.

    python -m benchmarks.bench_moe mixed      # mixed-expert batch vs single expert, E = 1..256, vs PEFT adapter_names=
    python -m benchmarks.bench_moe e2e        # routed inference / right expert by hand, router_layer 0 and L
    python -m benchmarks.bench_moe compose    # time to compose E experts from local directories

Experts here are random (untrained) TT-LoRA experts on MiniLM q/v: timings do not depend on the values.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import (
    add_device_args,
    bench_base,
    dispatch,
    interleaved,
    make_experts,
    results_name,
    save,
)
from hf_ttmoe import DEFAULT_BASE_MODEL, TTLoRAConfig, TTLoRAModel, TTLoRAMoEModel, load_base_model


def batch_of(size: int, seq: int, device: str = "cpu"):
    x = torch.randint(1000, 20000, (size, seq), device=device)
    return {"input_ids": x, "attention_mask": torch.ones_like(x)}


@torch.no_grad()
def bench_mixed(args) -> None:
    import peft

    base = bench_base(args).eval()
    batch = batch_of(args.batch, args.seq, args.device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_experts(Path(tmp), max(args.experts), base)
        single = TTLoRAModel.from_pretrained(paths[0], base_model=copy.deepcopy(base)).to(args.device).eval()
        for num in args.experts:
            moe = TTLoRAMoEModel.from_experts(paths[:num], base_model=copy.deepcopy(base)).to(args.device).eval()
            index = torch.arange(args.batch, device=args.device) % num  # min(num, batch) distinct experts
            fns = {"single TT-LoRA expert": lambda: single(**batch),
                   "MoE, all rows expert 0": lambda m=moe, i=index: m(**batch, expert_index=torch.zeros_like(i)),
                   "MoE, mixed experts": lambda m=moe, i=index: m(**batch, expert_index=i)}
            if num <= args.max_peft_experts:
                lora_config = peft.LoraConfig(r=16, target_modules=["query", "value"])
                lora = peft.get_peft_model(copy.deepcopy(base), lora_config, adapter_name="a0")
                for i in range(1, num):
                    lora.add_adapter(f"a{i}", peft.LoraConfig(r=16, target_modules=["query", "value"]))
                lora.to(args.device).eval()
                names = [f"a{i}" for i in index.tolist()]
                fns["PEFT single adapter"] = lambda m=lora: m(**batch, adapter_names=["a0"] * args.batch)
                fns["PEFT mixed adapters"] = lambda m=lora, n=names: m(**batch, adapter_names=n)
            med = interleaved(fns, args.reps)
            row = {"experts": num, "distinct_in_batch": min(num, args.batch), **{k: v for k, v in med.items()}}
            row["ours_mixed_over_single"] = med["MoE, mixed experts"] / med["single TT-LoRA expert"]
            row["ours_mixed_over_moe_one_expert"] = med["MoE, mixed experts"] / med["MoE, all rows expert 0"]
            if "PEFT mixed adapters" in med:
                row["peft_mixed_over_single"] = med["PEFT mixed adapters"] / med["PEFT single adapter"]
                row["ours_mixed_over_peft_mixed"] = med["MoE, mixed experts"] / med["PEFT mixed adapters"]
            rows.append(row)
            print(row)
            save(results_name("moe_mixed", args), {"args": vars(args), "rows": rows})
    print(f"\nMixed-expert batches, MiniLM, batch {args.batch}, seq {args.seq} (median of {args.reps})")
    print("| E | ours mixed / single expert | ours mixed / MoE one expert | PEFT mixed / single | ours / PEFT mixed |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
        peft_cells = (f"{r['peft_mixed_over_single']:.3f} | {r['ours_mixed_over_peft_mixed']:.3f}"
                      if "peft_mixed_over_single" in r else "— | —")
        print(f"| {r['experts']} | {r['ours_mixed_over_single']:.3f} | {r['ours_mixed_over_moe_one_expert']:.3f} | "
              f"{peft_cells} |")


@torch.no_grad()
def bench_e2e(args) -> None:
    base = bench_base(args).eval()
    batch = batch_of(args.batch, args.seq, args.device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_experts(Path(tmp), 4, base)
        for layer in args.router_layers:
            moe = TTLoRAMoEModel.from_experts(paths, base_model=copy.deepcopy(base), router_layer=layer)
            moe = moe.to(args.device).eval()
            index = torch.arange(args.batch, device=args.device) % 4
            med = interleaved({"routed": lambda m=moe: m(**batch),
                               "oracle": lambda m=moe, i=index: m(**batch, expert_index=i)}, args.reps)
            rows.append({"router_layer": layer, "routed_over_oracle": med["routed"] / med["oracle"], **med})
            print(rows[-1])
    save(results_name("moe_e2e", args), {"args": vars(args), "rows": rows})
    print("\n| router_layer | routed / right expert by hand |\n|---:|---:|")
    for r in rows:
        print(f"| {r['router_layer']} | {r['routed_over_oracle']:.3f} |")


def bench_compose(args) -> None:
    base = load_base_model(TTLoRAConfig(base_model_name_or_path=DEFAULT_BASE_MODEL, num_labels=2)).eval()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_experts(Path(tmp), max(args.experts), base)
        for num in args.experts:
            times = []
            for _ in range(args.reps):
                fresh = copy.deepcopy(base)
                t0 = time.perf_counter()
                TTLoRAMoEModel.from_experts(paths[:num], base_model=fresh)
                times.append(time.perf_counter() - t0)
            med = sorted(times)[len(times) // 2]
            rows.append({"experts": num, "median_s": med, "per_expert_ms": 1e3 * med / num})
            print(rows[-1])
    save("moe_compose", {"args": vars(args), "rows": rows})
    print("\n| experts | compose time (base already loaded) | per expert |\n|---:|---:|---:|")
    for r in rows:
        print(f"| {r['experts']} | {r['median_s']:.3f} s | {r['per_expert_ms']:.1f} ms |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("mixed")
    p.add_argument("--experts", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    p.add_argument("--max_peft_experts", type=int, default=64)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--reps", type=int, default=5)
    add_device_args(p)
    p.set_defaults(fn=bench_mixed)
    p = sub.add_parser("e2e")
    p.add_argument("--router_layers", type=int, nargs="+", default=[0, 3, 6])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--reps", type=int, default=5)
    add_device_args(p)
    p.set_defaults(fn=bench_e2e)
    p = sub.add_parser("compose")
    p.add_argument("--experts", type=int, nargs="+", default=[1, 4, 16, 64])
    p.add_argument("--reps", type=int, default=3)
    p.set_defaults(fn=bench_compose)
    dispatch(parser)


if __name__ == "__main__":
    main()
