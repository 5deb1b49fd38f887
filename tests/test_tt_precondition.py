"""The scaled (Riemannian) metric of a tensor train: interface Grams, the preconditioned gradient against an
alternating-least-squares oracle, and the optimizer that applies it to TT-LoRA chains."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import random_expert, rel_err, tiny_batch

from hf_ttmoe import TTLoRALinear, create_riemannian_optimizer, tt
from hf_ttmoe.tt import _chain

CASES = [([4, 3], [2, 5], 3), ([2, 3, 2], [3, 4], [2, 3, 4, 2]), ([6], [4, 2], 2)]  # in modes, out modes, rank


def random_cores(in_modes, out_modes, rank, seed=0):
    g = torch.Generator().manual_seed(seed)
    modes = [*in_modes, *out_modes]
    ranks = tt.tt_ranks(len(modes), rank)
    return [torch.randn(ranks[j], n, ranks[j + 1], generator=g, dtype=torch.float64) for j, n in enumerate(modes)]


def interfaces(cores, j):
    """`X_{<j}: (n_1…n_{j-1}, r_{j-1})` and `X_{>j}: (r_j, n_{j+1}…n_N)`, formed explicitly."""
    left = _chain(cores[:j]).reshape(-1, cores[j].shape[0]) if j else torch.ones(1, 1, dtype=cores[0].dtype)
    if j + 1 < len(cores):
        tail = [cores[j + 1].reshape(1, -1, cores[j + 1].shape[2]), *cores[j + 2:]]  # (1, r_j·n_{j+1}, r_{j+1}), …
        right = _chain(tail).reshape(cores[j].shape[2], -1)
    else:
        right = torch.ones(1, 1, dtype=cores[0].dtype)
    return left, right


@pytest.mark.parametrize("in_modes, out_modes, rank", CASES)
def test_interface_grams_match_the_formed_interfaces(in_modes, out_modes, rank):
    cores = random_cores(in_modes, out_modes, rank)
    left, right = tt.tt_interface_grams(cores)
    assert len(left) == len(right) == len(cores)
    for j in range(len(cores)):
        x_left, x_right = interfaces(cores, j)
        assert rel_err(left[j], x_left.T @ x_left) < 1e-12
        assert rel_err(right[j], x_right @ x_right.T) < 1e-12


@pytest.mark.parametrize("in_modes, out_modes, rank", CASES)
def test_undamped_step_is_the_least_squares_update_of_each_core(in_modes, out_modes, rank):
    """For ½‖ΔW − T‖², core minus its preconditioned gradient (reg 0) is the best core with the others fixed."""
    cores = random_cores(in_modes, out_modes, rank, seed=1)
    n_in, n_out = math.prod(in_modes), math.prod(out_modes)
    target = torch.randn(n_out, n_in, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    params = [c.clone().requires_grad_() for c in cores]
    loss = 0.5 * (tt.tt_to_matrix(params, len(in_modes)) - target).pow(2).sum()
    grads = torch.autograd.grad(loss, params)
    new = tt.tt_precondition(cores, grads, reg=0.0)
    flat_target = target.T.reshape(-1)  # the chain's row-major (i_1, …, i_m, o_1, …, o_k) order
    for j, core in enumerate(cores):
        x_left, x_right = interfaces(cores, j)
        design = torch.kron(torch.kron(x_left, torch.eye(core.shape[1], dtype=core.dtype)), x_right.T.contiguous())
        best = torch.linalg.lstsq(design, flat_target).solution.reshape(core.shape)
        assert rel_err(core - new[j], best) < 1e-8, j


def test_damping_shrinks_the_step_where_an_interface_is_unused():
    """At init the last core is zero, so every other core's right Gram is zero: the damped inverse is 1/reg there."""
    cores = tt.init_tt_cores([4, 3], [2, 6], [1, 3, 3, 3, 1], generator=torch.Generator().manual_seed(0),
                             dtype=torch.float64)
    grads = [torch.ones_like(c) for c in cores]
    new = tt.tt_precondition(cores, grads, reg=0.5)
    left, _ = tt.tt_interface_grams(cores)
    for j in range(len(cores) - 1):
        inv_l = torch.linalg.inv(left[j] + 0.5 * torch.eye(left[j].shape[0], dtype=torch.float64))
        assert rel_err(new[j], torch.einsum("ab,bnc->anc", inv_l, grads[j]) / 0.5) < 1e-12
    assert torch.isfinite(new[-1]).all()


