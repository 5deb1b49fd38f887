"""Benchmarks of TT-LoRA experts (issue 2). Interleaved repetitions, medians and ratios; never single absolute times.

    python -m benchmarks.bench_ttlora layer    # per-layer fwd+bwd: base, PEFT LoRA r=16, the 3 TT paths
    python -m benchmarks.bench_ttlora step     # MiniLM training step: TT-LoRA vs PEFT LoRA r=16 (+ head-only, full FT)
    python -m benchmarks.bench_ttlora merged   # merged TT-LoRA inference vs base model inference

Results go to benchmarks/results/<name>.json and are printed as markdown tables. Quality (TT-LoRA vs PEFT LoRA, each
tuned on dev) is `benchmarks.bench_quality`.
"""

from __future__ import annotations

import argparse
import copy

import torch
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
from hf_ttmoe import DEFAULT_BASE_MODEL, TTLoRAConfig, TTLoRALinear, TTLoRAModel, load_base_model


def bench_layer(args) -> None:
    clock = layer_clock(args)
    rows = []
    for d in args.dims:
        for batch in args.batches:
            torch.manual_seed(0)
            base = nn.Linear(d, d, bias=False, device=args.device).requires_grad_(False)
            x = torch.randn(batch, args.seq, d, device=args.device)
            variants = {"base linear": base, "PEFT LoRA r=16": peft_lora_linear(copy.deepcopy(base)).to(args.device)}
            for impl in ("factors", "contraction", "reconstruction"):
                layer = TTLoRALinear(copy.deepcopy(base), tt_rank=5, forward_impl=impl)
                with torch.no_grad():  # trained-like, non-zero cores
                    for p in layer.ttlora_cores:
                        p.normal_(0, 0.1)
                variants[f"TT {impl}"] = layer

            def step(module, x=x):
                xi = x.requires_grad_(True) if args.input_grad else x
                loss = module(xi).square().mean()
                if loss.requires_grad:  # the frozen base alone has nothing to back-propagate to
                    loss.backward()
                module.zero_grad(set_to_none=True)

            med = interleaved({k: (lambda m=m: step(m)) for k, m in variants.items()}, args.reps, clock=clock)
            lora = med["PEFT LoRA r=16"]
            for name, t in med.items():
                rows.append({"d": d, "batch": batch, "variant": name, "median_s": t, "ratio_to_lora": t / lora})
            print(f"\nd={d} x=({batch}, {args.seq}, {d})")
            for name, t in med.items():
                print(f"| {name:18s} | {t * 1e3:9.1f} ms | {t / lora:5.2f}x LoRA |")
    save(layer_results_name("ttlora_layer", args), {"args": vars(args), "rows": rows})


def saved_activation_bytes(fn) -> int:
    """Bytes of the distinct tensors autograd saves for backward while `fn` runs (peak activation memory)."""
    seen, total = set(), 0

    def pack(t):
        nonlocal total
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if key not in seen:
            seen.add(key)
            total += key[1]
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def training_state_bytes(model) -> int:
    """Trainable parameters + their gradients + two AdamW moments."""
    return sum(p.numel() * p.element_size() * 4 for p in model.parameters() if p.requires_grad)


