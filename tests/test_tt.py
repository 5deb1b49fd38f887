"""Oracle tests for the tensor-train math: every path against an independent dense reference."""

from __future__ import annotations

import itertools
import math
import random
import statistics

import pytest
import torch
import torch.nn.functional as F
from conftest import rel_err

from hf_ttmoe import tt

TOL = 1e-5  # fp32 relative error bound stated by the issue


def dense_reference(cores, num_in):
    """ΔW[o, i] as an explicit product of core slices, index by index: independent of every code path in tt.py."""
    in_modes = [c.shape[1] for c in cores[:num_in]]
    out_modes = [c.shape[1] for c in cores[num_in:]]
    w = torch.zeros(math.prod(out_modes), math.prod(in_modes), dtype=torch.float64)
    for i, i_idx in enumerate(itertools.product(*map(range, in_modes))):
        for o, o_idx in enumerate(itertools.product(*map(range, out_modes))):
            prod = torch.eye(1, dtype=torch.float64)
            for core, k in zip(cores, (*i_idx, *o_idx)):
                prod = prod @ core[:, k, :].double()
            w[o, i] = prod.item()
    return w


def random_case(seed):
    rnd = random.Random(seed)
    in_modes = [rnd.randint(1, 4) for _ in range(rnd.randint(1, 3))]
    out_modes = [rnd.randint(1, 4) for _ in range(rnd.randint(1, 3))]
    n = len(in_modes) + len(out_modes)
    rank = rnd.randint(1, 4) if rnd.random() < 0.5 else [rnd.randint(1, 4) for _ in range(n - 1)]
    ranks = tt.tt_ranks(n, rank)
    g = torch.Generator().manual_seed(seed)
    cores = [torch.randn(ranks[j], m, ranks[j + 1], generator=g) for j, m in enumerate([*in_modes, *out_modes])]
    return in_modes, out_modes, cores


CASES = list(range(12))


def test_factorize_is_balanced_deterministic_and_exact():
    assert tt.factorize(2048, 4) == [8, 8, 8, 4]
    assert tt.factorize(384) == [8, 8, 6]
    assert tt.factorize(13, 2) == [13, 1]
    for n in (1, 2, 12, 384, 512, 768, 1536, 2048, 4096, 8192, 3 * 5 * 7 * 11):
        modes = tt.factorize(n)
        assert math.prod(modes) == n and modes == sorted(modes, reverse=True) and modes == tt.factorize(n)
    with pytest.raises(ValueError, match="positive integer"):
        tt.factorize(0)


def test_cheapest_modes_minimize_the_half_chain_cost():
    assert tt.cheapest_modes(2048, 5) == [16, 4, 4, 4, 2]
    assert tt.cheapest_modes(384, 5) == [16, 4, 3, 2]
    assert tt.cheapest_modes(1, 5) == [1] and tt.cheapest_modes(13, 5) == [13]
    assert tt.cheapest_modes(2 * 17, 5) == [17, 2]  # a prime factor above MAX_MODE stays whole

    def cost(ms, r=5):
        return r * ms[0] + r * r * sum(ms[1:])

    for n in (384, 512, 768, 2048):  # brute force over every ordered factorization into modes <= 16
        best = min(cost(sorted(p, reverse=True)) for p in tt._multiplicative_partitions(n, 16))
        assert cost(tt.cheapest_modes(n, 5)) == best
        assert cost(tt.cheapest_modes(n, 5)) <= cost(tt.factorize(n))


def test_layout_keeps_given_modes_and_orders_automatic_ones_cheapest():
    assert tt.tt_layout(2048, 2048, [16, 8, 4, 4], [4, 4, 8, 16]) == ([16, 8, 4, 4], [4, 4, 8, 16])
    assert tt.tt_layout(2048, 512, [16, 16, 4, 2], [2, 16, 16]) == ([16, 16, 4, 2], [2, 16, 16])
    in_modes, out_modes = tt.tt_layout(2048, 512)
    assert in_modes == sorted(in_modes, reverse=True) and out_modes == sorted(out_modes)
    with pytest.raises(ValueError, match=r"in_modes=\[16, 8, 4\].*512.*2048"):
        tt.tt_layout(2048, 2048, [16, 8, 4], None)
    with pytest.raises(ValueError, match="out_modes"):
        tt.tt_layout(8, 6, [2, 4], [4, 2])


