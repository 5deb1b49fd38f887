"""TT-matrix (MPO) adapters for the issue-13 ablation: every core carries one input and one output mode.

TT-LoRA (the paper's chain) orders ΔW's input modes before its output modes, so the one bond between them is ΔW's
matrix rank (5 at the default). The TT-matrix format (Oseledets 2011; Novikov et al. 2015, "Tensorizing Neural
Networks"; LoRETTA's adapters) pairs them instead: core k is `(r_{k-1}, n_k, m_k, r_k)` and

    ΔWᵀ[(i_1…i_d), (j_1…j_d)] = G_1[:, i_1, j_1, :] · G_2[:, i_2, j_2, :] ⋯ G_d[:, i_d, j_d, :],

a sum of Kronecker products whose matrix rank is not capped by a bond (a Kronecker product of full-rank factors is
full rank). The last core starts at zero (ΔW = 0 at step 0, as LoRA's B); the others are Gaussian, scaled so that the
partial product of cores 1…d-1 contracts the input like LoRA's A (entries of variance 1 / (3 · n_1⋯n_{d-1})).
ΔW is formed (in · out entries) and added in one matmul: a prototype for accuracy, not a fast path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def mpo_to_matrix_t(cores: Sequence[torch.Tensor]) -> torch.Tensor:
    """ΔWᵀ `(in, out)` from cores `(r_{k-1}, n_k, m_k, r_k)`, `r_0 = r_d = 1`; the first mode is the most
    significant digit of both indices (row-major, as `x.reshape(n_1, …, n_d)`)."""
    first = cores[0]
    out = first.reshape(first.shape[1:])  # (N, M, r)
    for core in cores[1:]:
        r, n, m, s = core.shape
        out = torch.einsum("NMr,rnms->NnMms", out, core).reshape(out.shape[0] * n, out.shape[1] * m, s)
    return out[..., 0]  # (in, out)


def mpo_num_params(in_modes: Sequence[int], out_modes: Sequence[int], ranks: Sequence[int]) -> int:
    """Parameters of one TT-matrix with inner `ranks` (d - 1 of them)."""
    r = [1, *ranks, 1]
    return sum(r[k] * n * m * r[k + 1] for k, (n, m) in enumerate(zip(in_modes, out_modes, strict=True)))


class MPOLinear(nn.Module):
    """`y = base(x) + scaling · x ΔWᵀ`, ΔW a TT-matrix of cores `mpo_cores`; `scaling = alpha / r_{d-1}`."""

    def __init__(self, base_layer: nn.Linear, in_modes: Sequence[int], out_modes: Sequence[int],
                 ranks: Sequence[int], alpha: float):
        super().__init__()
        if (math.prod(in_modes), math.prod(out_modes)) != (base_layer.in_features, base_layer.out_features):
            raise ValueError(f"modes {list(in_modes)} x {list(out_modes)} do not make up a "
                             f"{base_layer.in_features} -> {base_layer.out_features} linear")
        if len(ranks) != len(in_modes) - 1 or len(in_modes) != len(out_modes) or len(in_modes) < 2:
            raise ValueError(f"ranks {list(ranks)} with {len(in_modes)} input and {len(out_modes)} output modes: need "
                             "as many input as output modes (at least 2) and one rank fewer")
        self.base_layer = base_layer
        d, r = len(in_modes), [1, *ranks, 1]
        target = (1.0 / (3 * math.prod(in_modes[:-1]))) ** (1.0 / (d - 1))  # per core of the partial product
        cores = []
        for k, (n, m) in enumerate(zip(in_modes, out_modes)):
            shape = (r[k], n, m, r[k + 1])
            if k == d - 1:
                cores.append(nn.Parameter(torch.zeros(shape)))  # no draw: the recorded runs' random stream
            else:
                cores.append(nn.Parameter(torch.randn(shape) * math.sqrt(target / (r[k + 1] if k < d - 2 else 1))))
        self.mpo_cores = nn.ParameterList(cores)
        self.scaling = alpha / r[d - 1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x) + x @ (self.scaling * mpo_to_matrix_t(list(self.mpo_cores))).to(x.dtype)


def mpo_tt_(model: nn.Module, targets: list[str], in_modes: Sequence[int], out_modes: Sequence[int],
            ranks: Sequence[int], alpha: float) -> None:
    """Swap every linear in `targets` (module paths) for an `MPOLinear` of one layout."""
    for path in targets:
        model.set_submodule(path, MPOLinear(model.get_submodule(path), in_modes, out_modes, ranks, alpha))