def test_optimizer_preconditions_cores_and_leaves_other_parameters_alone():
    model = random_expert("bert", seed=3)
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt = create_riemannian_optimizer(model, torch.optim.SGD, lr=0.1, reg=1e-2)
    assert type(opt).__name__ == "RiemannianTTSGD"
    out = model(**tiny_batch(), labels=torch.tensor([0, 1, 1, 0]))
    out.loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    layers = [(n, m) for n, m in model.named_modules() if hasattr(m, "ttlora_cores")]
    assert layers
    expected = dict(before)
    for name, layer in layers:
        names = [f"{name}.ttlora_cores.{j}" for j in range(len(layer.ttlora_cores))]
        cores = [before[n] for n in names]
        for n, g in zip(names, tt.tt_precondition(cores, [grads[n] for n in names], 1e-2), strict=True):
            expected[n] = before[n] - 0.1 * g
    core_names = {n for n in before if ".ttlora_cores." in n}
    for n in before:
        if n not in core_names:
            expected[n] = before[n] - 0.1 * grads[n]
    opt.step()
    params = dict(model.named_parameters())
    for n, value in expected.items():
        assert rel_err(params[n].detach(), value) < 1e-5, n
    assert all(rel_err(expected[n] - before[n], -0.1 * grads[n]) > 0.1 for n in core_names)  # it did precondition


def test_optimizer_with_a_closure_preconditions_the_closure_gradients():
    batch, labels = tiny_batch(), torch.tensor([0, 1, 1, 0])
    model, twin = (random_expert("bert", seed=4).train() for _ in range(2))
    opt, twin_opt = (create_riemannian_optimizer(m, torch.optim.SGD, lr=0.1) for m in (model, twin))

    def closure():
        opt.zero_grad()
        loss = model(**batch, labels=labels).loss
        loss.backward()
        return loss

    twin(**batch, labels=labels).loss.backward()
    twin_opt.step()
    assert opt.step(closure) is not None
    for (name, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6), name
    fresh = random_expert("bert", seed=4)
    assert not all(torch.equal(p, q) for p, q in zip(model.parameters(), fresh.parameters(), strict=True))


def test_optimizer_refuses_bad_arguments():
    model = random_expert("bert")
    with pytest.raises(ValueError, match="reg=0"):
        create_riemannian_optimizer(model, lr=1e-3, reg=0)
    with pytest.raises(ValueError, match="mode='whitened' is not one of"):
        create_riemannian_optimizer(model, lr=1e-3, mode="whitened")
    with pytest.raises(TypeError, match="not a torch.optim.Optimizer"):
        create_riemannian_optimizer(model, object, lr=1e-3)
    with pytest.raises(ValueError, match="no trainable TT-LoRA chain"):
        create_riemannian_optimizer(torch.nn.Linear(3, 3), lr=1e-3)
    head = [p for n, p in model.named_parameters() if p.requires_grad and ".ttlora_cores." not in n]
    with pytest.raises(ValueError, match="holds no whole TT-LoRA chain"):
        create_riemannian_optimizer(model, lr=1e-3, params=head)
    stacked = random_expert("bert", layout="stacked", tt_shapes=None)
    with pytest.raises(ValueError, match="shared by several layers"):
        create_riemannian_optimizer(stacked, lr=1e-3)


def test_stacked_chains_precondition_as_each_chain_alone():
    chains = [random_cores([4, 3], [2, 5], 3, seed=s) for s in range(3)]
    grads = [[torch.randn_like(c) for c in chain] for chain in chains]
    stacked = tt.tt_precondition([torch.stack(c) for c in zip(*chains)], [torch.stack(g) for g in zip(*grads)], 0.1)
    for k, (chain, grad) in enumerate(zip(chains, grads, strict=True)):
        for got, want in zip(stacked, tt.tt_precondition(chain, grad, 0.1), strict=True):
            assert rel_err(got[k], want) < 1e-12