def test_reference_core_order_costs_what_the_paper_says():
    # q_proj of Llama-3.2-1B at rank 5: the reference order and the naive one (issue 2, part 5)
    modes_ref, modes_naive = [16, 8, 4, 4, 4, 4, 8, 16], [16, 8, 4, 4, 16, 8, 4, 4]
    v_modes = [16, 16, 4, 2, 2, 16, 16]
    q_ref = tt.tt_num_params(modes_ref, tt.tt_ranks(8, 5))
    v = tt.tt_num_params(v_modes, tt.tt_ranks(7, 5))
    assert (q_ref + v) * 16 == 33_920
    assert (tt.tt_num_params(modes_naive, tt.tt_ranks(8, 5)) + v) * 16 == 37_760


def test_ranks_forms_and_errors():
    assert tt.tt_ranks(3, 4) == [1, 4, 4, 1]
    assert tt.tt_ranks(3, [2, 3]) == [1, 2, 3, 1]
    assert tt.tt_ranks(3, [1, 2, 3, 1]) == [1, 2, 3, 1]
    with pytest.raises(ValueError, match="tt_rank=\\[2\\] does not fit a chain of 3 cores"):
        tt.tt_ranks(3, [2])
    with pytest.raises(ValueError, match=">= 1"):
        tt.tt_ranks(3, 0)


@pytest.mark.parametrize("seed", CASES)
def test_matrix_factors_and_contraction_match_dense_reference(seed):
    in_modes, out_modes, cores = random_case(seed)
    m = len(in_modes)
    ref = dense_reference(cores, m)
    assert rel_err(tt.tt_to_matrix(cores, m), ref) <= TOL
    u, v = tt.tt_factors(cores, m)
    assert u.shape == (math.prod(out_modes), cores[m].shape[0]) and v.shape == (cores[m].shape[0], math.prod(in_modes))
    assert rel_err(u @ v, ref) <= TOL
    v_t, u_t = tt.tt_factors_t(cores, m)  # (in, r), (r, out): no transposes, as the factors path applies them
    assert v_t.shape == v.T.shape and u_t.shape == u.T.shape
    assert rel_err(v_t @ u_t, ref.T) <= TOL
    x = torch.randn(2, 3, math.prod(in_modes), generator=torch.Generator().manual_seed(seed))
    assert rel_err(tt.tt_contract(x, cores, m), x.double() @ ref.T) <= TOL


def _three_paths(x, cores, m):
    u, v = tt.tt_factors(cores, m)
    v_t, u_t = tt.tt_factors_t(cores, m)
    return {
        "factors": F.linear(F.linear(x, v), u),
        "factors_t": x @ v_t @ u_t,
        "contraction": tt.tt_contract(x, cores, m),
        "reconstruction": F.linear(x, tt.tt_to_matrix(cores, m)),
    }


@pytest.mark.parametrize("seed", CASES)
def test_three_paths_agree_on_outputs_and_core_gradients(seed):
    in_modes, out_modes, cores = random_case(seed)
    m = len(in_modes)
    g = torch.Generator().manual_seed(100 + seed)
    x = torch.randn(5, math.prod(in_modes), generator=g)
    grad_out = torch.randn(5, math.prod(out_modes), generator=g)
    results = {}
    for name in ("factors", "factors_t", "contraction", "reconstruction"):
        leaves = [c.clone().requires_grad_(True) for c in cores]
        y = _three_paths(x, leaves, m)[name]
        (y * grad_out).sum().backward()
        results[name] = (y.detach(), [c.grad for c in leaves])
    dense = dense_reference(cores, m)
    for name, (y, grads) in results.items():
        assert rel_err(y, x.double() @ dense.T) <= TOL, name
        for g_path, g_ref in zip(grads, results["reconstruction"][1]):
            assert rel_err(g_path, g_ref) <= TOL, name


