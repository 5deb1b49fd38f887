"""An optimizer that steps TT-LoRA cores in the metric of their tensor train, not in their own coordinates."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.optim import Optimizer

from .. import tt
from .layer import TTLoRALinear

MODES = ("gradient", "gauge")


def tt_chains(model: nn.Module) -> list[list[nn.Parameter]]:
    """The trainable core lists of every `TTLoRALinear` in `model` (chains whose cores all require gradients).

    Raises `ValueError` when a core belongs to two chains (`layout="stacked"`: the layers share U and V), where one
    gradient would be preconditioned for several chains at once."""
    chains = [list(m.ttlora_cores) for m in model.modules()
              if isinstance(m, TTLoRALinear) and all(c.requires_grad for c in m.ttlora_cores)]
    ids = [id(c) for chain in chains for c in chain]
    if len(ids) != len(set(ids)):
        raise ValueError("a TT-LoRA core is shared by several layers (layout='stacked'); the train's metric is "
                         "defined per chain, so create_riemannian_optimizer takes layout='chain' experts only.")
    return chains


def _layouts(chains: list[list[nn.Parameter]]) -> list[list[list[nn.Parameter]]]:
    """The chains grouped by layout (core shapes, dtype, device): one group is preconditioned as one stack."""
    groups: dict[tuple, list[list[nn.Parameter]]] = {}
    for cores in chains:
        groups.setdefault(tuple((c.shape, c.dtype, c.device) for c in cores), []).append(cores)
    return list(groups.values())


def _precondition_groups(chains: list[list[nn.Parameter]], reg: float, power: float) -> list[tuple]:
    """Replace the core gradients of the chains that have them all, in place, by `tt.tt_precondition`'s, one stack per
    layout, computed in at least float32. Returns, per layout, `(chains, stacked cores (C, r, n, s) as they were,
    their metric factors)`. Its callers run it under `torch.no_grad()`, so stacking the cores copies them without a
    graph."""
    plans = []
    for group in _layouts([c for c in chains if all(p.grad is not None for p in c)]):
        dtype = torch.promote_types(group[0][0].dtype, torch.float32)
        cores = [torch.stack([chain[j] for chain in group]).to(dtype) for j in range(len(group[0]))]
        factors = tt.tt_metric_factors(cores, reg, power)
        grads = tt.tt_apply_metric(factors, [torch.stack([chain[j].grad for chain in group]).to(dtype)
                                             for j in range(len(group[0]))])
        for j, grad in enumerate(grads):  # one foreach copy per core position, not one copy per chain
            torch._foreach_copy_([chain[j].grad for chain in group], list(grad.unbind(0)))
        plans.append((group, cores, factors))
    return plans


@torch.no_grad()
def precondition_chains(chains: list[list[nn.Parameter]], reg: float, power: float = 1.0) -> None:
    """Replace each chain's core gradients, in place, by `tt.tt_precondition`'s. Chains of one layout are stacked and
    preconditioned together (a few ops for all of them, not a few per chain)."""
    _precondition_groups(chains, reg, power)


def create_riemannian_optimizer(
    model: nn.Module,
    optimizer_cls: type[Optimizer] = torch.optim.AdamW,
    *,
    lr: float,
    reg: float = 1e-2,
    mode: str = "gradient",
    params: Iterable | None = None,
    **kwargs,
) -> Optimizer:
    """`optimizer_cls` over the model's trainable parameters, stepping every TT-LoRA chain's cores in the metric of
    their train (`tt.tt_precondition`); other parameters are stepped unchanged. Pass it to
    `Trainer(optimizers=(optimizer, None))`.

    A chain of N cores has a gauge freedom (`G_j A`, `A⁻¹ G_{j+1}` give the same ΔW) that LoRA's two factors have
    too, and a plain optimizer's step depends on it: a core moves ΔW in proportion to the scale of all the others.

    Args:
        model: a model holding `TTLoRALinear` layers (`TTLoRAModel`, or a base model they were injected into).
        optimizer_cls: the optimizer to wrap, e.g. `torch.optim.AdamW` or `torch.optim.SGD`.
        lr: its learning rate.
        reg: damping added to each `r × r` interface Gram, > 0.
        mode: "gradient": each core's gradient times its inverse interface Grams, then `optimizer_cls`'s step: the
            TT form of PEFT's `create_riemannian_optimizer` for LoRA (Zhang & Pilanci 2024), which is exact
            Riemannian (scaled) gradient descent under SGD. "gauge": `optimizer_cls` run in the gauge where each
            core's interfaces are orthonormal: the gradient mapped into it and the step mapped back (each by the
            inverse square roots of the Grams), so an Adam step of size lr moves ΔW by about lr through every core.
        params: parameters or parameter groups to optimize (default: every parameter that requires gradients).
        kwargs: passed to `optimizer_cls` (`weight_decay`, `betas`, ...).
    """
    if not (isinstance(optimizer_cls, type) and issubclass(optimizer_cls, Optimizer)):
        raise TypeError(f"optimizer_cls={optimizer_cls!r} is not a torch.optim.Optimizer subclass.")
    if not reg > 0:
        raise ValueError(f"reg={reg!r} must be > 0: the zero-initialised last core makes the interface Grams "
                         "singular at step 0.")
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not one of {MODES}.")
    chains = tt_chains(model)
    if not chains:
        raise ValueError("create_riemannian_optimizer found no trainable TT-LoRA chain (TTLoRALinear) in the model; "
                         "it preconditions TT-LoRA cores (layout='chain') only.")
    power = 1.0 if mode == "gradient" else 0.5
    if mode == "gauge" and kwargs.get("weight_decay") and not issubclass(optimizer_cls, torch.optim.AdamW):
        raise ValueError(f"mode='gauge' with weight_decay={kwargs['weight_decay']!r} needs torch.optim.AdamW (its "
                         f"decoupled decay stays in the cores' own coordinates); {optimizer_cls.__name__}'s decay "
                         "would be mapped with the step. Use AdamW, or weight_decay=0.")

    class RiemannianTT(optimizer_cls):
        @torch.no_grad()
        def step(self, closure: Callable | None = None):
            loss = None
            if closure is not None:  # gradients come from the closure: compute them before preconditioning
                with torch.enable_grad():
                    loss = closure()
            plans = _precondition_groups(chains, reg, power)
            super().step()
            if mode == "gauge":
                self._steps_from_gauge(plans)
            return loss

        def _steps_from_gauge(self, plans) -> None:
            """Map each core's step back from the orthonormal gauge, at the cores it started from (held by the plans,
            with their metric factors). AdamW's decoupled weight decay (`p ← p·(1 − lr·wd)` before its step) stays
            in the cores' own coordinates."""
            decay = {id(p): g["lr"] * g.get("weight_decay", 0.0) for g in self.param_groups for p in g["params"]}
            for group, old, factors in plans:
                kept = [old[j].new_tensor([1 - decay[id(chain[j])] for chain in group]).view(-1, 1, 1, 1) * old[j]
                        for j in range(len(old))]  # (C, r, n, s): each core decayed, before its step
                steps = [torch.stack([chain[j] for chain in group]).to(old[j]) - kept[j]
                         for j in range(len(old))]
                for j, new in enumerate(tt.tt_apply_metric(factors, steps)):
                    torch._foreach_copy_([chain[j] for chain in group], list((kept[j] + new).unbind(0)))

    RiemannianTT.__name__ = RiemannianTT.__qualname__ = f"RiemannianTT{optimizer_cls.__name__}"
    params = [p for p in model.parameters() if p.requires_grad] if params is None else params
    optimizer = RiemannianTT(params, lr=lr, **kwargs)
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    chains = [c for c in chains if all(id(p) in optimized for p in c)]  # the step reads this list
    if not chains:
        raise ValueError("create_riemannian_optimizer: `params` holds no whole TT-LoRA chain (every core of a layer) "
                         "to precondition.")
    return optimizer


__all__ = ["MODES", "create_riemannian_optimizer", "precondition_chains", "tt_chains"]
