"""Adapter quality side by side, one tuning protocol for every method (issues 13 and 15).

    python -m benchmarks.bench_quality --task sst2 --glue_dir ../shared/data/glue --methods tt lora \
        --modules all --max_train_samples 8000 --name quality_sst2_all
    python -m benchmarks.bench_quality --task rte --tasks_dir ../shared/data/tasks --methods moe lora_budget \
        --early_stopping 3 --max_epochs 10 --name quality_rte_moe

The protocol, alike for every method: each method trains at every learning rate of its grid with the first seed
(widened past an edge while the edge is best, `--extend_grid`); the one with the best dev metric (`--metric`, on the
task's validation rows, capped at `--max_dev_samples`; the test rows are never used to choose) is kept, and the
other seeds train at it. The budget is either fixed (`--epochs` over `--max_train_samples` rows) or "to
convergence": `--early_stopping P` evaluates dev every `--eval_steps` and stops after P evaluations without
improvement of the dev metric (or of the dev loss, `--stop_on loss`: a metric can sit flat at the start, as CoLA's
MCC does at the majority class), at most `--max_epochs`, keeping the best checkpoint (Trainer's
`EarlyStoppingCallback`). Tasks come through `hf_ttmoe.training.load_data`: embedded, GLUE (`--glue_dir`), or task
folders of user files (`--tasks_dir`, `../shared/data/tasks`). Rows are saved after every run (`--resume` continues a
run), the tables go to `benchmarks/results/<name>.md`.

Methods (`--methods`; parameter counts printed per run):
    tt            TT-LoRA (`--tt_rank`, `--tt_alpha`) on `--modules`
    tt_stack      one tensor train over the stack of `--modules` across layers (`benchmarks/stacked_tt.py`: shared U, V
                  of rank `--stack_rank` per module name or shape, `--stack_share`, an r × r core per layer)
    tt_mpo        a TT-matrix per matrix (`benchmarks/mpo_tt.py`: each core one input and one output mode,
                  `--mpo_modes` on both sides or `--mpo_shapes` per module name, inner ranks `--mpo_ranks`)
    svd_core      a trainable r × r core between the weight's own frozen singular bases per matrix (LoRA-XS,
                  `benchmarks/svd_core.py`: its `--svd_rank` largest singular pairs)
    lora          PEFT LoRA r=16 (`--lora_rank`, alpha = rank) on `--modules`
    moe           dense MoE-LoRA, the library's defaults (8 experts of rank 4 on both FFN linears, dense gate)
    moe_top2      the same with top-2 gating
    moe_nobal     the same without the load-balancing loss (coefficient 0)
    lora_budget   PEFT LoRA on the FFN linears with (nearest) as many trainable parameters as `moe` (MiniLM: rank 36)
    lora_rank     PEFT LoRA on the FFN linears of the same total rank as `moe` (E·r = 32)
    head          the task head only (the floor)
    full          full fine-tuning (the ceiling)
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch

from benchmarks.common import RESULTS, mean_std, resumed_rows, save
from benchmarks.lr_grid import tune_lr
from benchmarks.mpo_tt import mpo_tt_
from benchmarks.stacked_tt import SHARES, stack_tt_
from benchmarks.svd_core import svd_core_
from hf_ttmoe import (
    DEFAULT_BASE_MODEL,
    DenseMoELoRAConfig,
    DenseMoELoRAModel,
    TTLoRAConfig,
    TTLoRAModel,
    load_base_model,
    load_tokenizer,
)
from hf_ttmoe.adapter import HEAD_MODULE_NAMES
from hf_ttmoe.architectures import default_targets, layer_linears, path_in_layer, target_names
from hf_ttmoe.training import ADAPTER_RECIPE
from hf_ttmoe.ttlora.stacked import LAYOUTS

# Which linears "tt" and "lora" adapt (`--modules`): the architecture's query/value (TT-LoRA's default), only one of
# them ("q", "v": where a budget buys a higher rank on fewer matrices), or every linear inside the transformer layers
# (BERT's pooler.dense, outside them, is left alone as TT-LoRA leaves it).
# "lora_budget" / "lora_rank" adapt what dense MoE-LoRA adapts: the architecture's feed-forward linears.
MODULE_SETS = ("qv", "q", "v", "all")
DEFAULT_LRS = {"tt": [2e-3, 5e-3, 1e-2], "tt_stack": [2e-3, 5e-3, 1e-2], "tt_mpo": [2e-3, 5e-3, 1e-2],
               "svd_core": [5e-3, 1e-2, 2e-2],
               "lora": [5e-4, 1e-3, 2e-3], "moe": [5e-4, 1e-3, 2e-3],
               "moe_top2": [5e-4, 1e-3, 2e-3], "moe_nobal": [5e-4, 1e-3, 2e-3], "lora_budget": [5e-4, 1e-3, 2e-3],
               "lora_rank": [5e-4, 1e-3, 2e-3], "head": [1e-3, 3e-3, 1e-2], "full": [2e-5, 5e-5, 1e-4]}
METRICS = ("accuracy", "f1", "macro_f1", "mcc")
LENGTH_BUCKETS = (8, 16, 32)  # `--by_length`: rows of ≤ 8, 9-16, 17-32 and > 32 tokens (special tokens included)
TT_INITS = {"zero": "gaussian", "orthogonal": "orthogonal"}  # --tt_init: TTLoRAConfig.init


def build(method: str, args, label_names: list[str], pad_token_id):
    """A fresh model of `method` for the task's labels; the callbacks its training needs."""
    import peft

    from trainer_callbacks import BalanceLossCallback

    labels = {"id2label": dict(enumerate(label_names)), "label2id": {n: i for i, n in enumerate(label_names)}}
    common = dict(base_model_name_or_path=args.base_model, gguf_file=args.gguf_file, pad_token_id=pad_token_id,
                  task=args.task, **labels)
    base = load_base_model(TTLoRAConfig(num_labels=len(label_names), **common))
    model_type = base.config.model_type
    if method == "tt":
        return TTLoRAModel(TTLoRAConfig(tt_rank=args.tt_rank, alpha=args.tt_alpha, tt_shapes=args.tt_shapes,
                                        init=TT_INITS.get(args.tt_init, "gaussian"), layout=args.tt_layout,
                                        target_modules=module_set(base, args.modules), **common), base), []
    moe_config = DenseMoELoRAConfig(num_experts_per_tok=2 if method == "moe_top2" else None,
                                    router_aux_loss_coef=0.0 if method == "moe_nobal" else 0.05, **common)
    if method.startswith("moe"):
        return DenseMoELoRAModel(moe_config, base), [BalanceLossCallback()]
    head = next(name for name in HEAD_MODULE_NAMES if hasattr(base, name))
    if method in ("full", "head", "tt_stack", "tt_mpo", "svd_core"):
        base.requires_grad_(method == "full")
        getattr(base, head).requires_grad_(True)
        paths = target_names(base, module_set(base, args.modules))  # what the prototypes below adapt
        if method == "tt_mpo":
            if unknown := sorted(set(args.mpo_shapes or {}) - {p.rsplit(".", 1)[-1] for p in paths}):
                raise ValueError(f"--mpo_shapes names {unknown}, not among the adapted modules "
                                 f"{sorted({p.rsplit('.', 1)[-1] for p in paths})}")
            for path in paths:
                in_modes, out_modes = (args.mpo_shapes or {}).get(path.rsplit(".", 1)[-1], [args.mpo_modes] * 2)
                mpo_tt_(base, [path], in_modes, out_modes, args.mpo_ranks, args.tt_alpha)
        if method == "svd_core":
            svd_core_(base, paths, args.svd_rank, args.tt_alpha)
        if method == "tt_stack":
            stack_tt_(base, paths, args.stack_rank, args.tt_alpha, args.stack_share)
        return base, []
    if method == "lora":
        rank, targets = args.lora_rank, target_names(base, module_set(base, args.modules))
    else:  # MoE-LoRA's linears, at its trainable-parameter count or at its total rank E·r
        targets = target_names(base, default_targets(base, model_type, "feed_forward"))
        total_rank = moe_config.num_experts * moe_config.lora_rank
        rank = budget_rank(base, targets, moe_config) if method == "lora_budget" else total_rank
    return peft.get_peft_model(base, peft.LoraConfig(r=rank, lora_alpha=rank, target_modules=targets,
                                                     modules_to_save=[head])), []