@pytest.mark.parametrize("lead", [(3,), (2, 3)])
@pytest.mark.parametrize("seed", CASES)
def test_stacked_chains_give_each_layers_factors_and_core_gradients(seed, lead):
    """Factors of stacked chains of one layout (one batched contraction; one or two leading dimensions) equal each
    chain's own, in both orientations, and so do the gradients reaching each chain's cores through them."""
    in_modes, out_modes, _ = random_case(seed)
    m, layers = len(in_modes), math.prod(lead)
    stacks = [torch.stack([random_case(seed)[2][j] * (i + 1) for i in range(layers)]).reshape(*lead, *core.shape)
              for j, core in enumerate(random_case(seed)[2])]
    g = torch.Generator().manual_seed(200 + seed)
    weights_u = torch.randn(*lead, math.prod(out_modes), stacks[m].shape[-3], generator=g)
    weights_v = torch.randn(*lead, stacks[m].shape[-3], math.prod(in_modes), generator=g)

    def loss(u, v):
        return (u * weights_u).sum() + (v * weights_v).sum()

    batched = [c.clone().requires_grad_(True) for c in stacks]
    u, v = tt.tt_factors(batched, m)  # (*lead, out, r), (*lead, r, in)
    loss(u, v).backward()
    batched_t = [c.clone().requires_grad_(True) for c in stacks]
    v_t, u_t = tt.tt_factors_t(batched_t, m)  # (*lead, in, r), (*lead, r, out)
    loss(u_t.mT, v_t.mT).backward()
    for i in itertools.product(*map(range, lead)):
        own = [c[i].clone().requires_grad_(True) for c in stacks]
        u_i, v_i = tt.tt_factors(own, m)
        (((u_i * weights_u[i]).sum()) + (v_i * weights_v[i]).sum()).backward()
        for u_b, v_b in ((u, v), (u_t.mT, v_t.mT)):
            assert rel_err(u_b[i].detach(), u_i.detach()) <= TOL and rel_err(v_b[i].detach(), v_i.detach()) <= TOL
        for core_batched, core_batched_t, core_own in zip(batched, batched_t, own):
            assert rel_err(core_batched.grad[i], core_own.grad) <= TOL
            assert rel_err(core_batched_t.grad[i], core_own.grad) <= TOL


def test_init_gives_zero_delta_and_gradients_still_flow():
    in_modes, out_modes = [4, 3], [2, 5]
    ranks = tt.tt_ranks(4, 3)
    cores = [c.requires_grad_(True) for c in tt.init_tt_cores(in_modes, out_modes, ranks)]
    assert torch.equal(tt.tt_to_matrix(cores, 2), torch.zeros(10, 12))
    x, target = torch.randn(8, 12), torch.randn(8, 10)
    opt = torch.optim.SGD(cores, lr=0.1)
    for step in range(2):
        opt.zero_grad()
        u, v = tt.tt_factors(cores, 2)
        ((F.linear(F.linear(x, v), u) - target) ** 2).mean().backward()
        nonzero = [c.grad.abs().sum().item() > 0 for c in cores]
        if step == 0:  # only the zero core moves first, exactly as LoRA's B
            assert nonzero == [False, False, False, True]
        else:
            assert all(nonzero)
        opt.step()
    assert tt.tt_to_matrix(cores, 2).abs().sum() > 0


def test_init_scales_input_factor_like_lora_a():
    in_modes, out_modes = [16, 8, 8], [8, 8]
    ranks = tt.tt_ranks(5, 8)
    torch.manual_seed(0)
    stds = [tt.tt_factors(tt.init_tt_cores(in_modes, out_modes, ranks), 3)[1].std().item() for _ in range(20)]
    target = 1 / math.sqrt(3 * 1024)
    assert abs(sorted(stds)[10] / target - 1) < 0.25


def init_case(seed):
    """A random layout with fitted ranks (as layers build them), modes >= 2 so every bond can hold its rank."""
    rnd = random.Random(seed)
    in_modes = [rnd.randint(2, 6) for _ in range(rnd.randint(1, 4))]
    out_modes = [rnd.randint(2, 6) for _ in range(rnd.randint(1, 4))]
    return in_modes, out_modes, tt.fit_tt_ranks([*in_modes, *out_modes], rnd.randint(1, 6))


