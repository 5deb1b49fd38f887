"""Schedules the load-balancing loss coefficient of a dense MoE-LoRA model and logs its routing statistics."""

from __future__ import annotations

import math

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from hf_ttmoe import DenseMoELoRAModel

SCHEDULES = ("constant", "linear_warmup", "cosine")


class BalanceLossCallback(TrainerCallback, ExportableState):
    """Set `model.router_aux_loss_coef` each step from a schedule, and add routing statistics to the Trainer's logs.

    Logged (averaged since the previous log, and over ranks in distributed runs): `aux_loss`, `aux_loss_coef`,
    `gate_entropy`, and `expert_load/{i}`, the fraction of tokens routed to expert i (averaged over layers).

    Args:
        schedule: "constant"; "linear_warmup" (0 → base over `warmup_ratio` of training, then base); "cosine"
            (base → `min_ratio`·base along a half cosine over training).
        warmup_ratio: fraction of max_steps for "linear_warmup".
        min_ratio: final coefficient / base coefficient for "cosine".

    Its schedule and coefficients are saved in checkpoints (`ExportableState`); `resume_from_checkpoint` restores
    them with `TrainingArguments(restore_callback_states_from_checkpoint=True)`.

    The base coefficient is the model config's `router_aux_loss_coef`. Reporting integrations (TensorBoard, W&B)
    run before user callbacks, so to have them see these keys too, attach the callback first:
    `BalanceLossCallback.attach(trainer)`; with `Trainer(callbacks=[...])` the keys reach the console and
    `trainer.state.log_history`.
    """

    def __init__(self, schedule: str = "constant", warmup_ratio: float = 0.1, min_ratio: float = 0.0):
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule={schedule!r} is not one of {SCHEDULES}.")
        if not 0.0 <= warmup_ratio <= 1.0 or not 0.0 <= min_ratio <= 1.0:
            raise ValueError(f"warmup_ratio={warmup_ratio} and min_ratio={min_ratio} must be in [0, 1].")
        self.schedule, self.warmup_ratio, self.min_ratio = schedule, warmup_ratio, min_ratio
        self.base_coef: float | None = None
        self.current_coef: float | None = None

    @classmethod
    def attach(cls, trainer, *args, **kwargs) -> BalanceLossCallback:
        """Create the callback and put it first in `trainer`'s callbacks, ahead of the reporting integrations."""
        callback = cls(*args, **kwargs)
        trainer.callback_handler.callbacks.insert(0, callback)
        return callback

    def factor(self, progress: float) -> float:
        """Coefficient / base coefficient at `progress` in [0, 1] of training."""
        if self.schedule == "linear_warmup":
            return 1.0 if self.warmup_ratio == 0 else min(1.0, progress / self.warmup_ratio)
        if self.schedule == "cosine":
            return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        return 1.0

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if not isinstance(model, DenseMoELoRAModel):
            raise TypeError(
                f"BalanceLossCallback needs a DenseMoELoRAModel, got {type(model).__name__}: it schedules "
                "`router_aux_loss_coef` and reads `pop_routing_stats()`."
            )
        if self.base_coef is None:
            self.base_coef = float(model.config.router_aux_loss_coef)
        model.pop_routing_stats()

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        progress = state.global_step / max(state.max_steps, 1)
        self.current_coef = self.base_coef * self.factor(progress)
        model.router_aux_loss_coef = self.current_coef

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        if model is None or logs is None or "loss" not in logs:  # training logs only (same on every rank)
            return
        stats = model.pop_routing_stats()
        if not stats:
            return
        keys = ("aux_loss_sum", "forwards", "entropy_sum", "tokens", "slots", "expert_slots")
        flat = torch.cat([stats[k].float().reshape(-1) for k in keys])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            flat = flat.to(args.device)  # NCCL reduces device tensors only
            torch.distributed.all_reduce(flat)  # sums over ranks: the ratios below are global averages
            flat = flat.cpu()
        aux_sum, forwards, entropy_sum, tokens, slots = flat[:5].tolist()
        extra = {"aux_loss": aux_sum / max(forwards, 1), "gate_entropy": entropy_sum / max(tokens, 1),
                 "aux_loss_coef": self.current_coef}
        extra.update({f"expert_load/{i}": v / max(slots, 1) for i, v in enumerate(flat[5:].tolist())})
        logs.update(extra)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(extra)

    def state(self) -> dict:
        return {"args": {"schedule": self.schedule, "warmup_ratio": self.warmup_ratio, "min_ratio": self.min_ratio},
                "attributes": {"base_coef": self.base_coef, "current_coef": self.current_coef}}
