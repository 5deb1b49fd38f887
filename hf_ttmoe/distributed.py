"""Checks for DeepSpeed configurations our models are trained with, failing early with a message that says why."""

from __future__ import annotations

import json
import os

ZERO_STAGES = (0, 1, 2, 3)


def check_deepspeed_config(config: str | os.PathLike | dict | None, cpu: bool = False) -> dict | None:
    """Validate a DeepSpeed config (path or dict) for hf_ttmoe models; return it as a dict.

    Raises `ValueError` for: a ZeRO stage DeepSpeed does not have; ZeRO-3 without
    `stage3_gather_16bit_weights_on_model_save` (Trainer would then save a DeepSpeed checkpoint, not adapter weights);
    on CPU (`cpu=True`), an Adam optimizer without `"torch_adam": true` (DeepSpeed would compile a fused CPU Adam).
    """
    if config is None:
        return None
    if not isinstance(config, dict):
        with open(config) as f:
            config = json.load(f)
    stage = config.get("zero_optimization", {}).get("stage", 0)
    if stage not in ZERO_STAGES:
        raise ValueError(f"zero_optimization.stage={stage!r} is not a ZeRO stage; valid: {ZERO_STAGES}.")
    if stage == 3 and config["zero_optimization"].get("stage3_gather_16bit_weights_on_model_save") is not True:
        raise ValueError(
            "ZeRO-3 config without zero_optimization.stage3_gather_16bit_weights_on_model_save=true: saving would "
            "write partitioned DeepSpeed shards instead of the adapter weights. Set it to true "
            "(scripts/ds_configs/zero3.json does)."
        )
    optimizer = config.get("optimizer", {})
    if cpu and "adam" in str(optimizer.get("type", "")).lower() and not optimizer.get("params", {}).get("torch_adam"):
        raise ValueError(
            f"optimizer.type={optimizer['type']!r} without params.torch_adam=true on CPU: DeepSpeed would try to "
            "compile its fused CPU Adam. Add \"torch_adam\": true to optimizer.params."
        )
    return config


def init_deepspeed_comm(training_args) -> None:
    """Start DeepSpeed's communication before the model is built, on the CPU too: ZeRO-3 partitions the base model
    as `from_pretrained` loads it, which needs it. (On GPUs accelerate starts it; with `use_cpu` it starts only a
    plain gloo group, and DeepSpeed would then see one process.)"""
    if training_args.deepspeed and training_args.use_cpu and training_args.world_size > 1:
        import deepspeed

        deepspeed.init_distributed(dist_backend="gloo")
