"""Load-balancing and z-losses: values at known points, padding invariance, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from hf_ttmoe.losses import gate_entropy, load_balancing_loss, router_z_loss


def test_balanced_router_scores_one_and_collapsed_router_scores_num_experts():
    num_experts, tokens = 4, 8
    balanced = torch.zeros(1, tokens, num_experts)
    balanced[0, torch.arange(tokens), torch.arange(tokens) % num_experts] = 30.0  # each expert gets 2 tokens
    assert load_balancing_loss([balanced], num_experts).item() == pytest.approx(1.0, abs=1e-6)
    collapsed = torch.zeros(1, tokens, num_experts)
    collapsed[..., 0] = 30.0
    assert load_balancing_loss([collapsed], num_experts).item() == pytest.approx(num_experts, abs=1e-5)
    for k in (1, 2, 4):  # a uniform router is balanced for any k
        assert load_balancing_loss([torch.zeros(2, 5, 4)], 4, top_k=k).item() == pytest.approx(1.0, abs=1e-6)


def test_matches_the_switch_formula_by_hand_and_averages_layers():
    g = torch.Generator().manual_seed(0)
    layers = [torch.randn(2, 3, 5, generator=g) for _ in range(3)]
    by_hand = []
    for logits in layers:
        p = logits.reshape(-1, 5).softmax(-1)
        f = torch.nn.functional.one_hot(p.argmax(-1), 5).float().mean(0)
        by_hand.append(5 * (f * p.mean(0)).sum())
    assert load_balancing_loss(layers, 5).item() == pytest.approx(torch.stack(by_hand).mean().item(), rel=1e-6)
    assert load_balancing_loss(torch.stack(layers), 5).item() == pytest.approx(load_balancing_loss(layers, 5).item())


def test_padding_does_not_change_the_losses():
    g = torch.Generator().manual_seed(1)
    logits = [torch.randn(2, 6, 4, generator=g) for _ in range(2)]
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    padded = [torch.cat([x, 50 * torch.randn(2, 5, 4, generator=g)], dim=1) for x in logits]  # wild pad logits
    padded_mask = torch.cat([mask, torch.zeros(2, 5, dtype=mask.dtype)], dim=1)
    for fn in (lambda x, m: load_balancing_loss(x, 4, 2, m), lambda x, m: router_z_loss(x, m)):
        assert fn(padded, padded_mask).item() == pytest.approx(fn(logits, mask).item(), rel=1e-6)
    assert load_balancing_loss(logits, 4, None, mask).item() != pytest.approx(load_balancing_loss(logits, 4).item())


def test_z_loss_and_entropy_by_hand():
    logits = torch.tensor([[[0.0, 0.0], [1.0, 2.0]]])
    lse = [math.log(2.0), math.log(math.e + math.e**2)]
    assert router_z_loss([logits]).item() == pytest.approx((lse[0] ** 2 + lse[1] ** 2) / 2, rel=1e-6)
    assert gate_entropy(torch.zeros(3, 4)).item() == pytest.approx(math.log(4), rel=1e-6)


def test_gradient_flows_to_the_logits():
    logits = torch.randn(2, 4, 3, requires_grad=True)
    load_balancing_loss([logits], 3).backward()
    assert logits.grad.abs().sum() > 0


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_matches_transformers_mixtral_convention_for_one_layer(top_k):
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    g = torch.Generator().manual_seed(top_k)
    logits = torch.randn(3, 7, 5, generator=g)
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[0, 4:] = 0
    mask[2, 1:] = 0
    for m in (None, mask):
        theirs = load_balancing_loss_func((logits.reshape(-1, 5),), 5, top_k, m)
        ours = load_balancing_loss([logits], 5, top_k, m)
        assert (top_k * ours).item() == pytest.approx(theirs.item(), rel=1e-6)  # Mixtral does not divide f by k
