"""Benchmarks of TT-LoRA experts (issue 2). Interleaved repetitions, medians and ratios; never single absolute times.

    python -m benchmarks.bench_ttlora layer    # per-layer fwd+bwd: base, PEFT LoRA r=16, the 3 TT paths
    python -m benchmarks.bench_ttlora step     # MiniLM training step: TT-LoRA vs PEFT LoRA r=16 (+ head-only, full FT)
    python -m benchmarks.bench_ttlora merged   # merged TT-LoRA inference vs base model inference
    python -m benchmarks.bench_ttlora quality --glue_dir ../shared/data/glue  # SST-2 vs LoRA: lr on dev, 3 seeds

Results go to benchmarks/results/<name>.json and are printed as markdown tables.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from torch import nn

from benchmarks.bench_quality import MODULE_SETS
from benchmarks.common import (
    add_layer_timing_args,
    dispatch,
    interleaved,
    layer_clock,
    layer_results_name,
    mean_std,
    peft_lora_linear,
    resumed_rows,
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


@torch.no_grad()
def init_cores_from_random_matrix(model) -> None:
    """The published TT-LoRA code's initialisation, for comparison: the cores are the TT-SVD of a kaiming-uniform
    (a=√8) random matrix, so ΔW ≠ 0 at step 0 (our default makes ΔW = 0 exactly)."""
    import math

    from hf_ttmoe import TTLoRALinear, tt

    for layer in model.modules():
        if isinstance(layer, TTLoRALinear):
            weight = torch.empty_like(layer.base_layer.weight)
            torch.nn.init.kaiming_uniform_(weight, a=math.sqrt(8))
            cores = tt.tt_svd(weight, layer.in_modes, layer.out_modes, layer.ranks[1:-1])
            for param, core in zip(layer.ttlora_cores, cores, strict=True):
                param.copy_(core)


def bench_quality(args) -> None:
    """SST-2, TT-LoRA vs PEFT LoRA r=16, each at its own learning rate chosen on the dev split.

    Seed `--seeds[0]` trains every learning rate of each method's grid; the one with the best dev accuracy is kept
    and the other seeds train at it. Test rows (GLUE's validation set) are never used to choose.
    """
    import peft
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from hf_ttmoe import load_tokenizer
    from hf_ttmoe.training import DataArguments, compute_metrics, load_tokenized

    config = TTLoRAConfig(base_model_name_or_path=args.base_model, num_labels=2, task="sst2", alpha=args.tt_alpha,
                          tt_rank=args.tt_rank, target_modules=MODULE_SETS[args.modules]["tt"])
    tokenizer = load_tokenizer(config)
    data_args = DataArguments(task="sst2", glue_dir=args.glue_dir, max_length=64,
                              max_train_samples=args.max_train_samples, max_eval_samples=args.max_dev_samples)
    splits, _ = load_tokenized(data_args, tokenizer)
    on = "" if args.modules == "qv" else f", {args.modules} linears"
    methods = {f"TT-LoRA r={args.tt_rank}{on}": args.tt_lrs, f"PEFT LoRA r=16{on}": args.lora_lrs}
    methods = {m: lrs for m, lrs in methods.items() if m.split()[0] in args.methods}
    rows = resumed_rows(args, ("resume", "tt_lrs", "lora_lrs", "seeds")) if args.resume else []

    def run(method: str, lr: float, seed: int) -> dict:
        done = [r for r in rows if (r["method"], r["lr"], r["seed"]) == (method, lr, seed)]
        if done:
            return done[0]
        torch.manual_seed(seed)
        if method.startswith("TT"):
            model = TTLoRAModel(config)
            if args.tt_init == "svd_of_random":
                init_cores_from_random_matrix(model)
        else:
            model = peft.get_peft_model(load_base_model(config), peft.LoraConfig(
                r=16, lora_alpha=16, target_modules=MODULE_SETS[args.modules]["peft"], modules_to_save=["classifier"]))
        training_args = TrainingArguments(
            output_dir=f"runs/bench_quality/{method}-{lr}-{seed}", num_train_epochs=args.epochs, learning_rate=lr,
            per_device_train_batch_size=32, per_device_eval_batch_size=128, save_strategy="no",
            report_to=[], use_cpu=args.device == "cpu", seed=seed, logging_steps=50, warmup_steps=0.06,
            weight_decay=0.0)
        trainer = Trainer(model=model, args=training_args, train_dataset=splits["train"],
                          data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=compute_metrics)
        t0 = time.perf_counter()
        trainer.train()
        row = {"method": method, "seed": seed, "lr": lr, "train_s": time.perf_counter() - t0}
        for split, prefix in (("validation", "dev"), ("test", "test")):
            metrics = trainer.evaluate(splits[split], metric_key_prefix=prefix)
            row.update({f"{prefix}_{k}": metrics[f"{prefix}_{k}"] for k in ("accuracy", "f1", "macro_f1")})
        rows.append(row)
        print(row)
        save(args.name, {"args": vars(args), "rows": rows})
        return row

    chosen = {}
    for method, lrs in methods.items():
        sweep = [run(method, lr, args.seeds[0]) for lr in lrs]
        chosen[method] = max(sweep, key=lambda r: r["dev_accuracy"])["lr"]
    final = {m: [run(m, lr, seed) for seed in args.seeds] for m, lr in chosen.items()}
    save(args.name, {"args": vars(args), "rows": rows, "chosen_lr": chosen})

    print(f"\nLearning rate chosen on the dev split ({len(splits['validation'])} rows), seed {args.seeds[0]}:")
    print("| method | " + " | ".join(f"lr {lr:g}" for lr in sorted({r['lr'] for r in rows})) + " |")
    for method in methods:
        cells = [next((f"{100 * r['dev_accuracy']:.2f}" for r in rows if (r["method"], r["lr"], r["seed"]) ==
                       (method, lr, args.seeds[0])), "—") for lr in sorted({r["lr"] for r in rows})]
        print(f"| {method} | {' | '.join(cells)} |")
    print(f"\nSST-2 test ({len(splits['test'])} rows), MiniLM, {args.epochs} epoch(s) on {args.max_train_samples} "
          f"training rows, seeds {args.seeds}")
    print("| method | lr | accuracy | F1 | macro-F1 |")
    for method, rs in final.items():
        cells = [mean_std([r[f"test_{k}"] for r in rs]) for k in ("accuracy", "f1", "macro_f1")]
        print(f"| {method} | {chosen[method]:g} | {' | '.join(cells)} |")


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
    p = sub.add_parser("quality")
    p.add_argument("--glue_dir", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--max_train_samples", type=int, default=8000)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--max_dev_samples", type=int, default=2000, help="dev rows used to choose the learning rate")
    p.add_argument("--tt_lrs", type=float, nargs="+", default=[5e-3, 1e-2, 2e-2])
    p.add_argument("--lora_lrs", type=float, nargs="+", default=[5e-4, 1e-3, 2e-3])
    p.add_argument("--tt_rank", type=int, default=5, help="TT rank of the TT-LoRA cores")
    p.add_argument("--tt_init", default="zero", choices=["zero", "svd_of_random"],
                   help="zero: ΔW = 0 at step 0 (ours); svd_of_random: the published code's TT-SVD of a random matrix")
    p.add_argument("--tt_alpha", type=float, default=16.0, help="TT-LoRA scale numerator (ΔW · alpha / rank)")
    p.add_argument("--methods", nargs="+", default=["TT-LoRA", "PEFT"], choices=["TT-LoRA", "PEFT"])
    p.add_argument("--modules", default="qv", choices=sorted(MODULE_SETS),
                   help="qv: query/value; all: every linear of every layer (both methods)")
    p.add_argument("--base_model", default=DEFAULT_BASE_MODEL, help="HF id or local folder of the base model")
    p.add_argument("--device", default="cpu", help="cpu, or cuda where a GPU is present")
    p.add_argument("--name", default="ttlora_quality", help="results file benchmarks/results/<name>.json")
    p.add_argument("--resume", action="store_true", help="keep the rows of an earlier run with the same settings")
    p.set_defaults(fn=bench_quality)
    dispatch(parser)


if __name__ == "__main__":
    main()