def int_list(text: str) -> list[int]:
    """`6,4,4,4` -> [6, 4, 4, 4] (a ValueError otherwise, which argparse reports with the flag and value)."""
    return [int(v) for v in text.split(",")]


def tt_rank_arg(text: str) -> int | list[int]:
    """`--tt_rank`: "5" (every bond) or "4,4,5,10,5,4,4" (each inner bond of the chain)."""
    ranks = int_list(text)
    return ranks[0] if len(ranks) == 1 else ranks


def module_set(base, modules: str) -> list[str]:
    """`--modules` as library targets: "qv" = the architecture's attention targets (query, value), "q" / "v" = one of
    them, "all" = the path inside its layer of every linear in the transformer layers."""
    if modules == "all":
        return sorted({path_in_layer(name) for name in layer_linears(base)})
    query, value = default_targets(base, base.config.model_type, "attention")
    return {"qv": [query, value], "q": [query], "v": [value]}[modules]


def budget_rank(base, targets: list[str], moe: DenseMoELoRAConfig) -> int:
    """The LoRA rank on `targets` whose trainable parameters are nearest MoE-LoRA's there: per linear, E experts of
    rank r (E·r·(in + out)) and the gate (in · E), against LoRA's rank·(in + out). 36 for MiniLM's FFN (exact)."""
    linears = [base.get_submodule(name) for name in targets]
    moe_params = sum(moe.num_experts * (moe.lora_rank * (m.in_features + m.out_features) + m.in_features)
                     for m in linears)
    return round(moe_params / sum(m.in_features + m.out_features for m in linears))