def bench_step(args) -> None:
    import peft

    torch.manual_seed(0)
    config = TTLoRAConfig(base_model_name_or_path=DEFAULT_BASE_MODEL, num_labels=2)
    models = {"TT-LoRA r=5": TTLoRAModel(config)}
    base = load_base_model(config)
    models["PEFT LoRA r=16"] = peft.get_peft_model(
        copy.deepcopy(base), peft.LoraConfig(r=16, lora_alpha=16, target_modules=["query", "value"],
                                             modules_to_save=["classifier"]))
    head_only = copy.deepcopy(base).requires_grad_(False)
    head_only.classifier.requires_grad_(True)
    models["head only"] = head_only
    models["full fine-tune"] = copy.deepcopy(base).requires_grad_(True)
    x = torch.randint(1000, 20000, (args.batch, args.seq))
    batch = {"input_ids": x, "attention_mask": torch.ones_like(x), "labels": torch.randint(0, 2, (args.batch,))}
    optimizers = {k: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
                  for k, m in models.items()}
    for m in models.values():
        m.train()

    def step(name):
        out = models[name](**batch)
        out.loss.backward()
        optimizers[name].step()
        optimizers[name].zero_grad(set_to_none=True)

    med = interleaved({k: (lambda k=k: step(k)) for k in models}, args.reps, clock=layer_clock(args))
    memory = {k: saved_activation_bytes(lambda m=m: m(**batch).loss) + training_state_bytes(m)
              for k, m in models.items()}
    trainable = {}
    for k, m in models.items():
        names = [n for n, p in m.named_parameters() if p.requires_grad]
        trainable[k] = {"adapter": sum(p.numel() for n, p in m.named_parameters()
                                       if p.requires_grad and ("ttlora_" in n or "lora_" in n)),
                        "all": sum(p.numel() for n, p in m.named_parameters() if n in names)}
    lora = med["PEFT LoRA r=16"]
    rows = [{"variant": k, "median_step_s": t, "ratio_to_lora": t / lora, "memory_bytes": memory[k],
             "memory_ratio_to_lora": memory[k] / memory["PEFT LoRA r=16"], "trainable": trainable[k]}
            for k, t in med.items()]
    print(f"\nMiniLM training step, batch {args.batch}, seq {args.seq}")
    print("| variant | step (median) | / LoRA | activations+train state | / LoRA | adapter params | all trainable |")
    for r in rows:
        print(f"| {r['variant']} | {r['median_step_s'] * 1e3:.0f} ms | {r['ratio_to_lora']:.3f} | "
              f"{r['memory_bytes'] / 2**20:.1f} MiB | {r['memory_ratio_to_lora']:.3f} | "
              f"{r['trainable']['adapter']:,} | {r['trainable']['all']:,} |")
    save(layer_results_name("ttlora_step", args), {"args": vars(args), "rows": rows})


@torch.no_grad()
def bench_merged(args) -> None:
    torch.manual_seed(0)
    config = TTLoRAConfig(base_model_name_or_path=DEFAULT_BASE_MODEL, num_labels=2)
    model = TTLoRAModel(config).eval()
    for n, p in model.named_parameters():
        if "ttlora_" in n:
            p.normal_(0, 0.1)
    base = load_base_model(config).eval()
    x = torch.randint(1000, 20000, (args.batch, args.seq))
    batch = {"input_ids": x, "attention_mask": torch.ones_like(x)}
    unmerged = interleaved({"unmerged": lambda: model(**batch)}, 2)["unmerged"]
    model.merge()
    med = interleaved({"base": lambda: base(**batch), "merged TT-LoRA": lambda: model(**batch)}, args.reps)
    ratio = med["merged TT-LoRA"] / med["base"]
    print(f"\nMiniLM inference, batch {args.batch}, seq {args.seq}: merged / base = {ratio:.3f} "
          f"(unmerged / base ≈ {unmerged / med['base']:.3f}, 2 reps)")
    save("ttlora_merged", {"args": vars(args), "median_s": med, "ratio": ratio,
                           "unmerged_over_base": unmerged / med["base"]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("layer")
    p.add_argument("--dims", type=int, nargs="+", default=[384, 2048])
    p.add_argument("--batches", type=int, nargs="+", default=[32])
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--input_grad", action="store_true", help="also back-propagate to the layer input")
    add_layer_timing_args(p)
    p.set_defaults(fn=bench_layer)
    p = sub.add_parser("step")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--cpu_time", action="store_true",
                   help="one intra-op thread, timed in CPU time (robust to other load on the machine)")
    p.set_defaults(fn=bench_step)
    p = sub.add_parser("merged")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--reps", type=int, default=15)
    p.set_defaults(fn=bench_merged)
    dispatch(parser)


if __name__ == "__main__":
    main()