def chain_parts(cores, m):
    """V: (r_m, in) and P: (r_m·o_1…o_{k-1}, r_{N-1}), the contraction of the output cores before the zero one (the
    identity of size r_m when the zero core is the only output core)."""
    v = tt._chain(cores[:m]).reshape(-1, cores[m].shape[0]).T
    if len(cores) == m + 1:
        return v, torch.eye(cores[m].shape[0], dtype=v.dtype)
    head = cores[m].reshape(1, -1, cores[m].shape[-1])
    p = tt._chain([head, *cores[m + 1 : -1]])
    return v, p.reshape(-1, p.shape[-1])


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("method", tt.INIT_METHODS)
def test_every_init_gives_zero_delta_with_only_the_last_core_zero(seed, method):
    in_modes, out_modes, ranks = init_case(seed)
    cores = tt.init_tt_cores(in_modes, out_modes, ranks, generator=torch.Generator().manual_seed(seed), method=method)
    assert [tuple(c.shape) for c in cores] == [(ranks[j], n, ranks[j + 1]) for j, n in enumerate(in_modes + out_modes)]
    assert torch.equal(cores[-1], torch.zeros_like(cores[-1]))
    assert all(c.abs().sum() > 0 for c in cores[:-1])
    assert torch.equal(tt.tt_to_matrix(cores, len(in_modes)), torch.zeros(math.prod(out_modes), math.prod(in_modes)))


@pytest.mark.parametrize("seed", range(12))
def test_orthogonal_init_makes_both_chains_isometries_of_the_gaussian_scale(seed):
    """V Vᵀ = I/3 (LoRA's A has singular values ~1/√3) and Pᵀ P = o_1…o_{k-1} I, on random layouts."""
    in_modes, out_modes, ranks = init_case(seed)
    cores = [c.double() for c in tt.init_tt_cores(in_modes, out_modes, ranks, method="orthogonal")]
    v, p = chain_parts(cores, len(in_modes))
    assert rel_err(v @ v.T, torch.eye(v.shape[0], dtype=v.dtype) / 3) <= TOL
    assert rel_err(p.T @ p, torch.eye(p.shape[1], dtype=p.dtype) * math.prod(out_modes[:-1])) <= TOL


def test_orthogonal_init_matches_the_gaussian_norms_on_average():
    """The isometric inits keep the Gaussian draw's scale (expected squared norms of V and P), so a learning rate
    tuned for one is in range for the other: checked over 200 Gaussian draws of MiniLM's layout."""
    in_modes, out_modes = tt.tt_layout(384, 384, rank=5)
    ranks, m = tt.fit_tt_ranks([*in_modes, *out_modes], 5), len(in_modes)
    g = torch.Generator().manual_seed(0)
    draws = [chain_parts(tt.init_tt_cores(in_modes, out_modes, ranks, generator=g), m) for _ in range(200)]
    v, p = chain_parts(tt.init_tt_cores(in_modes, out_modes, ranks, method="orthogonal"), m)
    for mean_sq, ortho_sq in ((statistics.fmean(d[0].pow(2).sum().item() for d in draws), v.pow(2).sum().item()),
                              (statistics.fmean(d[1].pow(2).sum().item() for d in draws), p.pow(2).sum().item())):
        assert abs(mean_sq / ortho_sq - 1) < 0.1


def test_init_refuses_an_unknown_method():
    with pytest.raises(ValueError, match="'xavier' is not one of"):
        tt.init_tt_cores([4], [4], [1, 2, 1], method="xavier")


@pytest.mark.parametrize("seed", range(4))
def test_tt_svd_recovers_a_tt_matrix_exactly_at_its_rank(seed):
    in_modes, out_modes, cores = random_case(seed)
    cores = [c.double() for c in cores]
    m = len(in_modes)
    w = tt.tt_to_matrix(cores, m)
    ranks = [c.shape[0] for c in cores[1:]]
    rebuilt = tt.tt_svd(w, in_modes, out_modes, ranks)
    assert [c.shape for c in rebuilt] == [c.shape for c in cores]
    assert rel_err(tt.tt_to_matrix(rebuilt, m), w) <= 1e-10


def test_tt_svd_imports_a_lora_delta_and_truncation_error_decreases():
    g = torch.Generator().manual_seed(0)
    lora = torch.randn(24, 2, generator=g) @ torch.randn(2, 36, generator=g)  # LoRA r=2: B @ A, (out=24, in=36)
    in_modes, out_modes = tt.tt_layout(36, 24)
    cores = tt.tt_svd(lora, in_modes, out_modes, 8)
    assert rel_err(tt.tt_to_matrix(cores, len(in_modes)), lora) <= TOL
    dense = torch.randn(24, 36, generator=g)
    errors = [rel_err(tt.tt_to_matrix(tt.tt_svd(dense, in_modes, out_modes, r), len(in_modes)), dense)
              for r in (1, 2, 4, 8, 24)]
    assert errors == sorted(errors, reverse=True) and errors[-1] <= TOL