@torch.no_grad()
def init_cores_from_random_matrix(model) -> None:
    """The published TT-LoRA code's initialisation, for comparison (`--tt_init svd_of_random`): the cores are the
    TT-SVD of a kaiming-uniform (a=√8) random matrix, so ΔW ≠ 0 at step 0 (our default makes ΔW = 0 exactly)."""
    from hf_ttmoe import TTLoRALinear, tt

    for layer in model.modules():
        if isinstance(layer, TTLoRALinear):
            weight = torch.empty_like(layer.base_layer.weight)
            torch.nn.init.kaiming_uniform_(weight, a=math.sqrt(8))
            cores = tt.tt_svd(weight, layer.in_modes, layer.out_modes, layer.ranks[1:-1])
            for param, core in zip(layer.ttlora_cores, cores, strict=True):
                param.copy_(core)


def init_cores_from_gradient(model, dataset, collator, rows: int = 256, batch_size: int = 32, seed: int = 0) -> None:
    """Gradient-aligned cores (`--tt_init gradient`, after LoRA-GA / LoRA-One): the full gradient `G = ∂L/∂W` of each
    adapted weight is accumulated over `rows` training rows (eval mode, ΔW = 0, the head as drawn); the cores but the
    last are the TT-SVD of `G` (orthonormal unfoldings, scaled with the gains of `init="orthogonal"`), the last core
    stays zero. ΔW = 0 still, and the zero core's first gradient is `G` projected on the best TT subspace of this rank,
    where random cores project it on a random one."""
    from hf_ttmoe import TTLoRALinear, tt

    layers = [m for m in model.modules() if isinstance(m, TTLoRALinear)]
    weights = [layer.base_layer.weight for layer in layers]
    for weight in weights:
        weight.requires_grad_(True)
    training = model.training
    model.eval()
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:rows].tolist()
    keep = [c for c in dataset.column_names if c in ("input_ids", "attention_mask", "token_type_ids", "labels")]
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        batch = collator([{c: dataset[i][c] for c in keep} for i in chunk])
        (model(**batch).loss * (len(chunk) / len(order))).backward()
    model.train(training)
    with torch.no_grad():
        for layer, weight in zip(layers, weights, strict=True):
            gains = tt.isometric_gains(layer.in_modes, layer.out_modes)
            cores = tt.tt_svd(weight.grad, layer.in_modes, layer.out_modes, layer.ranks[1:-1])
            for param, core, gain in zip(layer.ttlora_cores[:-1], cores[:-1], gains, strict=True):
                param.copy_(core * gain)
            layer.ttlora_cores[-1].zero_()
    for weight in weights:
        weight.requires_grad_(False)
    model.zero_grad(set_to_none=True)


