"""Tensor-train (TT) math for TT-LoRA: pure functions, no `nn.Module`, no Hugging Face imports.

A weight update ΔW of shape (out, in) is stored as a chain of 3-way cores. The chain lists all *input* modes first,
then all *output* modes: with `in = n_1·…·n_m` and `out = o_1·…·o_k`, core `j` has shape `(r_{j-1}, mode_j, r_j)`,
`r_0 = r_{m+k} = 1`, and

    ΔW[o, i] = G_1[:, n_1(i), :] · … · G_m[:, n_m(i), :] · G_{m+1}[:, o_1(o), :] · … · G_{m+k}[:, o_k(o), :]

with multi-indices in row-major order (the first mode is the most significant). Because the input modes come first,
the rank `r_m` at the boundary splits ΔW exactly into two skinny factors, `ΔW = U @ V` with `V: (r_m, in)` the
contraction of the input cores and `U: (out, r_m)` that of the output cores (`tt_factors`). Building them costs
O((in + out)·r²), independently of the batch, after which applying ΔW costs the same as a LoRA of rank `r_m`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = [
    "factorize",
    "cheapest_modes",
    "tt_layout",
    "tt_ranks",
    "full_tt_ranks",
    "fit_tt_ranks",
    "tt_num_params",
    "init_tt_cores",
    "INIT_METHODS",
    "isometric_gains",
    "split_index",
    "tt_factors",
    "tt_factors_t",
    "tt_to_matrix",
    "tt_contract",
    "tt_svd",
    "tt_interface_grams",
    "tt_precondition",
    "tt_metric_factors",
    "tt_apply_metric",
]

MODE_SIZE = 8  # `factorize` aims for modes of about this size
MAX_MODE = 16  # automatic TT layouts use modes up to this size (as the reference layouts do)


def _prime_factors(n: int) -> list[int]:
    factors, p = [], 2
    while p * p <= n:
        while n % p == 0:
            factors.append(p)
            n //= p
        p += 1
    if n > 1:
        factors.append(n)
    return factors


def factorize(n: int, num_modes: int | None = None) -> list[int]:
    """Split `n` into `num_modes` integer modes whose product is `n`, as balanced as possible, largest first.

    Deterministic: prime factors, largest first, each go to the currently smallest mode. With `num_modes=None` the
    number of modes is `round(log2(n) / 3)` (modes of about 8).

    >>> factorize(2048, 4)
    [8, 8, 8, 4]
    >>> factorize(384)
    [8, 8, 6]
    >>> factorize(7, 2)
    [7, 1]
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"Cannot factorize {n!r}: expected a positive integer.")
    if num_modes is None:
        num_modes = max(1, round(math.log2(n) / math.log2(MODE_SIZE))) if n > 1 else 1
    if num_modes < 1:
        raise ValueError(f"num_modes must be >= 1, got {num_modes}.")
    modes = [1] * num_modes
    for p in sorted(_prime_factors(n), reverse=True):
        modes[modes.index(min(modes))] *= p
    return sorted(modes, reverse=True)


