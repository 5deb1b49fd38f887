"""Benchmarks of dense MoE-LoRA (issue 3). Interleaved repetitions, medians and ratios.

    python -m benchmarks.bench_moe_lora layer     # two-GEMM layer vs per-expert loop vs one LoRA of rank E·r
    python -m benchmarks.bench_moe_lora step      # MiniLM training step vs PEFT LoRA at the same trainable budget

Budget match: MoE-LoRA with E=8 experts of rank 4 (+ gates) on both FFN linears of layers 2-5 has 552,960
trainable parameters; PEFT LoRA of rank 36 on the same modules has exactly 552,960. Heads are trained by both.
Quality (both tuned on dev, one protocol) is `benchmarks.bench_quality`.
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import (
    add_layer_timing_args,
    dispatch,
    interleaved,
    layer_clock,
    layer_results_name,
    peft_lora_linear,
    save,
)
from hf_ttmoe import DEFAULT_BASE_MODEL, DenseMoELoRAConfig, DenseMoELoRAModel, load_base_model

LAYERS = [2, 3, 4, 5]
FFN = ["intermediate.dense", "output.dense"]
MATCHED_LORA_RANK = 36


def layer_variants(num: int, args, x: torch.Tensor) -> dict:
    """fwd+bwd closures: the two-GEMM layer, the per-expert loop, one bare LoRA of rank E·r (two GEMMs, nothing
    else: the floor) and PEFT's LoRA layer of rank E·r (which also scales its output)."""
    from hf_ttmoe import DenseMoELoRALinear

    torch.manual_seed(0)
    base = nn.Linear(args.d_in, args.d_out, device=args.device).requires_grad_(False)
    fused = DenseMoELoRALinear(copy.deepcopy(base), num, args.rank, alpha=2 * args.rank)
    with torch.no_grad():
        fused.moelora_B.normal_(0, 0.02)
    a, b, gate = fused.moelora_A, fused.moelora_B, fused.moelora_gate
    lora_a = nn.Parameter(torch.randn(num * args.rank, args.d_in, device=args.device) * 0.02)
    lora_b = nn.Parameter(torch.randn(args.d_out, num * args.rank, device=args.device) * 0.02)

    def loop():  # the obvious implementation: one LoRA pass per expert, weighted by its gate
        w = gate(x).softmax(-1)  # (B, T, E)
        out = base(x)
        for e in range(num):
            sl = slice(e * args.rank, (e + 1) * args.rank)
            out = out + w[..., e:e + 1] * F.linear(F.linear(x, a[sl]), b[:, sl]) * fused.scaling
        out.square().mean().backward()

    def two_gemm():
        fused(x).square().mean().backward()

    def lora():
        (base(x) + F.linear(F.linear(x, lora_a), lora_b)).square().mean().backward()

    peft_layer = peft_lora_linear(copy.deepcopy(base), r=num * args.rank)

    def peft_lora():
        peft_layer(x).square().mean().backward()

    return {"two-GEMM MoE-LoRA": two_gemm, "per-expert loop": loop, "one LoRA of rank E·r": lora,
            "PEFT LoRA of rank E·r": peft_lora}


def bench_layer(args) -> None:
    clock = layer_clock(args)
    rows = []
    x = torch.randn(args.batch, args.seq, args.d_in, device=args.device)
    for num in args.experts:
        med = interleaved(layer_variants(num, args, x), args.reps, clock=clock)
        row = {"experts": num, **med, "loop_over_fused": med["per-expert loop"] / med["two-GEMM MoE-LoRA"],
               "fused_over_lora": med["two-GEMM MoE-LoRA"] / med["one LoRA of rank E·r"],
               "fused_over_peft_lora": med["two-GEMM MoE-LoRA"] / med["PEFT LoRA of rank E·r"]}
        rows.append(row)
        print(row)
    save(layer_results_name("moe_lora_layer", args), {"args": vars(args), "rows": rows})
    print(f"\nFFN linear {args.d_in}->{args.d_out}, x=({args.batch}, {args.seq}, {args.d_in}), r={args.rank}, fwd+bwd")
    print("| E | loop / two-GEMM | two-GEMM / bare LoRA of rank E·r | two-GEMM / PEFT LoRA of rank E·r |")
    print("|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['experts']} | {r['loop_over_fused']:.2f} | {r['fused_over_lora']:.2f} | "
              f"{r['fused_over_peft_lora']:.2f} |")


def build(method: str, num_labels: int = 2):
    """The step benchmark's pair at a matched budget (for timing: the scale `lora_alpha` does not change the cost)."""
    import peft

    torch.manual_seed(0)
    config = DenseMoELoRAConfig(base_model_name_or_path=DEFAULT_BASE_MODEL, num_labels=num_labels, num_experts=8,
                                lora_rank=4, layers_to_transform=LAYERS,
                                router_aux_loss_coef=0.05)
    if method == "moe":
        return DenseMoELoRAModel(config)
    targets = [f"layer.{i}.{m}" for i in LAYERS for m in FFN]
    return peft.get_peft_model(load_base_model(config), peft.LoraConfig(
        r=MATCHED_LORA_RANK, lora_alpha=2 * MATCHED_LORA_RANK, target_modules=targets, modules_to_save=["classifier"]))


def trainable(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "classifier" not in n)


def bench_step(args) -> None:
    models = {"Dense MoE-LoRA E=8 r=4": build("moe"), f"PEFT LoRA r={MATCHED_LORA_RANK}": build("lora")}
    counts = {k: trainable(m) for k, m in models.items()}
    x = torch.randint(1000, 20000, (args.batch, args.seq))
    batch = {"input_ids": x, "attention_mask": torch.ones_like(x), "labels": torch.randint(0, 2, (args.batch,))}
    opts = {k: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4) for k, m in models.items()}

    def step(k):
        models[k].train()
        models[k](**batch).loss.backward()
        opts[k].step()
        opts[k].zero_grad(set_to_none=True)

    med = interleaved({k: (lambda k=k: step(k)) for k in models}, args.reps)
    lora_key = f"PEFT LoRA r={MATCHED_LORA_RANK}"
    rows = [{"method": k, "median_step_s": v, "ratio_to_lora": v / med[lora_key], "trainable_excl_head": counts[k]}
            for k, v in med.items()]
    save("moe_lora_step", {"args": vars(args), "rows": rows})
    print(f"\nMiniLM training step, batch {args.batch}, seq {args.seq}")
    print("| method | trainable (excl. head) | step / LoRA |\n|---|---:|---:|")
    for r in rows:
        print(f"| {r['method']} | {r['trainable_excl_head']:,} | {r['ratio_to_lora']:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("layer")
    p.add_argument("--experts", type=int, nargs="+", default=[4, 8, 16])
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--d_in", type=int, default=384)
    p.add_argument("--d_out", type=int, default=1536)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--reps", type=int, default=5)
    add_layer_timing_args(p)
    p.set_defaults(fn=bench_layer)
    p = sub.add_parser("step")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--reps", type=int, default=5)
    p.set_defaults(fn=bench_step)
    dispatch(parser)


if __name__ == "__main__":
    main()
