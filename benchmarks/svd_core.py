"""A trainable core between the weight's own singular bases (LoRA-XS, Bałazy et al. 2024), for the issue-13 ablation.

Every layout tried so far spends TT-LoRA's ~7k parameters on the outer cores too: the chains, the stacked train's
shared U and V, the TT-matrix. Here the outer cores cost nothing: ΔWᵀ is a three-core train

    ΔWᵀ = scaling · A R B,   A = U_r Σ_r (in × r),   B = V_rᵀ (r × out),   Wᵀ = U Σ Vᵀ,

whose outer cores are the top-r singular pairs of the frozen weight itself (Σ folded into the input side, as LoRA-XS
does), frozen, and only the r × r middle core R trains: r² parameters a matrix (r = 24: 576, 12 matrices 6,912 =
4.69% of LoRA r=16's on MiniLM's query/value), with ΔW of rank r, above LoRA r=16's. R starts at zero, so ΔW = 0 at
step 0, and its gradient Aᵀ (Xᵀ G) Bᵀ is not zero there (the outer cores are not trained), so there is no saddle to
leave. The outer cores are a function of the base weights; a saved expert would need only R (and a sign rule for
the singular vectors), which this prototype does not implement: it is for accuracy, not a library layout.
"""

from __future__ import annotations

import torch
from torch import nn


def singular_bases(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The outer cores of `weight` (out, in): `A = U_r Σ_r` (in, r) and `B = V_rᵀ` (r, out) from `weightᵀ = U Σ Vᵀ`,
    its `rank` largest singular pairs."""
    if not 0 < rank <= min(weight.shape):
        raise ValueError(f"rank {rank} is not between 1 and {min(weight.shape)} for a {tuple(weight.shape)} weight")
    u, s, vh = torch.linalg.svd(weight.detach().T.double(), full_matrices=False)
    return (u[:, :rank] * s[:rank]).to(weight.dtype), vh[:rank].to(weight.dtype)


class SVDCoreLinear(nn.Module):
    """`y = base(x) + scaling · ((x A) R) B`: a frozen linear, its frozen singular bases, a trainable core `R` (r, r);
    `scaling = alpha / r`."""

    def __init__(self, base_layer: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base_layer = base_layer
        a, b = singular_bases(base_layer.weight, rank)
        self.register_buffer("svd_a", a)
        self.register_buffer("svd_b", b)
        self.svd_core = nn.Parameter(a.new_zeros(rank, rank))
        self.scaling = alpha / rank

    def delta_weight(self) -> torch.Tensor:
        """ΔW, (out, in)."""
        return self.scaling * (self.svd_a @ self.svd_core @ self.svd_b).T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x) + ((x @ self.svd_a) @ (self.scaling * self.svd_core)) @ self.svd_b


def svd_core_(model: nn.Module, targets: list[str], rank: int, alpha: float) -> None:
    """Swap every linear in `targets` (module paths) for an `SVDCoreLinear`."""
    for path in targets:
        model.set_submodule(path, SVDCoreLinear(model.get_submodule(path), rank, alpha))