class MaskedMeanPooler(torch.nn.Module):
    """Stands in for BERT's pooler (`tanh(W h_CLS)`): the mean of the last hidden states over real tokens. The
    attention mask reaches it through a pre-hook on the encoder (BERT calls its pooler with the hidden states only)."""

    def __init__(self):
        super().__init__()
        self.mask = None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:  # (B, T, H) -> (B, H)
        mask = self.mask.unsqueeze(-1).to(hidden_states.dtype)  # (B, T, 1)
        return (hidden_states * mask).sum(1) / mask.sum(1).clamp(min=1)


def mean_pooling_(model) -> None:
    """Replace the BERT encoder's pooler inside `model` by `MaskedMeanPooler` (for `--pooling mean`)."""
    encoder = next(m for m in model.modules() if getattr(m, "pooler", None) is not None)
    pooler = encoder.pooler = MaskedMeanPooler()

    def keep_mask(module, args, kwargs):
        pooler.mask = kwargs["attention_mask"]

    encoder.register_forward_pre_hook(keep_mask, with_kwargs=True)


def is_head(name: str) -> bool:
    """Whether a parameter belongs to the task head."""
    return any(head in name for head in HEAD_MODULE_NAMES)


def adapter_parameters(model) -> int:
    """Trainable parameters outside the task head."""
    return sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and not is_head(n))


def watched_quantity(args) -> str:
    """What early stopping watches: the dev `--metric`, or "loss" (`--stop_on loss`)."""
    return args.metric if args.stop_on == "metric" else "loss"


def budget_arguments(args) -> tuple[dict, list]:
    """`TrainingArguments` fields for the run's budget, and the callbacks it needs: a fixed `--epochs`, or early
    stopping, which evaluates dev every `--eval_steps`, keeps the best checkpoint and stops after `--early_stopping`
    evaluations without improvement of the dev metric, or of the dev loss (`--stop_on loss`)."""
    if not args.early_stopping:
        return dict(num_train_epochs=args.epochs, save_strategy="no"), []
    from transformers import EarlyStoppingCallback

    watched = watched_quantity(args)
    return (dict(num_train_epochs=args.max_epochs, eval_strategy="steps", eval_steps=args.eval_steps,
                 save_strategy="steps", save_steps=args.eval_steps, save_total_limit=1, load_best_model_at_end=True,
                 metric_for_best_model=watched, greater_is_better=watched != "loss"),
            [EarlyStoppingCallback(early_stopping_patience=args.early_stopping)])


def param_groups(model, lr: float, args) -> list[dict] | None:
    """Optimizer groups when a learning rate differs from the method's `lr`: the task head at `--head_lr`, TT-LoRA's
    zero-initialised last cores at `lr · --zero_core_lr_ratio`, the rest at `lr`; None when none differs."""
    from hf_ttmoe import TTLoRALinear

    if args.head_lr is None and args.zero_core_lr_ratio == 1:
        return None
    zero_cores = {id(m.ttlora_cores[-1]) for m in model.modules() if isinstance(m, TTLoRALinear)}
    if not zero_cores and args.zero_core_lr_ratio != 1:
        raise ValueError(f"--zero_core_lr_ratio {args.zero_core_lr_ratio} needs TT-LoRA cores (the tt method)")
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in params if is_head(n)], "lr": lr if args.head_lr is None else args.head_lr},
              {"params": [p for _, p in params if id(p) in zero_cores], "lr": lr * args.zero_core_lr_ratio},
              {"params": [p for n, p in params if not is_head(n) and id(p) not in zero_cores], "lr": lr}]
    return [g for g in groups if g["params"]]


def make_optimizer(model, lr: float, args) -> torch.optim.Optimizer | None:
    """AdamW as Trainer builds it, over `param_groups` when a rate differs, or around `create_riemannian_optimizer`
    with `--tt_precondition`; None when Trainer's own does."""
    groups = param_groups(model, lr, args)
    if args.tt_precondition is not None:
        from hf_ttmoe import create_riemannian_optimizer

        return create_riemannian_optimizer(model, torch.optim.AdamW, lr=lr, reg=args.tt_precondition,
                                           mode=args.tt_precondition_mode, params=groups,
                                           weight_decay=args.weight_decay)
    return torch.optim.AdamW(groups, weight_decay=args.weight_decay) if groups else None


