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
(same path inside their layer) hold the *same* core-0 and core-2 parameters, so `parameters()` lists each once and
its gradient sums every layer's. Everything that reads chains (merging, the batched factors of `shared_factors.py`)
reads these unchanged. A saved expert stores each shared core once, under the name of its module's first layer
(`tied_aliases` names the others); readers of saved tensors (the MoE, the Hub card) resolve the other layers' cores
with `saved_cores`.
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
    """Layers grouped by module (path inside their layer, "attention.self.query"), in model order; a module whose
    weight shape differs between layers cannot share one U and V, and is refused naming it."""
    groups: dict[str, list[TTLoRALinear]] = {}
    for layer in layers:
        groups.setdefault(path_in_layer(layer.name), []).append(layer)
    for path, group in groups.items():
        shapes = {tuple(layer.base_layer.weight.shape) for layer in group}
        if len(shapes) > 1:
            raise ValueError(f"layout='stacked': the layers' {path!r} weights differ in shape ({sorted(shapes)}), so "
                             "they cannot share one U and V; adapt them with layout='chain'.")
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


def tied_aliases(layers: list[TTLoRALinear], prefix: str = "") -> dict[str, str]:
    """`{alias: name}`: the state-dict names of each shared core in the module's later layers, and the name of the
    same parameter in its first layer (the one that is saved)."""
    aliases = {}
    for group in stack_groups(layers).values():
        for layer in group[1:]:
            for j in SHARED_CORES:
                aliases[f"{prefix}{layer.name}{CORE_TAG}{j}"] = f"{prefix}{group[0].name}{CORE_TAG}{j}"
    return aliases


def saved_cores(tensors: dict[str, torch.Tensor], module: str, layout: str) -> list[torch.Tensor]:
    """The cores of `module` in an expert's saved tensors. A chain's are its own; a stacked layer's are its own S_l and
    the V and U it shares, saved once under its module's first layer (the one module of the same path inside its
    layer that has them)."""
    if layout != "stacked":
        count = sum(k.startswith(module + CORE_TAG) for k in tensors)
        return [tensors[f"{module}{CORE_TAG}{j}"] for j in range(count)]
    path, cores = path_in_layer(module), []
    for j in range(len(SHARED_CORES) + 1):
        key = f"{module}{CORE_TAG}{j}"
        if key not in tensors:
            owners = [k for k in tensors
                      if k.endswith(f"{CORE_TAG}{j}") and path_in_layer(k.split(CORE_TAG)[0]) == path]
            if len(owners) != 1:
                raise ValueError(f"{module}: core {j} is saved neither for it nor once for its module {path!r} "
                                 f"(found {owners}).")
            key = owners[0]
        cores.append(tensors[key])
    return cores


__all__ = ["LAYOUTS", "SHARED_CORES", "saved_cores", "stack_groups", "stacked_modes", "tie_stacks_", "tied_aliases"]
