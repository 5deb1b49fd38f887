"""Every adapted layer's TT factors at once (hf_ttmoe/ttlora/shared_factors.py) against each layer building its own."""

from __future__ import annotations

import pytest
import torch
from conftest import randomize_, rel_err, tiny_base, tiny_batch

from hf_ttmoe import TTLoRAConfig, TTLoRAModel
from hf_ttmoe.adapter import AdapterModel
from hf_ttmoe.testing import top_level_ops
from hf_ttmoe.ttlora.shared_factors import factor_groups

TOL = 1e-5

CASES = [  # (base, tt_rank, target_modules): one layout group, two groups (Llama's GQA v_proj is 32x16), odd ranks
    ("bert", 5, None),
    ("llama", 3, None),
    ("llama", 2, ["q_proj", "k_proj", "v_proj", "o_proj"]),
    ("bert", 4, ["query", "value", "intermediate.dense"]),
]


def expert(kind: str, tt_rank, targets) -> TTLoRAModel:
    config = TTLoRAConfig(num_labels=3, tt_rank=tt_rank, target_modules=targets)
    return randomize_(TTLoRAModel(config, base_model=tiny_base(kind, num_labels=3)), seed=1).train()


def step(model, shared: bool):
    """Logits and core gradients of one training step, with the shared factors (`model(...)`) or each layer building
    its own (`AdapterModel.forward`, which the sharing wraps)."""
    model.zero_grad(set_to_none=True)
    batch = {**tiny_batch(), "labels": torch.tensor([0, 1, 2, 1])}
    out = model(**batch) if shared else AdapterModel.forward(model, **batch)
    out.loss.backward()
    return out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind, tt_rank, targets", CASES)
def test_shared_factors_give_each_layers_outputs_and_gradients(kind, tt_rank, targets):
    model = expert(kind, tt_rank, targets)
    groups = factor_groups(model.adapter_layers())
    assert sum(len(g) for g in groups) == len(model.adapter_layers()) and any(len(g) > 1 for g in groups)
    logits, grads = step(model, shared=True)
    own_logits, own_grads = step(model, shared=False)
    assert rel_err(logits, own_logits) <= TOL
    assert grads.keys() == own_grads.keys() and any("ttlora_cores" in n for n in grads)
    for name in grads:
        assert rel_err(grads[name], own_grads[name]) <= TOL, name
    assert all(layer.shared_factors is None for layer in model.adapter_layers())  # nothing held past the forward


def test_sharing_stays_out_of_inference_and_merged_layers(monkeypatch):
    model = expert("bert", 5, None)
    layer_cls = type(model.adapter_layers()[0])
    seen = []
    original = layer_cls.scaled_factors

    def spy(self):
        seen.append(self.shared_factors is not None)
        return original(self)

    monkeypatch.setattr(layer_cls, "scaled_factors", spy)
    with torch.no_grad():
        model(**tiny_batch())
    assert seen and not any(seen)  # without gradient each layer's cached factors serve
    seen.clear()
    model(**tiny_batch())
    assert seen and all(seen)


def test_shared_factors_launch_fewer_ops_as_layers_grow():
    """Deterministic op counts (what a GPU pays in launches): building factors per layer costs a chain per layer,
    sharing costs one chain per layout, so the saving grows with the number of adapted layers."""
    model = expert("bert", 5, ["query", "key", "value", "dense"])
    shared = top_level_ops(lambda: step(model, shared=True))
    own = top_level_ops(lambda: step(model, shared=False))
    assert shared < 0.8 * own, (shared, own)


def test_inference_after_a_fused_optimizer_step_sees_the_new_cores():
    """Fused AdamW updates the cores without bumping their version counters, so the inference cache cannot tell: the
    training forward in between must drop it (the shared path does, as each layer's own path does)."""
    model = expert("bert", 5, None)
    with torch.no_grad():
        model.eval()(**tiny_batch())  # each layer caches its factors
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, fused=True)
    model.train()
    step(model, shared=True)
    optimizer.step()
    model.eval()
    with torch.no_grad():
        served = model(**tiny_batch()).logits
        for layer in model.adapter_layers():
            layer._factor_cache = None
        assert torch.equal(served, model(**tiny_batch()).logits)