def train_one(method: str, lr: float, seed: int, args, splits, label_names, tokenizer) -> dict:
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from hf_ttmoe.training import compute_metrics

    torch.manual_seed(seed)
    model, callbacks = build(method, args, label_names, tokenizer.pad_token_id)
    if method == "tt" and args.tt_init == "svd_of_random":
        init_cores_from_random_matrix(model)
    if method == "tt" and args.tt_init == "gradient":
        init_cores_from_gradient(model, splits["train"], DataCollatorWithPadding(tokenizer), seed=seed)
    if args.pooling == "mean":
        mean_pooling_(model)
    run_dir = f"runs/bench_quality/{args.name}/{method}-{lr:g}-{seed}"
    budget, stopping = budget_arguments(args)
    callbacks = [*callbacks, *stopping]
    training_args = TrainingArguments(
        output_dir=run_dir, learning_rate=lr, per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=128, report_to=[], use_cpu=args.device == "cpu", seed=seed, logging_steps=50,
        warmup_steps=args.warmup, weight_decay=args.weight_decay, disable_tqdm=True,
        train_sampling_strategy="group_by_length" if args.group_by_length else "random", **budget)
    optimizer = make_optimizer(model, lr, args)
    trainer = Trainer(model=model, args=training_args, train_dataset=splits["train"],
                      eval_dataset=splits["validation"], data_collator=DataCollatorWithPadding(tokenizer),
                      compute_metrics=compute_metrics, callbacks=callbacks, optimizers=(optimizer, None))
    t0 = time.perf_counter()
    trainer.train()
    row = {"method": method, "lr": lr, "seed": seed, "train_s": round(time.perf_counter() - t0, 1),
           "steps": trainer.state.global_step, "adapter_params": adapter_parameters(model)}
    if args.early_stopping:  # the step of the dev-best checkpoint, the one evaluated below
        row["best_step"] = trainer.state.best_global_step
    for split, prefix in (("validation", "dev"), ("test", "test")):
        out = trainer.predict(splits[split], metric_key_prefix=prefix)  # metrics and predictions of one pass
        row.update({f"{prefix}_{k}": out.metrics[f"{prefix}_{k}"] for k in METRICS})
        if args.by_length:
            row[f"{prefix}_by_length"] = correct_by_length(out, splits[split])
    loads = [h for h in trainer.state.log_history if "expert_load/0" in h]
    if loads:  # the last logged per-expert load fractions (averaged over layers)
        row["expert_load"] = [v for k, v in sorted(loads[-1].items()) if k.startswith("expert_load/")]
    return row


def length_bucket(n_tokens: int) -> str:
    """The `LENGTH_BUCKETS` label of a row of `n_tokens` tokens: "≤8", "≤16", "≤32" or ">32"."""
    bound = next((b for b in LENGTH_BUCKETS if n_tokens <= b), None)
    return f"≤{bound}" if bound else f">{LENGTH_BUCKETS[-1]}"


def bucket_order(label: str) -> tuple[bool, int]:
    """Sort key of a `length_bucket` label: shortest first, "> N" last."""
    return label[0] == ">", int(label[1:])


def correct_by_length(out, dataset) -> dict[str, list[int]]:
    """Per length bucket of `dataset`'s rows: [right predictions, rows] in `out`, `Trainer.predict`'s output on it."""
    logits = out.predictions[0] if isinstance(out.predictions, tuple) else out.predictions
    counts = {}
    for ids, label, pred in zip(dataset["input_ids"], out.label_ids, logits.argmax(-1), strict=True):
        bucket = counts.setdefault(length_bucket(len(ids)), [0, 0])
        bucket[0] += int(label == pred)
        bucket[1] += 1
    return {label: counts[label] for label in sorted(counts, key=bucket_order)}


