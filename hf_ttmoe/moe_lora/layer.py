"""Dense MoE-LoRA layer: a frozen `nn.Linear` plus E gated LoRA experts, computed as one LoRA of rank E·r."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..adapter import as_dtype


def gate_weights(logits: torch.Tensor, top_k: int | None) -> torch.Tensor:
    """Per-token mixture weights `(..., E)` from router logits: softmax, or top-k renormalized over the chosen k.

    Weights stay at their expert's index (scattered back by index, never by sorted position).
    """
    probs = logits.softmax(-1)
    if top_k is None or top_k == probs.shape[-1]:
        return probs
    top, idx = probs.topk(top_k, dim=-1)  # (..., k)
    return torch.zeros_like(probs).scatter(-1, idx, top / top.sum(-1, keepdim=True))


class DenseMoELoRALinear(nn.Module):
    """`y = base(x) + scaling · Σ_e g_e(x) · B_e A_e x`, with `g = softmax(W_g x)` (optionally top-k).

    The E experts are stacked, `moelora_A: (E·r, in)` and `moelora_B: (out, E·r)`, so the mixture runs as two GEMMs:
    `h = x Aᵀ` `(tokens, E·r)`, each expert's r-slice of h scaled by its gate weight, then `h Bᵀ` (DESIGN idea 6).
    The gate weights reach their r-slices through one small product with `expert_scale` `(E, E·r)` (row e: `scaling`
    on expert e's r columns), so a layer is a handful of ops: on a GPU, a handful of kernel launches.
    `B = 0` at init, so the layer starts as the base layer. After each forward, the router logits are left in
    `self.router_logits` for the model to collect.
    """

    def __init__(
        self,
        base_layer: nn.Linear,
        num_experts: int,
        rank: int,
        alpha: float,
        top_k: int | None = None,
        dropout: float = 0.0,
        jitter_noise: float = 0.0,
    ):
        super().__init__()
        self.base_layer = base_layer
        self.num_experts, self.rank, self.top_k = num_experts, rank, top_k
        self.scaling = alpha / rank
        self.jitter_noise = jitter_noise
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        weight = base_layer.weight
        dtype = weight.dtype if weight.dtype.is_floating_point else torch.float32
        factory = {"device": weight.device, "dtype": dtype}
        self.moelora_A = nn.Parameter(torch.empty(num_experts * rank, base_layer.in_features, **factory))
        self.moelora_B = nn.Parameter(torch.zeros(base_layer.out_features, num_experts * rank, **factory))
        self.moelora_gate = nn.Linear(base_layer.in_features, num_experts, bias=False, **factory)
        if weight.device.type != "meta":
            for a in self.moelora_A.data.view(num_experts, rank, -1):  # each expert's A as LoRA initializes it
                nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            nn.init.normal_(self.moelora_gate.weight, std=0.02)
        expand = torch.eye(num_experts, **factory).repeat_interleave(rank, dim=1) * self.scaling  # (E, E·r)
        self.register_buffer("expert_scale", expand, persistent=False)
        self.router_logits: torch.Tensor | None = None

    def route(self, x: torch.Tensor) -> torch.Tensor:
        """Router logits `(..., E)` for inputs `(..., in)`."""
        if self.training and self.jitter_noise > 0:
            x = x * torch.empty_like(x).uniform_(1.0 - self.jitter_noise, 1.0 + self.jitter_noise)
        return self.moelora_gate(as_dtype(x, self.moelora_gate.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        xa = as_dtype(x, self.moelora_A.dtype)
        if self.training and (self.jitter_noise > 0 or isinstance(self.dropout, nn.Dropout)):
            logits = self.route(x)  # (..., E): the gate and the experts see differently perturbed inputs
            h = F.linear(self.dropout(xa), self.moelora_A)  # (..., E·r)
        else:  # one pass over x for the experts' A and the gate together (memory-bound skinny GEMMs)
            both = F.linear(xa, torch.cat([self.moelora_A, self.moelora_gate.weight]))  # (..., E·r + E)
            h, logits = both.split([self.moelora_A.shape[0], self.num_experts], dim=-1)
        self.router_logits = logits
        scale = gate_weights(logits, self.top_k) @ self.expert_scale  # (..., E·r): gate weight · scaling per slice
        return result + as_dtype(F.linear(h * scale, self.moelora_B), result.dtype)

    def extra_repr(self) -> str:
        return f"num_experts={self.num_experts}, rank={self.rank}, top_k={self.top_k}, scaling={self.scaling:g}"
