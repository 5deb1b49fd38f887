"""A tensor train over the stack of adapted matrices (FacT-TT, Jie & Deng 2023), for the issue-13 ablation.

TT-LoRA factorizes each ΔW on its own, so at 5% of LoRA r=16's parameters every matrix gets a chain of small modes.
Stacking the adapted matrices of one kind into a tensor T[out, layer, in] and factorizing *that* as a three-core train
U (out × r) · S (r × L × r) · V (r × in) shares U and V across layers and leaves each layer an r × r core of its own:
ΔW_l = scaling · U S_l V has rank r, for (out + in)·r + L·r² parameters instead of L chains. `share="module"` keeps
one (U, V) pair per module name (MiniLM: query and value at r = 4, 6,336 parameters, 4.30% of LoRA r=16), `share="all"`
one per matrix shape (query and value together at r = 8, 6,912, 4.69%). S starts at zero, so ΔW = 0 at step 0.
"""

from __future__ import annotations

import math

import torch
from torch import nn

SHARES = ("module", "all")


class StackedCores(nn.Module):
    """The shared outer cores of one stack: `u` (out, r) and `v` (r, in), Gaussian with unit-variance products."""

    def __init__(self, in_features: int, out_features: int, rank: int):
        super().__init__()
        self.v = nn.Parameter(torch.randn(rank, in_features) / math.sqrt(in_features))
        self.u = nn.Parameter(torch.randn(out_features, rank) / math.sqrt(rank))


class StackedTTLinear(nn.Module):
    """`y = base(x) + scaling · x (U S Vᵀ)ᵀ`: a frozen linear, its own middle core `s` (r, r), the stack's `U`, `V`.

    The shared cores are registered once, on the module that owns the stack (`stack_tt_`), and only referenced here,
    so `parameters()` lists each of them once and their gradient sums every layer's."""

    def __init__(self, base_layer: nn.Linear, cores: StackedCores, scaling: float):
        super().__init__()
        self.base_layer, self._cores, self.scaling = base_layer, (cores,), scaling
        self.s = nn.Parameter(cores.u.new_zeros(cores.u.shape[1], cores.v.shape[0]))

    def delta_weight(self) -> torch.Tensor:
        """`scaling · U S V`, (out, in)."""
        cores = self._cores[0]
        return self.scaling * cores.u @ self.s @ cores.v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cores = self._cores[0]
        return self.base_layer(x) + ((x @ cores.v.T) @ (self.scaling * self.s).T) @ cores.u.T


def stack_tt_(model: nn.Module, targets: list[str], rank: int, alpha: float, share: str) -> nn.ModuleDict:
    """Swap every linear in `targets` (module paths) for a `StackedTTLinear`; the shared cores go to
    `model.stacked_tt_cores`, one `StackedCores` per module name and shape (`share="module"`) or per shape ("all").
    ΔW is scaled by `alpha / rank`, as TT-LoRA and LoRA scale theirs."""
    if share not in SHARES:
        raise ValueError(f"share={share!r} is not one of {SHARES}.")
    stacks = nn.ModuleDict()
    for path in targets:
        name = path.rsplit(".", 1)[-1]
        linear = model.get_submodule(path)
        shape = f"{linear.in_features}x{linear.out_features}"
        key = shape if share == "all" else f"{name}_{shape}"  # BERT's three "dense" linears differ in shape
        if key not in stacks:
            stacks[key] = StackedCores(linear.in_features, linear.out_features, rank).to(linear.weight)
        model.set_submodule(path, StackedTTLinear(linear, stacks[key], alpha / rank))
    model.stacked_tt_cores = stacks
    return stacks


__all__ = ["SHARES", "StackedCores", "StackedTTLinear", "stack_tt_"]