def length_table(args, rows: list[dict], chosen: dict[str, float]) -> list[str]:
    """Dev and test accuracy per length bucket (`--by_length`), pooled over the chosen rate's seeds."""
    out = []
    for prefix in ("dev", "test"):
        picked = {m: [r for r in rows if r["method"] == m and r["lr"] == chosen.get(m) and r["seed"] in args.seeds
                      and f"{prefix}_by_length" in r] for m in args.methods}
        buckets = sorted({b for rs in picked.values() for r in rs for b in r[f"{prefix}_by_length"]}, key=bucket_order)
        if not buckets:
            continue
        first = next(rs for rs in picked.values() if rs)[0][f"{prefix}_by_length"]
        out += ["", f"{prefix.capitalize()} accuracy by length in tokens, rows pooled over the seeds (%; rows per "
                f"seed and bucket: {', '.join(f'{b} {first[b][1]}' for b in buckets if b in first)}):", "",
                "| method | " + " | ".join(buckets) + " |", "|---|" + "---:|" * len(buckets)]
        for method, rs in picked.items():
            if rs:  # [right, rows] per bucket, summed over the seeds
                pooled = [[sum(r[f"{prefix}_by_length"].get(b, [0, 0])[i] for r in rs) for i in (0, 1)]
                          for b in buckets]
                out.append(f"| {method} | " + " | ".join(f"{100 * right / n:.2f}" if n else "—" for right, n in pooled)
                           + " |")
    return out


def tables(args, rows: list[dict], chosen: dict[str, float]) -> str:
    seed0 = args.seeds[0]
    lrs = sorted({r["lr"] for r in rows})
    out = [f"Dev {args.metric} (seed {seed0}) per learning rate; **bold** = chosen:", "",
           "| method | " + " | ".join(f"{lr:g}" for lr in lrs) + " |", "|---|" + "---:|" * len(lrs)]
    for method in args.methods:
        cells = []
        for lr in lrs:
            r = next((r for r in rows if (r["method"], r["lr"], r["seed"]) == (method, lr, seed0)), None)
            cell = "—" if r is None else f"{100 * r[f'dev_{args.metric}']:.2f}"
            cells.append(f"**{cell}**" if r is not None and chosen.get(method) == lr else cell)
        out.append(f"| {method} | {' | '.join(cells)} |")
    out += ["", f"Test, mean ± std over seeds {args.seeds} (%):", "",
            "| method | adapter params | lr | steps | " + " | ".join(METRICS) + " | seeds |",
            "|---|---:|---:|---:|" + "---:|" * len(METRICS) + "---:|"]
    for method in args.methods:
        rs = [r for r in rows if r["method"] == method and r["lr"] == chosen.get(method) and r["seed"] in args.seeds]
        if rs:
            steps = f"{statistics.median(r['steps'] for r in rs):g}"
            if all(r.get("best_step") for r in rs):
                steps += f" (best {statistics.median(r['best_step'] for r in rs):g})"
            out.append(f"| {method} | {rs[0]['adapter_params']:,} | {chosen[method]:g} | {steps} | "
                       + " | ".join(mean_std([r[f"test_{k}"] for r in rs]) for k in METRICS) + f" | {len(rs)} |")
    return "\n".join(out + length_table(args, rows, chosen))


def arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True, help="task name or folder (see hf_ttmoe.training.DataArguments)")
    parser.add_argument("--glue_dir")
    parser.add_argument("--tasks_dir")
    parser.add_argument("--methods", nargs="+", required=True, choices=sorted(DEFAULT_LRS))
    parser.add_argument("--lrs", nargs="+", default=[], metavar="METHOD=LR,LR",
                        help="learning-rate grid per method, e.g. tt=5e-3,1e-2 (default: DEFAULT_LRS)")
    parser.add_argument("--modules", default="qv", choices=MODULE_SETS, help="linears tt and lora adapt")
    parser.add_argument("--tt_rank", type=tt_rank_arg, default=5,
                        help="TT rank: one int, or the chain's inner ranks comma-separated (e.g. 4,4,5,10,5,4,4)")
    parser.add_argument("--tt_layout", default="chain", choices=LAYOUTS,
                        help="tt: a tensor train per matrix, or the library's stacked layout (one across the layers)")
    parser.add_argument("--stack_rank", type=int, default=4, help="rank r of tt_stack (its U, V and r x r cores)")
    parser.add_argument("--stack_share", default="module", choices=SHARES,
                        help="tt_stack: one U, V per module name (query, value) or per matrix shape")
    parser.add_argument("--mpo_modes", type=int_list, default=[6, 4, 4, 4],
                        help="tt_mpo: the modes of each side, comma-separated (their product is the matrix side)")
    parser.add_argument("--mpo_ranks", type=int_list, default=[3, 4, 3], help="tt_mpo: the inner ranks")
    parser.add_argument("--mpo_shapes", type=json.loads, help="tt_mpo: input and output modes per module name, JSON, "
                        'e.g. {"q_proj": [[6, 4, 4, 6], [6, 4, 4, 6]], "v_proj": [[6, 4, 4, 6], [4, 4, 3, 4]]} '
                        "(modules not named use --mpo_modes on both sides)")
    parser.add_argument("--svd_rank", type=int, default=24,
                        help="svd_core: r, the singular pairs kept (r² trainable parameters a matrix)")
    parser.add_argument("--lora_rank", type=int, default=16, help="rank of the lora method (alpha = rank)")
    parser.add_argument("--tt_alpha", type=float, default=16.0)
    parser.add_argument("--tt_init", default="zero", choices=[*TT_INITS, "svd_of_random", "gradient"],
                        help="ΔW = 0 at step 0 with Gaussian (zero) or orthogonal cores (TTLoRAConfig.init);"
                        " svd_of_random: the published code's TT-SVD of a random matrix; gradient: ΔW = 0 with the"
                        " cores the TT-SVD of the weights' gradient on 256 training rows")
    parser.add_argument("--tt_shapes", type=json.loads, help='TT layout per module, JSON as TTLoRAConfig.tt_shapes, '
                        'e.g. {"query": [[16, 24], [24, 16]], "value": [[16, 24], [24, 16]]} (default: automatic)')
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--metric", default="accuracy", choices=METRICS, help="dev metric that chooses the lr")
    parser.add_argument("--max_train_samples", type=int)
    parser.add_argument("--max_dev_samples", type=int, default=2000, help="validation rows (choose lr, stop early)")
    parser.add_argument("--max_test_samples", type=int)
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--group_by_length", action="store_true",
                        help="batches of similar lengths (Trainer's LengthGroupedSampler, random groups of 50 "
                        "batches sorted by length): less padding on tasks with a long tail, such as RTE's pairs")
    parser.add_argument("--batch_size", type=int, default=ADAPTER_RECIPE["per_device_train_batch_size"])
    parser.add_argument("--epochs", type=float, default=1.0, help="fixed budget (without --early_stopping)")
    parser.add_argument("--early_stopping", type=int, default=0, help="patience in evaluations; 0 = fixed budget")
    parser.add_argument("--eval_steps", type=int, default=100)
    parser.add_argument("--max_epochs", type=float, default=10.0)
    parser.add_argument("--stop_on", default="metric", choices=["metric", "loss"],
                        help="what early stopping watches and keeps the best of: the dev `--metric`, or the dev loss, "
                        "which moves while a metric is flat (CoLA's MCC is 0 until a model leaves the majority class, "
                        "so patience on it can stop a run before it starts)")
    parser.add_argument("--warmup", type=float, default=ADAPTER_RECIPE["warmup_steps"],
                        help="warm-up steps, or a fraction of them below 1")
    parser.add_argument("--weight_decay", type=float, default=0.0)
    parser.add_argument("--head_lr", type=float, help="learning rate of the task head (default: the method's lr)")
    parser.add_argument("--zero_core_lr_ratio", type=float, default=1.0,
                        help="tt: the zero-initialised last core trains at this multiple of the lr (LoRA+'s rule for "
                        "LoRA's B, Hayou et al. 2024)")
    parser.add_argument("--tt_precondition", type=float, metavar="REG",
                        help="tt: step the cores in their train's scaled metric (hf_ttmoe.create_riemannian_optimizer "
                        "around AdamW, damping REG; the TT form of Riemannian preconditioned LoRA)")
    parser.add_argument("--tt_precondition_mode", default="gradient", choices=["gradient", "gauge"],
                        help="with --tt_precondition: precondition the gradient (PEFT's form), or run AdamW in the "
                        "train's orthonormal gauge (see create_riemannian_optimizer)")
    parser.add_argument("--pooling", default="model", choices=["model", "mean"],
                        help="model: the base's own head input (BERT: pooler over [CLS]); mean: masked mean of the "
                        "last hidden states (BERT encoders)")
    parser.add_argument("--by_length", action="store_true",
                        help="also record dev and test accuracy per input length bucket (`LENGTH_BUCKETS`)")
    parser.add_argument("--base_model", default=DEFAULT_BASE_MODEL)
    parser.add_argument("--gguf_file")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--name", required=True, help="results file benchmarks/results/<name>.json and .md")
    parser.add_argument("--extend_grid", type=int, default=2, metavar="N",
                        help="while the best dev rate is at an edge of the grid, try the next one on the 1-2-5 ladder "
                             "past it, at most N per side (0: the grid as given)")
    parser.add_argument("--resume", action="store_true", help="keep the rows of an earlier run with the same settings")
    return parser


