"""TT-LoRA configuration."""

from __future__ import annotations

import math
import numbers
from dataclasses import field

from ..adapter import AdapterConfig, is_int
from ..tt import INIT_METHODS
from .stacked import LAYOUTS

FORWARD_IMPLS = ("factors", "contraction", "reconstruction")


class TTLoRAConfig(AdapterConfig):
    """Configuration of a TT-LoRA expert: ΔW of each target linear factorized as a tensor train.

    Args:
        tt_rank: TT rank, one int for every bond or a list of inner ranks. A bond's rank above what its layout allows
            (its full TT rank) is clipped with a warning; one that would give a layer more parameters than its dense
            ΔW is refused (`TTLoRALinear`).
        alpha: ΔW is scaled by `alpha / r`, `r` the rank at the input/output boundary (LoRA's `alpha / r`); > 0.
            16 suits the default chain (scales 1 to 3.2 train alike on SST-2); a two-core layout `[[in], [out]]` is
            LoRA's form and trains as LoRA does at alpha = r (at rank 1, alpha 16 cost 1.7 points; see
            benchmarks/README.md, "The budget on value alone, the two-core chain against LoRA r=1, and the scale").
        tt_shapes: per target module, `[in_modes, out_modes]`, e.g. `{"q_proj": [[16, 8, 4, 4], [4, 4, 8, 16]]}`. A
            key reads as a `target_modules` entry: a last name ("dense") or a path inside the layer
            ("attention.output.dense"), which wins over a last name. Modules no key names are factorized
            automatically (balanced modes, cheapest chain order); a key that names no adapted module is refused.
            Building the model sets this to every adapted module's layout, so a saved expert keeps its layout.
        forward_impl: "factors" (build U, V from the cores, two skinny GEMMs), "contraction" (chain of einsums over
            the batch, ΔW never formed) or "reconstruction" (form ΔW). All three give the same result.
        dropout: dropout on the adapter's input.
        init: how the cores start (ΔW = 0 always: the last core is zero), one of `INIT_METHODS`; see
            `hf_ttmoe.tt.init_tt_cores`.
        layout: "chain" (each ΔW its own tensor train, the paper's TT-LoRA) or "stacked" (one tensor train over the
            stack of a module's matrices across layers: the layers share U and V, each has its own r × r core; see
            `hf_ttmoe.ttlora.stacked`). "stacked" sets every module's `tt_shapes` to `[[in], [1, out]]` and draws
            its own init (U, V Gaussian, each layer's core zero), so `init` must be "gaussian".
    """

    model_type = "ttlora"

    tt_rank: int | list[int] = field(default=5, metadata={"help": "TT rank: one int or the list of inner ranks."})
    alpha: float = field(default=16.0, metadata={"help": "Scale: ΔW is multiplied by alpha / boundary rank."})
    tt_shapes: dict[str, list[list[int]]] | None = field(
        default=None, metadata={"help": "Per module (last name or path in its layer): [in_modes, out_modes]."}
    )
    forward_impl: str = field(default="factors", metadata={"help": f"One of {FORWARD_IMPLS}."})
    dropout: float = field(default=0.0, metadata={"help": "Dropout probability on the adapter input."})
    init: str = field(default="gaussian", metadata={"help": f"How the cores start, one of {INIT_METHODS}."})
    layout: str = field(default="chain", metadata={"help": f"One of {LAYOUTS}: a chain per matrix, or one train over "
                                                           "a module's layers."})

    def __post_init__(self, **kwargs):
        if self.forward_impl not in FORWARD_IMPLS:
            raise ValueError(f"forward_impl={self.forward_impl!r} is not one of {FORWARD_IMPLS}.")
        if self.init not in INIT_METHODS:
            raise ValueError(f"init={self.init!r} is not one of {INIT_METHODS}.")
        ranks = list(self.tt_rank) if isinstance(self.tt_rank, (list, tuple)) else [self.tt_rank]
        if not ranks or not all(is_int(r, minimum=1) for r in ranks):
            raise ValueError(f"tt_rank={self.tt_rank!r} must be a positive int or a list of positive ints.")
        self.tt_rank = [int(r) for r in ranks] if isinstance(self.tt_rank, (list, tuple)) else int(self.tt_rank)
        alpha = self.alpha
        if not isinstance(alpha, numbers.Real) or isinstance(alpha, bool) or not math.isfinite(alpha) or alpha <= 0:
            raise ValueError(f"alpha={alpha!r} must be a finite number > 0 (ΔW is scaled by alpha / rank).")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1).")
        if self.tt_shapes is not None and not isinstance(self.tt_shapes, dict):
            raise ValueError(f"tt_shapes={self.tt_shapes!r} must be a dict {{module name: [in_modes, out_modes]}}.")
        for name, shape in (self.tt_shapes or {}).items():
            if not (isinstance(shape, (list, tuple)) and len(shape) == 2 and all(
                    isinstance(modes, (list, tuple)) and modes and all(is_int(m, minimum=1) for m in modes)
                    for modes in shape)):
                raise ValueError(f"tt_shapes[{name!r}]={shape!r} must be [in_modes, out_modes], two non-empty lists "
                                 "of positive ints, e.g. [[16, 24], [24, 16]].")
        if self.tt_shapes is not None:
            self.tt_shapes = {name: [[int(m) for m in modes] for modes in shape]
                              for name, shape in self.tt_shapes.items()}
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout={self.layout!r} is not one of {LAYOUTS}.")
        if self.layout == "stacked":
            if self.init != "gaussian":
                raise ValueError(f"init={self.init!r} with layout='stacked': that layout draws its own cores (U, V "
                                 "Gaussian, each layer's core zero); use init='gaussian'.")
            for name, (in_modes, out_modes) in (self.tt_shapes or {}).items():
                if not (isinstance(in_modes, (list, tuple)) and isinstance(out_modes, (list, tuple))
                        and len(in_modes) == 1 and len(out_modes) == 2 and out_modes[0] == 1):
                    raise ValueError(f"tt_shapes[{name!r}]={[in_modes, out_modes]!r} with layout='stacked': a stacked "
                                     "layer's modes are [[in], [1, out]] (set when the model is built); leave "
                                     "tt_shapes out.")
        super().__post_init__(**kwargs)


__all__ = ["TTLoRAConfig", "FORWARD_IMPLS"]
