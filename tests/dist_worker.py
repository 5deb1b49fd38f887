"""One distributed training run, launched by tests/test_distributed.py with torchrun (DDP, ZeRO-2, ZeRO-3 on CPU).

    torchrun --nproc_per_node 2 tests/dist_worker.py --kind ttlora --deepspeed scripts/ds_configs/zero3.json \
        --base_dir BASE --out_dir OUT

Writes, from rank 0, OUT/report.json (losses, checks) and OUT/final/ (the saved model); the test compares them with a
single-process run and reloads the saved model in a fresh process. Run as a script, it imports `dist_models` from its
own folder (the folder of the script Python runs comes first on the import path).
"""

from __future__ import annotations

import argparse
import json
import os

import torch
from datasets import Dataset
from dist_models import BATCH, GLOBAL_BATCH, build_model, callbacks_for, make_dataset
from safetensors.torch import load_file, save_file
from transformers import Trainer, TrainingArguments


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", required=True)
    parser.add_argument("--base_dir", required=True)
    parser.add_argument("--out_dir", required=True)
    parser.add_argument("--deepspeed", default=None)
    parser.add_argument("--max_steps", type=int, default=4)
    args = parser.parse_args()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    zero3 = bool(args.deepspeed) and json.load(open(args.deepspeed))["zero_optimization"]["stage"] == 3
    if args.deepspeed:
        import deepspeed

        deepspeed.init_distributed(dist_backend="gloo")  # before from_pretrained, so ZeRO-3 partitions on load
    training_args = TrainingArguments(
        output_dir=args.out_dir, max_steps=args.max_steps, per_device_train_batch_size=GLOBAL_BATCH // world,
        learning_rate=1e-2, use_cpu=True, average_tokens_across_devices=False,
        ddp_backend="gloo" if "WORLD_SIZE" in os.environ else None,
        deepspeed=args.deepspeed, save_strategy="no", logging_steps=1, report_to=[], seed=0, data_seed=0,
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        label_names=["task_ids"] if args.kind == "router" else None,
    )
    model = build_model(args.kind, args.base_dir)
    frozen_before = {n: p.ds_numel if hasattr(p, "ds_numel") else p.numel()
                     for n, p in model.named_parameters() if not p.requires_grad}
    trainer = Trainer(model=model, args=training_args, train_dataset=Dataset.from_dict(make_dataset(args.kind)),
                      callbacks=callbacks_for(args.kind))
    trainer.train()
    trainer.save_model(os.path.join(args.out_dir, "final"))

    # every rank: optimizer holds exactly the trainable parameters; frozen ones stayed frozen
    opt = trainer.optimizer  # DeepSpeed's ZeRO optimizers keep the model's own tensors in bit16/fp16 groups
    opt = opt if hasattr(opt, "bit16_groups") or hasattr(opt, "fp16_groups") else getattr(opt, "optimizer", opt)
    groups = getattr(opt, "bit16_groups", None) or getattr(opt, "fp16_groups", None) or [
        g["params"] for g in opt.param_groups]
    opt_params = {id(p) for group in groups for p in group}
    named = dict(model.named_parameters())
    in_optimizer = sorted(n for n, p in named.items() if id(p) in opt_params)
    still_frozen = all(not named[n].requires_grad for n in frozen_before)

    # every rank (collective under ZeRO-3): merged outputs equal unmerged outputs
    model.eval()
    batch = {k: torch.tensor(v[:BATCH]) for k, v in make_dataset().items() if k != "labels"}
    mergeable = args.kind.startswith("ttlora")  # a mixture (per token, or per row) cannot be folded into one weight
    with torch.no_grad():
        unmerged = model(**batch).logits
        if mergeable:
            model.merge()
        merged = model(**batch).logits
        if mergeable:
            model.unmerge()
        restored = model(**batch).logits
    # ZeRO-3 with partitioned adapters: a plain save refuses clearly; the gathered state dict saves completely
    save_error, gathered_shapes, ungathered_shapes = None, None, None
    if zero3 and args.kind != "router":
        ungathered = os.path.join(args.out_dir, "ungathered")
        try:
            model.save_pretrained(ungathered, is_main_process=trainer.is_world_process_zero())
            if trainer.is_world_process_zero():
                ungathered_shapes = {k: list(v.shape) for k, v in load_file(f"{ungathered}/model.safetensors").items()}
        except RuntimeError as err:
            save_error = str(err)
        state = model.gathered_saved_state_dict()
        gathered_shapes = {k: list(v.shape) for k, v in state.items()}
    if trainer.is_world_process_zero():
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        save_file({"logits": unmerged.contiguous()}, os.path.join(args.out_dir, "logits.safetensors"))
        saved = load_file(os.path.join(args.out_dir, "final", "model.safetensors"))
        report = {
            "world_size": world, "zero3": zero3, "losses": losses,
            "in_optimizer": in_optimizer, "still_frozen": still_frozen,
            "num_frozen": len(frozen_before), "num_frozen_numel": sum(frozen_before.values()),
            "merge_rel_err": ((merged - unmerged).norm() / unmerged.norm()).item(),
            "unmerge_rel_err": ((restored - unmerged).norm() / unmerged.norm()).item(),
            "saved_shapes": {k: list(v.shape) for k, v in saved.items()},
            "save_error": save_error, "gathered_shapes": gathered_shapes, "ungathered_shapes": ungathered_shapes,
            "routing_logs": [{k: v for k, v in h.items() if k.startswith(("expert_load", "gate_entropy"))}
                             for h in trainer.state.log_history if "expert_load/0" in h],
            "partitioned": sorted(n for n, p in named.items() if getattr(p, "ds_id", None) is not None
                                  and p.numel() == 0 and p.requires_grad),
        }
        with open(os.path.join(args.out_dir, "report.json"), "w") as f:
            json.dump(report, f, indent=1)
    if torch.distributed.is_initialized():  # leave together: a rank exiting early can abort its peer's gloo pair
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
