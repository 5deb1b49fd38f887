"""TT-LoRA configuration."""

from __future__ import annotations

from dataclasses import field

from ..adapter import AdapterConfig

FORWARD_IMPLS = ("factors", "contraction", "reconstruction")


class TTLoRAConfig(AdapterConfig):
    """Configuration of a TT-LoRA expert: ΔW of each target linear factorized as a tensor train.

    Args:
        tt_rank: TT rank, one int for every bond or a list of inner ranks.
        alpha: ΔW is scaled by `alpha / r`, `r` the rank at the input/output boundary (LoRA's `alpha / r`).
        tt_shapes: per target module name, `[in_modes, out_modes]`, e.g. `{"q_proj": [[16, 8, 4, 4], [4, 4, 8, 16]]}`;
            modules not listed are factorized automatically (balanced modes, cheapest chain order).
        forward_impl: "factors" (build U, V from the cores, two skinny GEMMs), "contraction" (chain of einsums over
            the batch, ΔW never formed) or "reconstruction" (form ΔW). All three give the same result.
        dropout: dropout on the adapter's input.
    """

    model_type = "ttlora"

    tt_rank: int | list[int] = field(default=5, metadata={"help": "TT rank: one int or the list of inner ranks."})
    alpha: float = field(default=16.0, metadata={"help": "Scale: ΔW is multiplied by alpha / boundary rank."})
    tt_shapes: dict[str, list[list[int]]] | None = field(
        default=None, metadata={"help": "Per target module: [in_modes, out_modes]; others are automatic."}
    )
    forward_impl: str = field(default="factors", metadata={"help": f"One of {FORWARD_IMPLS}."})
    dropout: float = field(default=0.0, metadata={"help": "Dropout probability on the adapter input."})

    def __post_init__(self, **kwargs):
        if self.forward_impl not in FORWARD_IMPLS:
            raise ValueError(f"forward_impl={self.forward_impl!r} is not one of {FORWARD_IMPLS}.")
        ranks = [self.tt_rank] if isinstance(self.tt_rank, int) else list(self.tt_rank)
        if not ranks or any(not isinstance(r, int) or r < 1 for r in ranks):
            raise ValueError(f"tt_rank={self.tt_rank!r} must be a positive int or a list of positive ints.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1).")
        for name, shape in (self.tt_shapes or {}).items():
            if not (isinstance(shape, (list, tuple)) and len(shape) == 2):
                raise ValueError(f"tt_shapes[{name!r}]={shape!r} must be [in_modes, out_modes].")
        super().__post_init__(**kwargs)


__all__ = ["TTLoRAConfig", "FORWARD_IMPLS"]
