"""Freezes everything but the router before training, and refuses an optimizer that holds frozen weights."""

from __future__ import annotations

import logging

from transformers import TrainerCallback

logger = logging.getLogger(__name__)


class ExpertFreezingCallback(TrainerCallback):
    """Stage 2 of TT-LoRA MoE: only the router learns; base, experts and task heads stay frozen.

    At train begin: freezes every parameter whose name lacks the model's trainable prefix (`model.adapter_prefix`,
    `router_` for `TTLoRAMoEModel`), checks something trainable is left, logs trainable/frozen counts, and raises if
    the optimizer was built over frozen weights (it would silently train nothing, or the wrong thing).
    """

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        prefix = f".{getattr(model, 'adapter_prefix', 'router_')}"
        frozen_ids, counts = set(), {"trainable": 0, "frozen": 0}
        for name, param in model.named_parameters():
            trainable = prefix in f".{name}"
            param.requires_grad_(trainable)
            counts["trainable" if trainable else "frozen"] += getattr(param, "ds_numel", param.numel())
            if not trainable:
                frozen_ids.add(id(param))
        if counts["trainable"] == 0:
            raise RuntimeError(f"ExpertFreezingCallback: no parameter named with {prefix[1:]!r} is left to train in "
                               f"{type(model).__name__}.")
        logger.info("ExpertFreezingCallback: %(trainable)d trainable, %(frozen)d frozen parameters", counts)
        state.trainable_parameters = counts["trainable"]
        if optimizer is not None:
            names = {id(p): n for n, p in model.named_parameters()}
            held = [names[id(p)] for group in optimizer.param_groups for p in group["params"] if id(p) in frozen_ids]
            if held:
                raise RuntimeError(f"The optimizer holds {len(held)} frozen parameters (e.g. {held[:3]}): build it "
                                   "after freezing, over the router parameters only.")
