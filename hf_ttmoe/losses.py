"""Auxiliary losses for mixture-of-experts gates, as free functions.

Router logits come per layer as `(batch, seq, num_experts)` (or `(tokens, num_experts)`); `attention_mask` is
`(batch, seq)` with 1 for real tokens. Padding tokens never count.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def _flatten(router_logits: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """`(tokens, E)` logits of the non-padding tokens of one layer."""
    logits = router_logits.reshape(-1, router_logits.shape[-1])  # (B·T, E)
    if attention_mask is None:
        return logits
    return logits[attention_mask.reshape(-1).bool()]


def stack_router_logits(router_logits: Sequence[torch.Tensor] | torch.Tensor,
             attention_mask: torch.Tensor | None) -> torch.Tensor:
    """`(L, N, E)`: every layer's router logits at the N non-padding tokens, in one tensor, so that a loss over all
    layers is a few ops, not a few per layer (on a GPU each op is a kernel launch)."""
    logits = router_logits if isinstance(router_logits, torch.Tensor) else torch.stack(tuple(router_logits))
    logits = logits.reshape(logits.shape[0], -1, logits.shape[-1])  # (L, B·T, E)
    if attention_mask is None:
        return logits
    return logits[:, attention_mask.reshape(-1).bool()]


def load_balancing_loss(
    router_logits: Sequence[torch.Tensor] | torch.Tensor,
    num_experts: int,
    top_k: int | None = None,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Switch Transformer load-balancing loss (Fedus et al. 2021, eqs. 4-6), averaged over layers.

    For each layer, over its N non-padding tokens x:

        loss = E · Σ_i f_i · P_i,   f_i = (1/N) Σ_x 1[x is dispatched to i] / k,   P_i = (1/N) Σ_x p_i(x)

    where p(x) is the softmax of the router logits and "dispatched" is the top-k assignment (top-1 for a dense
    gate, `top_k=None`, as in Switch). Dividing by k makes Σ_i f_i = 1, so a perfectly balanced router scores 1 for
    any k. Only P carries gradient (f is a count), which pushes probability mass away from overloaded experts.

    Conventions vs transformers' `models/mixtral/modeling_mixtral.py::load_balancing_loss_func`: for one layer,
    Mixtral's value is k times ours (it does not divide f by k); over several layers Mixtral pools the tokens of all
    layers into one f and one P, whereas we take the mean of the per-layer losses (each layer has its own gate).

    Args:
        router_logits: one `(batch, seq, E)` tensor per layer (a sequence, or stacked on a leading layer axis).
        num_experts: E.
        top_k: experts per token; `None` = dense gate, counted as top-1.
        attention_mask: `(batch, seq)`, 1 for real tokens; `None` = all tokens count.
    """
    k = top_k or 1
    logits = stack_router_logits(router_logits, attention_mask)  # (L, N, E)
    if logits.shape[1] == 0:
        return torch.zeros((), device=logits.device)
    probs = logits.float().softmax(-1)
    chosen = probs.topk(k, dim=-1).indices  # (L, N, k)
    dispatch = torch.zeros_like(probs).scatter_(-1, chosen, 1.0)  # (L, N, E)
    f = dispatch.mean(1) / k  # (L, E)
    p = probs.mean(1)  # (L, E)
    return num_experts * (f * p).sum(-1).mean()


def router_z_loss(
    router_logits: Sequence[torch.Tensor] | torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    r"""Router z-loss (Zoph et al. 2022, ST-MoE, eq. 5), averaged over layers: `(1/N) Σ_x (log Σ_j exp(z_j(x)))²`.

    Keeps router logits small, which stabilizes training. Non-padding tokens only.
    """
    logits = stack_router_logits(router_logits, attention_mask)  # (L, N, E)
    if logits.shape[1] == 0:
        return torch.zeros((), device=logits.device)
    return torch.logsumexp(logits.float(), dim=-1).square().mean()


def gate_entropy(router_logits: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean entropy (nats) of one layer's gate distribution over non-padding tokens."""
    probs = _flatten(router_logits, attention_mask).float().softmax(-1)
    return -(probs * probs.clamp_min(1e-12).log()).sum(-1).mean()


def router_loss(router_logits: torch.Tensor, task_ids: torch.Tensor, aux_loss_coef: float = 0.0) -> torch.Tensor:
    """A task router's training loss: cross-entropy of its logits `(B, E)` against the task ids `(B,)`, plus
    `aux_loss_coef` times the load-balancing loss over the batch (one routing decision per row)."""
    loss = F.cross_entropy(router_logits, task_ids)
    if aux_loss_coef:
        loss = loss + aux_loss_coef * load_balancing_loss(router_logits[None], router_logits.shape[-1])
    return loss


__all__ = ["gate_entropy", "load_balancing_loss", "router_loss", "router_z_loss", "stack_router_logits"]