def _multiplicative_partitions(n: int, largest: int) -> list[tuple[int, ...]]:
    """All ways to write `n` as a product of factors >= 2 and <= `largest`, each as a descending tuple."""
    if n == 1:
        return [()]
    return [
        (f, *rest)
        for f in range(min(n, largest), 1, -1)
        if n % f == 0
        for rest in _multiplicative_partitions(n // f, f)
    ]


def cheapest_modes(n: int, rank: int, max_mode: int = MAX_MODE) -> list[int]:
    """Modes of `n` (descending) for the cheapest half-chain at TT rank `rank`.

    A half-chain costs `rank · m_end + rank² · Σ m_inner`: the largest mode belongs at the rank-1 end and the rest
    should be small. Among factorizations into modes ≤ `max_mode` (a prime factor above it is kept whole), pick the
    cheapest, then the one with fewest modes, then the lexicographically smallest. Deterministic.

    >>> cheapest_modes(2048, 5)
    [16, 4, 4, 4, 2]
    >>> cheapest_modes(384, 5)
    [16, 4, 3, 2]
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"Cannot factorize {n!r}: expected a positive integer.")
    big = math.prod(p for p in _prime_factors(n) if p > max_mode)
    candidates = [tuple(sorted((*([big] if big > 1 else []), *ms), reverse=True))
                  for ms in _multiplicative_partitions(n // big, max_mode)]
    candidates = [ms for ms in candidates if ms] or [(1,)]
    return list(min(candidates, key=lambda ms: (rank * ms[0] + rank * rank * sum(ms[1:]), len(ms), ms)))


def tt_layout(
    in_features: int,
    out_features: int,
    in_modes: Sequence[int] | None = None,
    out_modes: Sequence[int] | None = None,
    rank: int = 5,
) -> tuple[list[int], list[int]]:
    """Input and output modes of a TT chain for an `(out_features, in_features)` matrix.

    Given modes are kept as they are (their order defines the index mapping) after checking their products. Missing
    ones are chosen by `cheapest_modes` at this `rank` and ordered so the chain is cheapest: input modes descending,
    output modes ascending, so the largest modes sit at the chain's ends (rank 1) and the small ones meet at the
    middle rank, as in the TT-LoRA reference layouts (q_proj `[16, 8, 4, 4 | 4, 4, 8, 16]`).
    """
    if in_modes is None:
        in_modes = cheapest_modes(in_features, rank)
    if out_modes is None:
        out_modes = sorted(cheapest_modes(out_features, rank))
    in_modes, out_modes = [int(m) for m in in_modes], [int(m) for m in out_modes]
    for name, modes, size in (("in_modes", in_modes, in_features), ("out_modes", out_modes, out_features)):
        if not modes or any(m < 1 for m in modes) or math.prod(modes) != size:
            raise ValueError(
                f"{name}={modes} (product {math.prod(modes) if modes else 0}) does not fit a dimension of {size}: "
                f"the modes must be positive and multiply to {size}, e.g. {factorize(size)}."
            )
    return in_modes, out_modes


def tt_ranks(num_cores: int, rank: int | Sequence[int]) -> list[int]:
    """Full rank list `[1, r_1, …, r_{N-1}, 1]` for a chain of `num_cores` cores.

    `rank` is one int for every inner bond, the `N - 1` inner ranks, or the full `N + 1` list with 1 at both ends.
    """
    if isinstance(rank, int):
        ranks = [1] + [rank] * (num_cores - 1) + [1]
    else:
        ranks = [int(r) for r in rank]
        if len(ranks) == num_cores - 1:
            ranks = [1] + ranks + [1]
        elif len(ranks) != num_cores + 1 or ranks[0] != 1 or ranks[-1] != 1:
            raise ValueError(
                f"tt_rank={list(rank)} does not fit a chain of {num_cores} cores: give one int, {num_cores - 1} inner "
                f"ranks, or {num_cores + 1} ranks starting and ending with 1."
            )
    if any(r < 1 for r in ranks):
        raise ValueError(f"TT ranks must be >= 1, got {ranks}.")
    return ranks


def full_tt_ranks(modes: Sequence[int]) -> list[int]:
    """The largest useful rank of each bond of a chain, `[1, …, 1]`: bond j splits the matrix's entries into the
    modes before and after it, and that unfolding has rank at most `min(∏ modes[:j], ∏ modes[j:])`. A higher rank
    adds parameters, never expressiveness (TT-SVD is exact at these ranks).

    >>> full_tt_ranks([16, 2, 2, 16])
    [1, 16, 32, 16, 1]
    """
    return [min(math.prod(modes[:j]), math.prod(modes[j:])) for j in range(len(modes) + 1)]


def fit_tt_ranks(modes: Sequence[int], rank: int | Sequence[int]) -> list[int]:
    """`tt_ranks(len(modes), rank)` with each bond clipped to its full rank (`full_tt_ranks`).

    >>> fit_tt_ranks([2, 4, 4, 2], 8)
    [1, 2, 8, 2, 1]
    """
    return [min(r, f) for r, f in zip(tt_ranks(len(modes), rank), full_tt_ranks(modes))]


def tt_num_params(modes: Sequence[int], ranks: Sequence[int]) -> int:
    """Number of entries in the cores of a chain with these modes and full rank list."""
    return sum(ranks[j] * n * ranks[j + 1] for j, n in enumerate(modes))


INIT_METHODS = ("gaussian", "orthogonal")


def init_tt_cores(
    in_modes: Sequence[int],
    out_modes: Sequence[int],
    ranks: Sequence[int],
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    method: str = "gaussian",
) -> list[torch.Tensor]:
    """Cores for which ΔW = 0 exactly while every core still learns.

    The last output core is zero, so ΔW = U·V = 0 (U contains it as a factor). It is the LoRA `B = 0` trick: the zero
    core gets a non-zero gradient at step 0 (the other cores are not zero), and once it moves, gradients reach all
    cores. The others are scaled so that `V` has the std of LoRA's `A` (kaiming-uniform with a=√5, i.e. 1/√(3·in))
    and the partial contraction `P` of the output cores before the zero one has entries of variance `1 / r_m`.

    `method` says how the non-zero cores are drawn:
        "gaussian": i.i.d. Gaussian; the variance of a chained contraction is the product of the core variances times
            the inner ranks summed over, so core `j` gets variance `target^(2/m) / r_{j-1}` (1 / r_{j-1} for the
            output cores). The chain's singular values spread (V's over ~5x at MiniLM's layout).
        "orthogonal": each core, unfolded to `(r_{j-1}·n_j, r_j)`, has orthonormal columns (QR of a Gaussian), so the
            chains `V` and `P` are exact isometries up to a scale, shared equally by their cores: every direction
            of ΔW starts at the same gain (the deep-linear-network argument for orthogonal init). Measured against
            "gaussian" in benchmarks/README.md ("Orthogonal cores"): no better.
    """
    if method not in INIT_METHODS:
        raise ValueError(f"init method {method!r} is not one of {INIT_METHODS}.")
    m, modes = len(in_modes), [*in_modes, *out_modes]
    shapes = [(ranks[j], n, ranks[j + 1]) for j, n in enumerate(modes)]
    if torch.device(device or "cpu").type == "meta":
        return [torch.empty(shape, device=device, dtype=dtype) for shape in shapes]
    if method == "gaussian":
        target_var = (1.0 / (3 * math.prod(in_modes))) ** (1.0 / m)
        stds = [math.sqrt((target_var if j < m else 1.0) / r) for j, (r, _, _) in enumerate(shapes[:-1])]
        cores = [torch.randn(shape, generator=generator, dtype=dtype).mul_(std)
                 for shape, std in zip(shapes[:-1], stds, strict=True)]
    else:
        cores = [(_orthonormal_columns(r * n, s, generator) * gain).reshape(r, n, s).to(dtype)
                 for (r, n, s), gain in zip(shapes[:-1], isometric_gains(in_modes, out_modes), strict=True)]
    return [c.to(device) for c in cores] + [torch.zeros(shapes[-1], device=device, dtype=dtype)]


def isometric_gains(in_modes: Sequence[int], out_modes: Sequence[int]) -> list[float]:
    """The scale of each core but the last when every core's unfolding `(r_{j-1}·n_j, r_j)` has orthonormal columns
    (`init="orthogonal"`, or TT-SVD cores): the gains give V and P the squared Frobenius norms of the Gaussian draw.
    V: (r_m, in) with orthonormal rows has singular values 1, LoRA's A ~ √(in / (3·in)) = 1/√3; P: (r_m·o_1…o_{k-1},
    r_{N-1}) has entries of variance 1/r_m from the Gaussian draw (its first core's), i.e. a squared norm of
    r_{N-1}·o_1…o_{k-1}."""
    m, k = len(in_modes), len(out_modes) - 1  # input cores, non-zero output cores
    return [(1 / 3) ** (1 / (2 * m))] * m + [math.prod(out_modes[:-1]) ** (1 / (2 * k)) if k else 1.0] * k


def _orthonormal_columns(rows: int, cols: int, generator: torch.Generator | None) -> torch.Tensor:
    """A Haar-random `(rows, cols)` float64 matrix with orthonormal columns (`cols <= rows`): QR of a Gaussian, the
    signs fixed by R's diagonal so the distribution is uniform."""
    q, r = torch.linalg.qr(torch.randn((rows, cols), generator=generator, dtype=torch.float64))
    return q * torch.where(torch.diagonal(r) < 0, -1.0, 1.0)


def _chain(cores: Sequence[torch.Tensor]) -> torch.Tensor:
    """Contract a chain left to right into a `(..., r_0 · n_1 · … · n_j, r_j)` matrix. Cores may carry leading batch
    dimensions `(..., r, n, s)`: a stack of chains of one layout contracts in the same few ops as one chain, one `bmm`
    per core over the flattened batch (`@` on 3-D operands adds broadcasting views forward and backward)."""
    first = cores[0]
    batch = first.shape[:-3]
    lead, product = ((-1,), torch.bmm) if batch else ((), torch.mm)
    out = first.reshape(*lead, first.shape[-3] * first.shape[-2], first.shape[-1])  # (B, r_0·n_1, r_1)
    for core in cores[1:]:
        r, n, s = core.shape[-3:]
        out = product(out, core.reshape(*lead, r, n * s)).reshape(*out.shape[:-2], -1, s)  # (B, P·n, s)
    return out if len(batch) <= 1 else out.reshape(*batch, *out.shape[-2:])


def split_index(modes: Sequence[int], in_features: int) -> int | None:
    """How many leading modes of a TT chain make up `in_features` (the input/output boundary), or None.

    >>> split_index([16, 4, 6, 6, 4, 16], 384)
    3
    """
    return next((j for j in range(1, len(modes)) if math.prod(modes[:j]) == in_features), None)


def tt_factors(cores: Sequence[torch.Tensor], num_in_modes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact factors `U: (out, r)`, `V: (r, in)` with `ΔW = U @ V`; `r` is the rank at the in/out boundary.

    Cores with leading batch dimensions `(..., r, n, s)` (several layers of one layout, stacked) give stacked factors
    `(..., out, r)`, `(..., r, in)`.
    """
    v_t, u_t = tt_factors_t(cores, num_in_modes)
    return u_t.mT, v_t.mT  # (..., out, r), (..., r, in)


def tt_factors_t(cores: Sequence[torch.Tensor], num_in_modes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The factors transposed, `Vᵀ: (..., in, r)`, `Uᵀ: (..., r, out)`, so that `x ΔWᵀ = (x @ Vᵀ) @ Uᵀ`.

    This is the orientation the chains produce and the one a right-hand matmul operand wants: applying the factors
    this way takes no transpose forward or backward (`F.linear(x, V)` transposes its weight, and its backward
    transposes again to return a gradient in the weight's layout).
    """
    v_t = _chain(cores[:num_in_modes])  # (..., in, r)
    head = cores[num_in_modes]
    r = head.shape[-3]
    batch = head.shape[:-3]
    head = head.reshape(*batch, 1, r * head.shape[-2], head.shape[-1])
    u = _chain([head, *cores[num_in_modes + 1 :]])  # (..., r·out, 1)
    # rows of `u` are ordered (boundary rank, o_1, …, o_k): split off the boundary rank
    return v_t, u.reshape(*batch, r, -1)  # (..., in, r), (..., r, out)


def tt_to_matrix(cores: Sequence[torch.Tensor], num_in_modes: int) -> torch.Tensor:
    """Reconstruct the dense `ΔW: (out, in)` by contracting the whole chain (the "reconstruction" path)."""
    in_features = math.prod(c.shape[1] for c in cores[:num_in_modes])
    return _chain(cores).reshape(in_features, -1).T  # (out, in)


def tt_contract(x: torch.Tensor, cores: Sequence[torch.Tensor], num_in_modes: int) -> torch.Tensor:
    """`x @ ΔW.T` without forming ΔW or its factors: the reference chain of contractions over the batch.

    Args:
        x: `(..., in)`.
    Returns:
        `(..., out)`.
    """
    lead, in_features = x.shape[:-1], x.shape[-1]
    t = x.reshape(-1, in_features, 1)  # (B, in, r_0)
    for core in cores[:num_in_modes]:
        r, n, s = core.shape
        b = t.shape[0]
        t = torch.einsum("bnxr,rns->bxs", t.reshape(b, n, -1, r), core)  # (B, rest, s)
    t = t.reshape(t.shape[0], 1, -1)  # (B, 1, r_m)
    for core in cores[num_in_modes:]:
        r, o, s = core.shape
        t = torch.einsum("bpr,ros->bpos", t, core).reshape(t.shape[0], -1, s)  # (B, P·o, s)
    return t.reshape(*lead, -1)  # (..., out)


def tt_svd(
    matrix: torch.Tensor, in_modes: Sequence[int], out_modes: Sequence[int], rank: int | Sequence[int]
) -> list[torch.Tensor]:
    """TT-SVD (Oseledets 2011, Alg. 1) of a dense `(out, in)` matrix into cores of this layout, ranks at most `rank`.

    Exact when `rank` is at least the TT ranks of the matrix; otherwise each bond keeps its leading singular values.
    Bonds whose SVD rank is lower are zero-padded, so the cores always have the shapes `tt_ranks(N, rank)` gives and
    load into a TT-LoRA layer of that rank. Used to import an existing LoRA or dense delta as a TT-LoRA expert.
    """
    out_features, in_features = matrix.shape
    in_modes, out_modes = tt_layout(in_features, out_features, in_modes, out_modes)
    modes = [*in_modes, *out_modes]
    max_ranks = tt_ranks(len(modes), rank)
    t = matrix.detach().T.reshape(-1)  # row-major (i_1, …, i_m, o_1, …, o_k)
    cores, r_prev = [], 1
    for j, n in enumerate(modes[:-1]):
        mat = t.reshape(r_prev * n, -1)  # (r_{j-1}·n_j, rest)
        u, s, vh = torch.linalg.svd(mat, full_matrices=False)
        r = min(max_ranks[j + 1], s.numel())
        cores.append(u[:, :r].reshape(r_prev, n, r))
        t = s[:r, None] * vh[:r]  # (r, rest)
        r_prev = r
    cores.append(t.reshape(r_prev, modes[-1], 1))
    padded = []
    for j, core in enumerate(cores):
        full = core.new_zeros(max_ranks[j], modes[j], max_ranks[j + 1])
        full[: core.shape[0], :, : core.shape[2]] = core
        padded.append(full)
    return padded


def tt_interface_grams(cores: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The Gram matrices of each core's two interfaces: `L_j = X_{<j}ᵀ X_{<j}: (r_{j-1}, r_{j-1})` and
    `R_j = X_{>j} X_{>j}ᵀ: (r_j, r_j)`, where `X_{<j}: (n_1·…·n_{j-1}, r_{j-1})` contracts the cores before `j` and
    `X_{>j}: (r_j, n_{j+1}·…·n_N)` the cores after it (`L_1 = R_N = [[1]]`).

    Built by the recursions `L_{j+1} = Σ_n G_j[:, n, :]ᵀ L_j G_j[:, n, :]` and `R_{j-1} = Σ_n G_j[:, n, :] R_j
    G_j[:, n, :]ᵀ`, O(N·n·r³) flops: the interfaces themselves are never formed. Cores with leading batch dimensions
    `(..., r, n, s)` (chains of one layout, stacked) give stacked Grams `(..., r, r)`.
    """
    one = cores[0].new_ones(*cores[0].shape[:-3], 1, 1)
    left, right = [one], [one]
    for core in cores[:-1]:
        left.append(torch.einsum("...ab,...anc,...bnd->...cd", left[-1], core, core))  # (..., r_j, r_j)
    for core in reversed(cores[1:]):
        right.append(torch.einsum("...cd,...anc,...bnd->...ab", right[-1], core, core))  # (..., r_{j-1}, r_{j-1})
    return left, right[::-1]


def tt_precondition(
    cores: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], reg: float, power: float = 1.0
) -> list[torch.Tensor]:
    """Each core's gradient in the scaled (Riemannian) metric of the train: `(L_j + reg·I)^-p ×₁ ∂G_j ×₃ (R_j +
    reg·I)^-p`, with `L_j`, `R_j` from `tt_interface_grams` and `p = power`.

    With `power=1`, the TT form of the LoRA preconditioner of Zhang & Pilanci (2024, "Riemannian Preconditioned
    LoRA"; PEFT's `create_riemannian_optimizer`) and of ScaledGD for tensor trains (Qin, Wang, Tong & Chi 2024). A
    chain is linear in each core, `vec ΔW = (X_{<j} ⊗ I ⊗ X_{>j}ᵀ) vec G_j`, whose Gram is `L_j ⊗ I ⊗ R_j`: the
    Euclidean gradient measures a core's step in its own coordinates, this one in the change it makes to ΔW. With
    `reg = 0` and the loss `½‖ΔW − T‖²`, a step of 1 along it is one alternating-least-squares update of the core
    (the test's oracle). With `power=0.5` it maps a core's gradient, or a step, between its own coordinates and those
    of the gauge in which both interfaces are orthonormal (`X_{<j} L_j^-½` has orthonormal columns), where a step of
    a given size moves ΔW by that size whatever the scale of the other cores. `reg > 0` damps directions an
    interface barely uses (at init the zero last core makes every `R_j` zero). Cores and gradients may carry leading
    batch dimensions, as in `tt_interface_grams`.
    """
    return tt_apply_metric(tt_metric_factors(cores, reg, power), grads)


def tt_metric_factors(cores: Sequence[torch.Tensor], reg: float, power: float = 1.0) -> list[tuple[torch.Tensor, ...]]:
    """Per core, `((L_j + reg·I)^-p, (R_j + reg·I)^-p)`: what `tt_precondition` applies, computed once to apply to
    several tensors at the same cores (a gradient and then a step)."""
    left, right = tt_interface_grams([c.detach() for c in cores])
    return [(_damped_power(gram_l, reg, -power), _damped_power(gram_r, reg, -power))
            for gram_l, gram_r in zip(left, right, strict=True)]


def tt_apply_metric(
    factors: Sequence[tuple[torch.Tensor, ...]], tensors: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    """`left ×₁ t ×₃ right` for each core's `tt_metric_factors` and tensor `t: (..., r_{j-1}, n_j, r_j)`."""
    return [torch.einsum("...ab,...bnc,...cd->...and", left, t, right)  # (..., r_{j-1}, n_j, r_j)
            for (left, right), t in zip(factors, tensors, strict=True)]


def _damped_power(gram: torch.Tensor, reg: float, power: float) -> torch.Tensor:
    """`(gram + reg·I)^power` of a symmetric positive semi-definite `(..., r, r)`: the inverse for power -1, else by
    its eigendecomposition (eigenvalues clamped at 0 against rounding)."""
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    if power == -1:
        return torch.linalg.inv(gram + reg * eye)
    values, vectors = torch.linalg.eigh(gram)
    return (vectors * (values.clamp_min(0) + reg).pow(power).unsqueeze(-2)) @ vectors.mT