def one_layer(seed: int = 0, scale: float = 1.0) -> torch.nn.Module:
    """A TT-LoRA layer on a frozen 12 → 10 linear with random cores; `scale` multiplies core 1 and divides core 2,
    which leaves ΔW unchanged (the train's gauge freedom)."""
    torch.manual_seed(seed)
    base = torch.nn.Linear(12, 10).double().requires_grad_(False)
    layer = TTLoRALinear(base, in_modes=[4, 3], out_modes=[2, 5], tt_rank=3)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for j, core in enumerate(layer.ttlora_cores):
            core.copy_(torch.randn(core.shape, generator=g, dtype=torch.float64) * (scale if j == 1 else 1.0)
                       / (scale if j == 2 else 1.0))
    return layer


def delta_after_one_step(layer, optimizer) -> torch.Tensor:
    x = torch.randn(6, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    target = torch.randn(6, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    (layer(x) - target).pow(2).sum().backward()
    optimizer.step()
    return layer.delta_weight().detach()


def test_gauge_mode_under_sgd_is_the_gradient_mode():
    """Mapping the gradient into the orthonormal gauge and the step back applies the inverse Grams' square roots
    twice, i.e. the inverse Grams once."""
    layers = [one_layer(), one_layer()]
    deltas = [delta_after_one_step(layer, create_riemannian_optimizer(layer, torch.optim.SGD, lr=0.05, mode=mode))
              for layer, mode in zip(layers, ("gradient", "gauge"), strict=True)]
    assert rel_err(deltas[1], deltas[0]) < 1e-10


def test_gauge_mode_adam_step_does_not_depend_on_the_gauge():
    """Rescaling one core up and the next down leaves ΔW unchanged; in the gauge mode it leaves AdamW's step on ΔW
    unchanged too, where plain AdamW's step depends on it."""
    def step(scale, make):
        layer = one_layer(scale=scale)
        return delta_after_one_step(layer, make(layer))

    gauge = [step(s, lambda m: create_riemannian_optimizer(m, lr=1e-2, reg=1e-12, mode="gauge")) for s in (1.0, 8.0)]
    plain = [step(s, lambda m: torch.optim.AdamW(m.ttlora_cores.parameters(), lr=1e-2)) for s in (1.0, 8.0)]
    assert rel_err(gauge[1], gauge[0]) < 1e-6
    assert rel_err(plain[1], plain[0]) > 1e-2


def test_gauge_mode_keeps_adamw_weight_decay_in_the_cores_coordinates():
    """With the gradient zero, AdamW's step is its decay alone: the gauge mode must give exactly `p·(1 − lr·wd)`."""
    layer = one_layer()
    before = [c.detach().clone() for c in layer.ttlora_cores]
    opt = create_riemannian_optimizer(layer, lr=0.1, weight_decay=0.5, mode="gauge")
    for core in layer.ttlora_cores:
        core.grad = torch.zeros_like(core)
    opt.step()
    for core, old in zip(layer.ttlora_cores, before, strict=True):
        assert rel_err(core.detach(), old * (1 - 0.05)) < 1e-12
    with pytest.raises(ValueError, match="needs torch.optim.AdamW"):
        create_riemannian_optimizer(layer, torch.optim.SGD, lr=0.1, weight_decay=0.5, mode="gauge")


@pytest.mark.parametrize("mode", ["gradient", "gauge"])
def test_bfloat16_cores_step_as_the_float64_rule_rounded(mode):
    """bfloat16 cores are preconditioned in float32 and written back into bfloat16 gradients and cores."""
    wide, narrow = one_layer(seed=3), one_layer(seed=3).to(torch.bfloat16)
    g = torch.Generator().manual_seed(7)
    for a, b in zip(wide.ttlora_cores, narrow.ttlora_cores, strict=True):
        a.grad = torch.randn(a.shape, generator=g, dtype=torch.float64)
        b.grad = a.grad.to(torch.bfloat16)
    before = [[c.detach().double().clone() for c in layer.ttlora_cores] for layer in (wide, narrow)]
    for layer in (wide, narrow):
        create_riemannian_optimizer(layer, torch.optim.SGD, lr=5.0, mode=mode).step()  # a step well above rounding
    for a, b, a0, b0 in zip(wide.ttlora_cores, narrow.ttlora_cores, *before, strict=True):
        assert b.dtype == b.grad.dtype == torch.bfloat16
        assert rel_err(b.detach().double() - b0, a.detach() - a0) < 5e-2  # the steps agree to bfloat16's precision
