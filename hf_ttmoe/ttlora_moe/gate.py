"""The gate of a TT-LoRA MoE: pooled base-model features -> one expert per input (noisy top-1 in training)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Router(nn.Module):
    """Linear or 2-layer MLP (`hidden_size` units) from features `(B, input_size)` to expert logits `(B, E)`, with
    Shazeer noisy gating.

    Noisy top-1 (Shazeer et al. 2017, eqs. 3-5): in training, `H(x) = x W_g + ε · softplus(x W_noise)`, ε ~ N(0, 1);
    the chosen expert is `argmax H(x)`. At inference the clean logits `x W_g` decide, deterministically. Every
    parameter name starts with `router_`.
    """

    def __init__(self, input_size: int, num_experts: int, router_type: str = "linear", hidden_size: int = 256,
                 noisy_gating: bool = True):
        super().__init__()
        if router_type == "mlp":
            self.router_net = nn.Sequential(nn.Linear(input_size, hidden_size), nn.GELU(),
                                            nn.Linear(hidden_size, num_experts))
        else:
            self.router_net = nn.Linear(input_size, num_experts)
        self.router_noise = nn.Linear(input_size, num_experts, bias=False) if noisy_gating else None
        if self.router_noise is not None:
            nn.init.zeros_(self.router_noise.weight)  # starts at softplus(0) = 0.69 noise std, learns its own scale

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.router_net(features)  # (B, E)
        if self.training and self.router_noise is not None:
            logits = logits + torch.randn_like(logits) * F.softplus(self.router_noise(features))
        return logits


__all__ = ["Router"]
