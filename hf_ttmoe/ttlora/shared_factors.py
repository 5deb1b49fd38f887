"""Every adapted layer's TT factors at once (DESIGN idea 7).

Building U, V from one layer's cores is a chain of ~20 small ops forward and as many backward; a model adapts a dozen
or more matrices, and on a GPU each op is a kernel launch. Layers that share a TT layout (all query/value matrices of
a model, typically) are stacked instead: per group, one `torch.stack` per core position, one batched chain of
contractions (`tt.tt_factors_t` on stacked cores) and one `unbind`, forward and backward, however many layers the group
holds. The cores stay per-layer parameters, so checkpoints keep their per-module names and shapes.
"""

from __future__ import annotations

import contextlib

import torch

from .. import tt
from ..saved_model import is_partitioned
from .layer import TTLoRALinear, pad_rank


class _Stack(torch.autograd.Function):
    """`torch.stack` of the layers' cores whose backward hands each layer its gradient in one `unbind`, where
    `torch.stack`'s own backward runs one `select` per layer."""

    @staticmethod
    def forward(ctx, *cores: torch.Tensor) -> torch.Tensor:
        return torch.stack(cores)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return grad.unbind(0)


def _shares_factors(layer: TTLoRALinear) -> bool:
    """Layers whose factors carry gradient this step, on the "factors" path (the others build or cache their own)."""
    first = layer.ttlora_cores[0]
    return layer.forward_impl == "factors" and not layer.merged and first.requires_grad and not is_partitioned(first)


def factor_groups(layers: list[TTLoRALinear]) -> list[list[TTLoRALinear]]:
    """Layers grouped by what a batched chain needs alike: layout, ranks, scaling, dtype and device."""
    groups: dict[tuple, list[TTLoRALinear]] = {}
    for layer in layers:
        first = layer.ttlora_cores[0]
        key = (tuple(layer.in_modes), tuple(layer.out_modes), tuple(layer.ranks), layer.scaling, first.dtype,
               first.device)
        groups.setdefault(key, []).append(layer)
    return list(groups.values())


def stacked_scaled_factors_t(group: list[TTLoRALinear]) -> tuple[torch.Tensor, torch.Tensor]:
    """`(Vᵀ, scaling · Uᵀ)` of every layer of `group`, stacked: `(L, in, r)`, `(L, r, out)` (rank padded as each layer
    pads its own, see `TTLoRALinear.scaled_factors_t`)."""
    first = group[0]
    cores = [_Stack.apply(*(layer.ttlora_cores[j] for layer in group)) for j in range(len(first.ttlora_cores))]
    v_t, u_t = pad_rank(*tt.tt_factors_t(cores, first.num_in_modes))  # (L, in, r), (L, r, out)
    return v_t, u_t * first.scaling


@contextlib.contextmanager
def shared_factors(layers: list[TTLoRALinear]):
    """Within this context, each layer of a group of two or more reads its slice of the group's stacked factors
    instead of building its own. A no-op without gradient (inference caches each layer's factors instead)."""
    groups = [g for g in factor_groups([x for x in layers if _shares_factors(x)]) if len(g) > 1]
    if not torch.is_grad_enabled() or not groups:
        yield
        return
    try:
        for group in groups:
            v_t, u_t = stacked_scaled_factors_t(group)
            for layer, v_i, u_i in zip(group, v_t.unbind(0), u_t.unbind(0), strict=True):
                layer.shared_factors = (v_i, u_i)
                layer._factor_cache = None  # a training step follows; not every optimizer bumps the cores' versions
        yield
    finally:
        for group in groups:
            for layer in group:
                layer.shared_factors = None


__all__ = ["factor_groups", "shared_factors", "stacked_scaled_factors_t"]
