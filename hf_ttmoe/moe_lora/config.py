"""Dense MoE-LoRA configuration."""

from __future__ import annotations

from dataclasses import field

from ..adapter import AdapterConfig


class DenseMoELoRAConfig(AdapterConfig):
    """Configuration of dense MoE-LoRA: E LoRA experts per targeted feed-forward linear, mixed per token by a gate.

    Args:
        num_experts: experts per adapted linear (E).
        lora_rank: rank r of each expert; the mixture costs one LoRA of rank E·r.
        lora_alpha: each expert's update is scaled by `lora_alpha / lora_rank`. A dense gate starts near 1/E per
            expert (1/k for top-k), so under Adam the mixture's first updates are about 1/E of those of one LoRA with
            the same `alpha / rank`. `None` (default) = `2r · E` (`2r · k` for top-k), LoRA's usual `alpha = 2r`
            with the dilution cancelled (measured in benchmarks/README.md, "Dense MoE-LoRA": alpha 8 reached 54-59%
            on SST-2 where 64 reached LoRA's accuracy, for E=8, r=4).
        lora_dropout: dropout on the experts' input.
        num_experts_per_tok: `None` = dense softmax over all experts; k = top-k, renormalized over the chosen k.
        router_jitter_noise: multiplicative uniform noise `[1-ε, 1+ε]` on the gate's input, in training only.
        router_aux_loss_coef: weight of the load-balancing loss added to the task loss (with labels only).
        router_z_loss_coef: weight of the router z-loss.
        output_router_logits: return every layer's router logits.
    """

    model_type = "moe_lora"

    num_experts: int = field(default=8, metadata={"help": "Experts per adapted linear."})
    lora_rank: int = field(default=4, metadata={"help": "Rank of each LoRA expert."})
    lora_alpha: float | None = field(
        default=None, metadata={"help": "Expert scale numerator (scale = alpha / rank); None = 2·rank·(E or k)."}
    )
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the experts' input."})
    num_experts_per_tok: int | None = field(default=None, metadata={"help": "None = dense gate; k = top-k."})
    router_jitter_noise: float = field(default=0.0, metadata={"help": "Gate-input jitter in training."})
    router_aux_loss_coef: float = field(default=0.05, metadata={"help": "Load-balancing loss weight."})
    router_z_loss_coef: float = field(default=0.0, metadata={"help": "Router z-loss weight."})
    output_router_logits: bool = field(default=False, metadata={"help": "Return every layer's router logits."})

    def __post_init__(self, **kwargs):
        if not isinstance(self.num_experts, int) or self.num_experts < 1:
            raise ValueError(f"num_experts={self.num_experts!r} must be a positive int.")
        if not isinstance(self.lora_rank, int) or self.lora_rank < 1:
            raise ValueError(f"lora_rank={self.lora_rank!r} must be a positive int.")
        k = self.num_experts_per_tok
        if k is not None and not (isinstance(k, int) and 1 <= k <= self.num_experts):
            raise ValueError(f"num_experts_per_tok={k!r} must be None (dense) or an int in [1, {self.num_experts}].")
        if self.lora_alpha is None:
            self.lora_alpha = float(2 * self.lora_rank * (k or self.num_experts))
        if isinstance(self.lora_alpha, bool) or not isinstance(self.lora_alpha, (int, float)) or self.lora_alpha <= 0:
            raise ValueError(f"lora_alpha={self.lora_alpha!r} must be a positive number (or None = 2·rank·(E or k)).")
        for name in ("lora_dropout", "router_jitter_noise"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name}={getattr(self, name)} must be in [0, 1).")
        for name in ("router_aux_loss_coef", "router_z_loss_coef"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0.")
        super().__post_init__(**kwargs)


__all__ = ["DenseMoELoRAConfig"]
