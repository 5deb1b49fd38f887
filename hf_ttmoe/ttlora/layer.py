"""TT-LoRA layer: a frozen `nn.Linear` plus a tensor-train ΔW."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from .. import tt
from ..adapter import as_dtype

CPU_RANK_MULTIPLE = 16
CORE_TAG = ".ttlora_cores."  # saved names: "<module path>.ttlora_cores.<j>"

logger = logging.getLogger(__name__)


def pad_rank(v_t: torch.Tensor, u_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """On the CPU, `Vᵀ: (..., in, r)`, `Uᵀ: (..., r, out)` padded with zero rank components to a multiple of 16: CPU
    GEMM kernels run skinny products of odd width (r = 5) slower than width 16 (measured: 17.6 vs 14.6 ms at d=384,
    tokens 4096), and zero components change nothing else."""
    if v_t.device.type != "cpu" or v_t.shape[-1] % CPU_RANK_MULTIPLE == 0:
        return v_t, u_t
    pad = CPU_RANK_MULTIPLE - v_t.shape[-1] % CPU_RANK_MULTIPLE
    return F.pad(v_t, (0, pad)), F.pad(u_t, (0, 0, 0, pad))


class TTLoRALinear(nn.Module):
    """`y = base(x) + scaling · x ΔWᵀ`, ΔW a tensor train of cores `ttlora_cores`.

    Args:
        base_layer: the frozen linear layer.
        in_modes / out_modes: the TT layout (see `hf_ttmoe.tt`); `None` = automatic.
        tt_rank: int or list of inner ranks. A bond's rank above its full TT rank (`tt.full_tt_ranks`) is clipped to
            it, with a warning naming the layer; a chain that would still hold more parameters than the dense ΔW is
            refused before anything is allocated.
        alpha: scaling numerator; `scaling = alpha / r_boundary`.
        forward_impl: "factors", "contraction" or "reconstruction".
        dropout: dropout on the adapter's input.
        name: how warnings and errors name the layer (its module path).
        init: how the non-zero cores are drawn, one of `tt.INIT_METHODS` (see `tt.init_tt_cores`).
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
        name: str | None = None,
        init: str = "gaussian",
    ):
        super().__init__()
        self.base_layer = base_layer
        self.name = name or f"TT-LoRA layer {base_layer.out_features}x{base_layer.in_features}"
        self.in_modes, self.out_modes = tt.tt_layout(
            base_layer.in_features, base_layer.out_features, in_modes, out_modes,
            rank=tt_rank if isinstance(tt_rank, int) else max(tt_rank),
        )
        self.ranks = self._fit_ranks(tt_rank)
        self.scaling = alpha / self.ranks[len(self.in_modes)]
        self.forward_impl = forward_impl
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        weight = base_layer.weight
        dtype = weight.dtype if weight.dtype.is_floating_point else torch.float32
        cores = tt.init_tt_cores(self.in_modes, self.out_modes, self.ranks, device=weight.device, dtype=dtype,
                                 method=init)
        self.ttlora_cores = nn.ParameterList([nn.Parameter(c) for c in cores])
        self.merged = False
        self._unmerged_weight: torch.Tensor | None = None  # while merged: the base weight as it was before
        self._merged_cores: tuple | None = None  # while merged: `_cores_state()` the merged weight was built from
        self._factor_cache: tuple | None = None  # (cores, versions, Vᵀ, Uᵀ·scaling) for forwards without gradient
        self.shared_factors: tuple | None = None  # (Vᵀ, Uᵀ·scaling) built for all layers of a layout at once, or None

    def _fit_ranks(self, tt_rank: int | list[int]) -> list[int]:
        """The chain's full rank list: `tt_rank` clipped to each bond's full rank (warning), refused when the chain
        would hold more parameters than the dense ΔW (checked before any allocation)."""
        modes = [*self.in_modes, *self.out_modes]
        requested, ranks = tt.tt_ranks(len(modes), tt_rank), tt.fit_tt_ranks(modes, tt_rank)
        if ranks != requested:
            logger.warning("%s: tt_rank=%s exceeds the full TT rank %s of its layout %s|%s: clipped to %s.",
                           self.name, tt_rank, tt.full_tt_ranks(modes), self.in_modes, self.out_modes, ranks)
        params, dense = tt.tt_num_params(modes, ranks), self.base_layer.in_features * self.base_layer.out_features
        if params > dense:
            raise ValueError(f"tt_rank={tt_rank!r} gives {self.name} {params:,} TT parameters (ranks {ranks}), more "
                             f"than its dense ΔW's {dense:,}: that is no low-rank update. Use a smaller tt_rank.")
        return ranks

    @property
    def num_in_modes(self) -> int:
        return len(self.in_modes)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`(U, V)` with `ΔW = U @ V`, before scaling: `(out, r)`, `(r, in)`."""
        return tt.tt_factors(list(self.ttlora_cores), self.num_in_modes)

    def scaled_factors_t(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`(Vᵀ, scaling · Uᵀ)` as the "factors" path applies them: `(in, r)`, `(r, out)` (`tt.tt_factors_t`), rank
        padded on the CPU (`pad_rank`).

        Where no gradient is needed (inference, evaluation) they are cached until a core changes, so unmerged
        inference costs what a LoRA of the same rank costs (building them is ~20 small ops, launch-bound on a GPU).
        The cache holds the cores' storages (so no other tensor can take their addresses) and their in-place
        version counters, which `copy_`, `load_state_dict` and most optimizer steps bump; fused optimizer kernels do
        not, so every forward with gradient (a training step's) drops the cache too. Inside `TTLoRAModel.forward`
        with gradient, layers of one layout read their slice of factors built for all of them at once
        (`shared_factors.py`).
        """
        if self.shared_factors is not None:
            return self.shared_factors
        cores = list(self.ttlora_cores)
        if torch.compiler.is_compiling():  # built inside the graph: the compiler fuses the chain, and a cache keyed on
            return self._build_scaled_factors_t(cores)  # storage addresses would break the graph at every layer
        cacheable = not (torch.is_grad_enabled() and cores[0].requires_grad) and not hasattr(cores[0], "ds_id")
        cache = self._factor_cache
        if cacheable and cache is not None and all(
            c.data_ptr() == held.data_ptr() and c._version == version and c.dtype == held.dtype
            for c, held, version in zip(cores, cache[0], cache[1], strict=True)
        ):
            return cache[2], cache[3]
        v_t, u_t = self._build_scaled_factors_t(cores)
        if cacheable:  # the detached cores share storage and version counter with each core
            self._factor_cache = ([c.detach() for c in cores], [c._version for c in cores], v_t, u_t)
        else:
            self._factor_cache = None
        return v_t, u_t

    def _build_scaled_factors_t(self, cores: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        v_t, u_t = pad_rank(*tt.tt_factors_t(cores, self.num_in_modes))  # (in, r), (r, out)
        return v_t, u_t * self.scaling

    def delta_weight(self) -> torch.Tensor:
        """The scaled update `scaling · ΔW`, `(out, in)`."""
        return self.scaling * tt.tt_to_matrix(list(self.ttlora_cores), self.num_in_modes)

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        """`scaling · x ΔWᵀ` by the configured path; `x: (..., in)` -> `(..., out)`."""
        cores = list(self.ttlora_cores)
        x = self.dropout(as_dtype(x, cores[0].dtype))
        if self.forward_impl == "factors":
            v_t, u_t = self.scaled_factors_t()  # (in, r), (r, out)
            return x @ v_t @ u_t  # (..., in) -> (..., r) -> (..., out)
        if self.forward_impl == "contraction":
            return self.scaling * tt.tt_contract(x, cores, self.num_in_modes)
        return F.linear(x, self.delta_weight())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            self._check_merged()
            return self.base_layer(x)
        result = self.base_layer(x)
        return result + as_dtype(self.adapter_forward(x), result.dtype)

    # ----- merging -----

    def _cores_state(self) -> tuple | None:
        """Where the cores live and their in-place versions, which optimizer steps, `copy_` and `load_state_dict`
        bump (None under ZeRO-3 partitioning, where both change with every gather)."""
        cores = list(self.ttlora_cores)
        if any(hasattr(c, "ds_id") for c in cores):
            return None
        return tuple((c.data_ptr(), c._version, c.dtype) for c in cores)

    @torch.no_grad()
    def merged_weight(self) -> torch.Tensor:
        """The unmerged base weight plus `scaling · ΔW`, added in float32 and rounded once to the weight's dtype."""
        base = self._unmerged_weight if self.merged else self.base_layer.weight
        delta = self.scaling * tt.tt_to_matrix([c.float() for c in self.ttlora_cores], self.num_in_modes)
        return (base.float() + delta.to(base.device)).to(self.base_layer.weight.dtype)

    @torch.no_grad()
    def check_merge(self, merged: torch.Tensor | None = None) -> None:
        """Raise `ValueError` naming this layer when merging would write NaN or inf into its weight."""
        merged = self.merged_weight() if merged is None else merged
        if not torch.isfinite(merged).all():
            raise ValueError(f"{self.name}: merging would write non-finite values (NaN or inf) into the base weight; "
                             "check the adapter weights. Nothing was merged.")

    @torch.no_grad()
    def merge(self, safe_merge: bool = False) -> None:
        """Fold `scaling · ΔW` into the base weight (merging a merged layer does nothing).

        A copy of the base weight is kept while merged, on its device, so that `unmerge` puts it back bit for bit:
        exactness for the memory of one extra weight. Subtracting ΔW again would be neither exact in floating point
        nor right once the adapter changed while merged.

        Args:
            safe_merge: check the merged weight for NaN / inf first and raise `ValueError` instead of writing it.
        """
        if self.merged:
            return
        merged = self.merged_weight()
        if safe_merge:
            self.check_merge(merged)
        self._unmerged_weight = self.base_layer.weight.detach().clone()
        self.base_layer.weight.copy_(merged)
        self._merged_cores, self.merged = self._cores_state(), True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Put back the base weight kept by `merge`, exactly as it was."""
        if self.merged:
            self.base_layer.weight.copy_(self._unmerged_weight)
            self._unmerged_weight = self._merged_cores = None
            self.merged = False

    def _check_merged(self) -> None:
        """Before a merged forward: refuse training; if the cores changed since merging, merge them anew from the
        kept base weight, so the output is always the current adapter's."""
        if self.training and torch.is_grad_enabled() and any(c.requires_grad for c in self.ttlora_cores):
            raise RuntimeError(f"{self.name} is merged: training it would train nothing (ΔW is folded into the frozen "
                               "base weight). Call model.unmerge() before training, model.merge() after.")
        state = self._cores_state()
        if state != self._merged_cores:
            with torch.no_grad():
                self.base_layer.weight.copy_(self.merged_weight())
            self._merged_cores = state

    def extra_repr(self) -> str:
        return (f"in_modes={self.in_modes}, out_modes={self.out_modes}, ranks={self.ranks}, "
                f"scaling={self.scaling:g}, forward_impl={self.forward_impl!r}")