def main() -> None:
    parser = arg_parser()
    args = parser.parse_args()
    grids = {m: DEFAULT_LRS[m] for m in args.methods}
    for item in args.lrs:
        method, _, values = item.partition("=")
        if method not in grids or not values:
            parser.error(f"--lrs {item!r}: expected METHOD=LR[,LR...] with METHOD one of {sorted(grids)}")
        grids[method] = [float(v) for v in values.split(",")]
    args.grids = grids
    if args.tt_layout == "stacked" and args.tt_init != "zero":
        parser.error(f"--tt_init {args.tt_init} applies to chains; --tt_layout stacked draws its own cores.")
    for flag, unset in (("zero_core_lr_ratio", 1), ("tt_precondition", None)):  # options of the chains' cores
        if getattr(args, flag) != unset and (args.tt_layout == "stacked" or args.methods != ["tt"]):
            parser.error(f"--{flag} {getattr(args, flag)} applies to the tt method's chains alone; "
                         f"got --methods {' '.join(args.methods)} --tt_layout {args.tt_layout}.")
    if args.threads:
        torch.set_num_threads(args.threads)

    from hf_ttmoe.data import stratified_cap, tokenize_task
    from hf_ttmoe.training import DataArguments, load_data

    tokenizer = load_tokenizer(TTLoRAConfig(base_model_name_or_path=args.base_model, gguf_file=args.gguf_file))
    data = DataArguments(task=args.task, glue_dir=args.glue_dir, tasks_dir=args.tasks_dir,
                         max_train_samples=args.max_train_samples)
    raw = load_data(data)  # train capped (stratified, deterministic); dev and test capped apart:
    label_names = raw["train"].features["label"].names
    raw["validation"] = stratified_cap(raw["validation"], args.max_dev_samples, data.split_seed)
    raw["test"] = stratified_cap(raw["test"], args.max_test_samples, data.split_seed)
    splits = tokenize_task(raw, tokenizer, max_length=args.max_length)
    print(f"{args.task}: {len(splits['train'])} train, {len(splits['validation'])} dev, {len(splits['test'])} test "
          f"rows; labels {label_names}")

    ignore = ("resume", "methods", "lrs", "grids", "seeds", "threads", "extend_grid")
    defaults = {k: parser.get_default(k) for k in vars(args)}
    rows = resumed_rows(args, ignore, defaults) if args.resume else []

    def run(method, lr, seed):
        done = [r for r in rows if (r["method"], r["lr"], r["seed"]) == (method, lr, seed)]
        if done:
            return done[0]
        row = train_one(method, lr, seed, args, splits, label_names, tokenizer)
        rows.append(row)
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
        save(args.name, {"args": vars(args), "rows": rows})
        return row

    chosen = {}
    for method, lrs in grids.items():
        chosen[method] = tune_lr(lrs, lambda lr, m=method: run(m, lr, args.seeds[0])[f"dev_{args.metric}"],
                                 args.extend_grid)
    for method in grids:
        for seed in args.seeds[1:]:
            run(method, chosen[method], seed)
    save(args.name, {"args": vars(args), "rows": rows, "chosen_lr": chosen})
    budget = (f"early stopping on dev {watched_quantity(args)} (patience "
              f"{args.early_stopping} evaluations of {args.eval_steps} steps, at most {args.max_epochs:g} epochs)"
              if args.early_stopping else f"{args.epochs:g} epoch(s)")
    text = (f"`{args.task}`, {args.base_model}, {len(splits['train'])} training rows, {budget}, batch "
            f"{args.batch_size}, max length {args.max_length}; dev = {len(splits['validation'])} validation rows, "
            f"test = {len(splits['test'])} rows.\n\n" + tables(args, rows, chosen))
    (RESULTS / f"{args.name}.md").write_text(text + "\n")
    print("\n" + text)


if __name__ == "__main__":
    main()
