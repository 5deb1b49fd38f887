"""The "stacked" layout: one tensor train over the stack of a module's matrices across layers (FacT-TT, Jie & Deng
2023), as TT-LoRA chains whose outer cores the layers share.

The "chain" layout factorizes each ΔW on its own, so at a few percent of LoRA's parameters every matrix gets a chain
of small modes. Stacking the adapted matrices of one module (all layers' queries) into a tensor T[out, layer, in] and
factorizing *that* as a three-core train U (out × r) · S (r × L × r) · V (r × in) shares U and V across the layers
and leaves each layer an r × r core of its own: ΔW_l = scaling · U S_l V has rank r, for (out + in)·r + L·r²
parameters instead of L chains. On MiniLM's query/value at r = 4 that is 6,336 parameters (4.3% of LoRA r=16), the
best layout under 5% on five of the issue-13 tasks (benchmarks/README.md).

Each layer is still a `TTLoRALinear`, a chain of three cores with input modes `[in]` and output modes `[1, out]`:
core 0 (1, in, r) holds V, core 1 (r, 1, r) the layer's own S_l, core 2 (r, out, 1) U. The layers of one module
(same path inside their layer, same shape) hold the *same* core-0 and core-2 parameters, so `parameters()` lists
each once and its gradient sums every layer's. Everything that reads chains (merging, the MoE's factor stacking,
the Hub card, the batched factors of `shared_factors.py`) reads these unchanged. A saved expert keeps per-layer
names: each layer's copy of a shared core is written, and loading refuses copies that differ (`check_tied`).
"""

from __future__ import annotations

import math

import torch

from ..architectures import path_in_layer
from .layer import CORE_TAG, TTLoRALinear

LAYOUTS = ("chain", "stacked")
SHARED_CORES = (0, 2)  # V and U; core 1 is each layer's own S_l


def stacked_modes(in_features: int, out_features: int) -> list[list[int]]:
    """`[in_modes, out_modes]` of a stacked layer: the whole input, then a mode of 1 for the layer's own core."""
    return [[in_features], [1, out_features]]


def stack_groups(layers: list[TTLoRALinear]) -> dict[str, list[TTLoRALinear]]:
    """Layers grouped by module: path inside their layer and weight shape ("attention.self.query 384x384")."""
    groups: dict[str, list[TTLoRALinear]] = {}
    for layer in layers:
        base = layer.base_layer
        groups.setdefault(f"{path_in_layer(layer.name)} {base.out_features}x{base.in_features}", []).append(layer)
    return groups


@torch.no_grad()
def tie_stacks_(layers: list[TTLoRALinear]) -> None:
    """Give every layer of a module its group's V and U (the first layer's cores 0 and 2), drawn Gaussian with
    unit-variance products (V ~ N(0, 1/in), U ~ N(0, 1/r)); each layer's S_l starts at zero, so ΔW = 0 at init."""
    for group in stack_groups(layers).values():
        first = group[0]
        v, s, u = first.ttlora_cores
        v.normal_(0.0, 1.0 / math.sqrt(v.shape[1]))
        u.normal_(0.0, 1.0 / math.sqrt(u.shape[0]))
        for layer in group:
            layer.ttlora_cores[1].zero_()
            layer.ttlora_cores[0], layer.ttlora_cores[2] = v, u


def check_tied(tensors: dict[str, torch.Tensor], owner: str) -> None:
    """A saved stacked expert writes each layer's copy of its module's V and U: refuse copies that differ (an edited
    or mixed file), naming the module and the first layer that differs, before anything is loaded."""
    modules = sorted({k.split(CORE_TAG)[0] for k in tensors if CORE_TAG in k})
    first: dict[str, str] = {}
    for module in modules:
        if f"{module}{CORE_TAG}2" not in tensors:  # not three cores: the shape check that follows refuses them
            continue
        key = f"{path_in_layer(module)} {tuple(tensors[f'{module}{CORE_TAG}2'].shape)}"
        ref = first.setdefault(key, module)
        for j in SHARED_CORES:
            if ref != module and not torch.equal(tensors[f"{module}{CORE_TAG}{j}"], tensors[f"{ref}{CORE_TAG}{j}"]):
                raise ValueError(f"{owner}: layout='stacked', but core {j} of {module} differs from {ref}'s; the "
                                 "layers of a module share that core, so these weights are no stacked expert.")


def unique_core_params(tensors: dict[str, torch.Tensor]) -> int:
    """Entries of a stacked expert's cores, each module's shared V and U counted once."""
    seen, total = set(), 0
    for k, v in tensors.items():
        if CORE_TAG not in k:
            continue
        module, _, j = k.rpartition(CORE_TAG)
        if int(j) in SHARED_CORES:
            shared = (path_in_layer(module), int(j), tuple(v.shape))
            if shared in seen:
                continue
            seen.add(shared)
        total += v.numel()
    return total


__all__ = ["LAYOUTS", "SHARED_CORES", "check_tied", "stack_groups", "stacked_modes", "tie_stacks_",
           "unique_core_params"]
