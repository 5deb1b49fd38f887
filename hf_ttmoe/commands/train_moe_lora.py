"""Train a dense MoE-LoRA model on one task with `transformers.Trainer` and a scheduled load-balancing loss.

    python scripts/train_moe_lora.py --task sst2 --glue_dir ../shared/data/glue --output_dir runs/moe_sst2 \
        --num_experts 8 --lora_rank 4 --layers_to_transform 2 3 4 5 --learning_rate 1e-3 --use_cpu

Every `TrainingArguments` flag works (`--help` lists them). Installed as `hf-ttmoe-train-moe-lora` too.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from hf_ttmoe import DEFAULT_BASE_MODEL, DenseMoELoRAConfig, DenseMoELoRAModel, load_tokenizer
from hf_ttmoe.training import DataArguments, load_tokenized, parse_arguments, train_and_evaluate
from trainer_callbacks import BalanceLossCallback, OneClassWarningCallback, one_class_note

DEFAULT_LEARNING_RATE = 1e-3  # chosen on dev rows (benchmarks/README.md); --learning_rate overrides it


@dataclass
class MoELoRAArguments:
    """The dense MoE-LoRA model to train (see `DenseMoELoRAConfig`)."""

    base_model_name_or_path: str = field(default=DEFAULT_BASE_MODEL, metadata={"help": "HF base model id or dir."})
    gguf_file: str | None = field(default=None, metadata={"help": "GGUF file of the base model, if any."})
    num_experts: int = field(default=8, metadata={"help": "Experts per adapted linear."})
    lora_rank: int = field(default=4, metadata={"help": "Rank of each expert."})
    lora_alpha: float | None = field(
        default=None, metadata={"help": "Expert scale numerator (scale = alpha / rank); default 2·rank·(E or k)."}
    )
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the experts' input."})
    num_experts_per_tok: int | None = field(default=None, metadata={"help": "None = dense gate; k = top-k."})
    router_jitter_noise: float = field(default=0.0, metadata={"help": "Gate-input jitter in training."})
    router_aux_loss_coef: float = field(default=0.05, metadata={"help": "Load-balancing loss weight."})
    router_z_loss_coef: float = field(default=0.0, metadata={"help": "Router z-loss weight."})
    balance_schedule: str = field(default="constant", metadata={"help": "constant | linear_warmup | cosine."})
    target_modules: list[str] | None = field(default=None, metadata={"help": "FFN linears (default: both)."})
    layers_to_transform: list[int] | None = field(default=None, metadata={"help": "Layer indices (default all)."})


def build_moe_lora(args: MoELoRAArguments, task: str, label_names: list[str], pad_token_id: int | None):
    config = DenseMoELoRAConfig(
        base_model_name_or_path=args.base_model_name_or_path, gguf_file=args.gguf_file, task=task,
        id2label=dict(enumerate(label_names)), label2id={n: i for i, n in enumerate(label_names)},
        num_experts=args.num_experts, lora_rank=args.lora_rank, lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout, num_experts_per_tok=args.num_experts_per_tok,
        router_jitter_noise=args.router_jitter_noise, router_aux_loss_coef=args.router_aux_loss_coef,
        router_z_loss_coef=args.router_z_loss_coef, target_modules=args.target_modules,
        layers_to_transform=args.layers_to_transform, pad_token_id=pad_token_id,
    )
    return DenseMoELoRAModel(config)


def main(argv: list[str] | None = None) -> dict:
    moe_args, data_args, training_args = parse_arguments((MoELoRAArguments, DataArguments), argv,
                                                         DEFAULT_LEARNING_RATE)
    tokenizer = load_tokenizer(
        DenseMoELoRAConfig(base_model_name_or_path=moe_args.base_model_name_or_path, gguf_file=moe_args.gguf_file))
    splits, label_names = load_tokenized(data_args, tokenizer)
    model = build_moe_lora(moe_args, data_args.task, label_names, tokenizer.pad_token_id)
    counts = model.num_parameters_by_kind()
    print(f"Dense MoE-LoRA for {data_args.task!r}: {counts['adapter']:,} expert+gate parameters, "
          f"{counts['head']:,} head, {counts['frozen']:,} frozen")
    results = train_and_evaluate(model, tokenizer, splits, training_args,
                                 callbacks=[BalanceLossCallback(moe_args.balance_schedule), OneClassWarningCallback()])
    print(f"{data_args.task}: test accuracy {results['test_accuracy']:.4f}, F1 {results['test_f1']:.4f}, "
          f"macro-F1 {results['test_macro_f1']:.4f} (saved to {training_args.output_dir}){one_class_note(results)}")
    return results


def cli() -> None:
    """The `hf-ttmoe-train-moe-lora` console command."""
    main(sys.argv[1:])


if __name__ == "__main__":
    cli()
