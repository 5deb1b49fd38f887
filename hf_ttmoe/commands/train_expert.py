"""Train one TT-LoRA expert on one task with `transformers.Trainer`, evaluate it (accuracy, F1), save it.

    python scripts/train_expert.py --task rotten_tomatoes --output_dir experts/rotten_tomatoes \
        --num_train_epochs 1 --learning_rate 5e-3 --per_device_train_batch_size 32

Every `TrainingArguments` flag works (`--help` lists them). Installed as `hf-ttmoe-train-expert` too.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

from hf_ttmoe import DEFAULT_BASE_MODEL, TTLoRAConfig, TTLoRAModel, load_tokenizer
from hf_ttmoe.training import DataArguments, load_tokenized, parse_arguments, train_and_evaluate
from hf_ttmoe.tt import INIT_METHODS
from trainer_callbacks import OneClassWarningCallback, one_class_note

DEFAULT_LEARNING_RATE = 5e-3  # chosen on dev rows (benchmarks/README.md); --learning_rate overrides it


@dataclass
class ExpertArguments:
    """The TT-LoRA expert to train (see `TTLoRAConfig`)."""

    base_model_name_or_path: str = field(default=DEFAULT_BASE_MODEL, metadata={"help": "HF base model id or dir."})
    gguf_file: str | None = field(default=None, metadata={"help": "GGUF file of the base model, if any."})
    tt_rank: int = field(default=5, metadata={"help": "TT rank."})
    alpha: float = field(default=16.0, metadata={"help": "ΔW scale numerator (scale = alpha / rank)."})
    target_modules: list[str] | None = field(default=None, metadata={"help": "Linear modules to adapt."})
    layers_to_transform: list[int] | None = field(default=None, metadata={"help": "Layer indices (default all)."})
    tt_shapes: str | None = field(
        default=None, metadata={"help": 'JSON {module: [in_modes, out_modes]}, e.g. {"query": [[8,8,6],[6,8,8]]}.'}
    )
    forward_impl: str = field(default="factors", metadata={"help": "factors | contraction | reconstruction."})
    dropout: float = field(default=0.0, metadata={"help": "Adapter input dropout."})
    init: str = field(default=TTLoRAConfig().init, metadata={"help": f"How the cores start: one of {INIT_METHODS}."})
    layout: str = field(default=TTLoRAConfig().layout, metadata={
        "help": "chain (a tensor train per matrix, the paper's) | stacked (one train across a module's layers)."})


def build_expert(args: ExpertArguments, task: str, label_names: list[str], pad_token_id: int | None) -> TTLoRAModel:
    config = TTLoRAConfig(
        base_model_name_or_path=args.base_model_name_or_path,
        gguf_file=args.gguf_file,
        task=task,
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
        target_modules=args.target_modules,
        layers_to_transform=args.layers_to_transform,
        tt_rank=args.tt_rank,
        alpha=args.alpha,
        tt_shapes=json.loads(args.tt_shapes) if args.tt_shapes else None,
        forward_impl=args.forward_impl,
        dropout=args.dropout,
        init=args.init,
        layout=args.layout,
        pad_token_id=pad_token_id,
    )
    return TTLoRAModel(config)


def main(argv: list[str] | None = None) -> dict:
    expert_args, data_args, training_args = parse_arguments((ExpertArguments, DataArguments), argv,
                                                            DEFAULT_LEARNING_RATE)
    base = TTLoRAConfig(base_model_name_or_path=expert_args.base_model_name_or_path, gguf_file=expert_args.gguf_file)
    tokenizer = load_tokenizer(base)
    splits, label_names = load_tokenized(data_args, tokenizer)
    model = build_expert(expert_args, data_args.task, label_names, tokenizer.pad_token_id)
    counts = model.num_parameters_by_kind()
    print(f"TT-LoRA expert for {data_args.task!r}: {counts['adapter']:,} TT-core parameters, {counts['head']:,} head, "
          f"{counts['frozen']:,} frozen")
    results = train_and_evaluate(model, tokenizer, splits, training_args, callbacks=[OneClassWarningCallback()])
    print(f"{data_args.task}: test accuracy {results['test_accuracy']:.4f}, F1 {results['test_f1']:.4f} "
          f"(saved to {training_args.output_dir}){one_class_note(results)}")
    return results


def cli() -> None:
    """The `hf-ttmoe-train-expert` console command."""
    main(sys.argv[1:])


if __name__ == "__main__":
    cli()
