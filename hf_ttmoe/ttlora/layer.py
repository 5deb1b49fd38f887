"""TT-LoRA layer: a frozen `nn.Linear` plus a tensor-train ΔW."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import tt

CPU_RANK_MULTIPLE = 16
CORE_TAG = ".ttlora_cores."  # saved names: "<module path>.ttlora_cores.<j>"


class TTLoRALinear(nn.Module):
    """`y = base(x) + scaling · x ΔWᵀ`, ΔW a tensor train of cores `ttlora_cores`.

    Args:
        base_layer: the frozen linear layer.
        in_modes / out_modes: the TT layout (see `hf_ttmoe.tt`); `None` = automatic.
        tt_rank: int or list of inner ranks.
        alpha: scaling numerator; `scaling = alpha / r_boundary`.
        forward_impl: "factors", "contraction" or "reconstruction".
    """

    def __init__(
        self,
        base_layer: nn.Linear,
        in_modes: list[int] | None = None,
        out_modes: list[int] | None = None,
        tt_rank: int | list[int] = 5,
        alpha: float = 16.0,
        forward_impl: str = "factors",
        dropout: float = 0.0,
    ):
        super().__init__()
        self.base_layer = base_layer
        self.in_modes, self.out_modes = tt.tt_layout(
            base_layer.in_features, base_layer.out_features, in_modes, out_modes,
            rank=tt_rank if isinstance(tt_rank, int) else max(tt_rank),
        )
        self.ranks = tt.tt_ranks(len(self.in_modes) + len(self.out_modes), tt_rank)
        self.scaling = alpha / self.ranks[len(self.in_modes)]
        self.forward_impl = forward_impl
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        weight = base_layer.weight
        dtype = weight.dtype if weight.dtype.is_floating_point else torch.float32
        cores = tt.init_tt_cores(self.in_modes, self.out_modes, self.ranks, device=weight.device, dtype=dtype)
        self.ttlora_cores = nn.ParameterList([nn.Parameter(c) for c in cores])
        self.merged = False
        self._factor_cache: tuple | None = None  # (cores, versions, U·scaling, V) for forwards without gradient

    @property
    def num_in_modes(self) -> int:
        return len(self.in_modes)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`(U, V)` with `ΔW = U @ V`, before scaling: `(out, r)`, `(r, in)`."""
        return tt.tt_factors(list(self.ttlora_cores), self.num_in_modes)

    def scaled_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`(scaling · U, V)` as the "factors" path applies them.

        Where no gradient is needed (inference, evaluation) they are cached until a core changes, so unmerged
        inference costs what a LoRA of the same rank costs (building them is ~20 small ops, launch-bound on a GPU).
        The cache holds the cores' storages (so no other tensor can take their addresses) and their in-place
        version counters, which optimizer steps, `copy_` and `load_state_dict` bump.
        """
        cores = list(self.ttlora_cores)
        cacheable = not (torch.is_grad_enabled() and cores[0].requires_grad) and not hasattr(cores[0], "ds_id")
        cache = self._factor_cache
        if cacheable and cache is not None and all(
            c.data_ptr() == held.data_ptr() and c._version == version and c.dtype == held.dtype
            for c, held, version in zip(cores, cache[0], cache[1], strict=True)
        ):
            return cache[2], cache[3]
        u, v = tt.tt_factors(cores, self.num_in_modes)  # (out, r), (r, in)
        if u.device.type == "cpu" and u.shape[1] % CPU_RANK_MULTIPLE:
            # CPU GEMM kernels run skinny products of odd width (r = 5) slower than width 16 (measured: 17.6 vs
            # 14.6 ms at d=384, tokens 4096): pad with zero rank components, which change nothing else.
            pad = CPU_RANK_MULTIPLE - u.shape[1] % CPU_RANK_MULTIPLE
            u, v = F.pad(u, (0, pad)), F.pad(v, (0, 0, 0, pad))
        u = u * self.scaling
        if cacheable:  # the detached cores share storage and version counter with each core
            self._factor_cache = ([c.detach() for c in cores], [c._version for c in cores], u, v)
        else:
            self._factor_cache = None
        return u, v

    def delta_weight(self) -> torch.Tensor:
        """The scaled update `scaling · ΔW`, `(out, in)`."""
        return self.scaling * tt.tt_to_matrix(list(self.ttlora_cores), self.num_in_modes)

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        """`scaling · x ΔWᵀ` by the configured path; `x: (..., in)` -> `(..., out)`."""
        cores = list(self.ttlora_cores)
        x = self.dropout(x.to(cores[0].dtype))
        if self.forward_impl == "factors":
            u, v = self.scaled_factors()  # (out, r), (r, in)
            return F.linear(F.linear(x, v), u)  # (..., r) -> (..., out)
        if self.forward_impl == "contraction":
            return self.scaling * tt.tt_contract(x, cores, self.num_in_modes)
        return F.linear(x, self.delta_weight())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        if self.merged:
            return result
        return result + self.adapter_forward(x).to(result.dtype)

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            weight = self.base_layer.weight
            weight.add_(self.delta_weight().to(weight.dtype))
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            weight = self.base_layer.weight
            weight.sub_(self.delta_weight().to(weight.dtype))
            self.merged = False

    def extra_repr(self) -> str:
        return (f"in_modes={self.in_modes}, out_modes={self.out_modes}, ranks={self.ranks}, "
                f"scaling={self.scaling:g}, forward_impl={self.forward_impl!r}")
