"""Layers that apply a different frozen expert to each row of a batch, in one batched pass."""

from __future__ import annotations

import torch
from torch import nn


class MixedTTLoRALinear(nn.Module):
    """`y[b] = base(x[b]) + x[b] V_{e_b}ᵀ U_{e_b}ᵀ`: each row b uses its own expert e_b.

    The experts' exact TT factors (scaling folded into U) are precomputed and stacked, `U: (E, out, r)`,
    `V: (E, r, in)`; a batch gathers its rows' factors and runs one pair of batched GEMMs, so the cost does not
    depend on how many distinct experts the batch uses. `expert_index` (B,) is set by the model before each forward;
    `None` disables the adapters (the frozen base alone).
    """

    def __init__(self, base_layer: nn.Linear, u: torch.Tensor, v: torch.Tensor):
        super().__init__()
        self.base_layer = base_layer
        self.register_buffer("expert_u", u, persistent=False)  # (E, out, r)
        self.register_buffer("expert_v", v, persistent=False)  # (E, r, in)
        self.expert_index: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        if self.expert_index is None:
            return result
        idx = self.expert_index
        v = self.expert_v[idx].to(x.dtype)  # (B, r, in)
        u = self.expert_u[idx].to(x.dtype)  # (B, out, r)
        flat = x.reshape(x.shape[0], -1, x.shape[-1])  # (B, T, in)
        delta = torch.bmm(torch.bmm(flat, v.transpose(1, 2)), u.transpose(1, 2))  # (B, T, r) -> (B, T, out)
        return result + delta.reshape(result.shape)


class MixedHead(nn.Module):
    """Per-row classification head: row b uses task e_b's head; logits beyond that task's labels are -inf.

    `weight: (E, C_max, H)`, `bias: (E, C_max)`, `num_labels: (E,)`. Works on `(B, H)` and `(B, T, H)` inputs.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, num_labels: torch.Tensor):
        super().__init__()
        self.register_buffer("head_weight", weight, persistent=False)
        self.register_buffer("head_bias", bias, persistent=False)
        self.register_buffer("head_num_labels", num_labels, persistent=False)
        self.expert_index: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = self.expert_index
        w, b = self.head_weight[idx].to(x.dtype), self.head_bias[idx].to(x.dtype)  # (B, C, H), (B, C)
        if x.dim() == 2:
            logits = torch.einsum("bh,bch->bc", x, w) + b  # (B, C)
        else:
            logits = torch.einsum("bth,bch->btc", x, w) + b[:, None]  # (B, T, C)
        classes = torch.arange(w.shape[1], device=x.device)
        valid = classes < self.head_num_labels[idx][:, None]  # (B, C)
        return logits.masked_fill(~valid.view(valid.shape[0], *([1] * (logits.dim() - 2)), -1), float("-inf"))
