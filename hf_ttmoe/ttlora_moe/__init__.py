"""TT-LoRA MoE (model type `ttlora_moe`): frozen TT-LoRA experts composed on one base model, and a sparse top-1 gate
that picks one expert per input.

- `config.py`: `TTLoRAMoEConfig`; `experts.py`: reading, checking and stacking experts; `gate.py`: the `Router`;
  `layer.py`: per-row mixed-expert layers; `features.py`: fast router training on cached features; `model.py`:
  `TTLoRAMoEModel`.
"""

from .config import TTLoRAMoEConfig
from .experts import Expert, check_compatible, load_expert, load_experts, stacked_factors
from .features import compute_router_features, train_router_on_features
from .gate import Router
from .layer import MixedHead, MixedTTLoRALinear
from .model import TTLoRAMoEModel, TTLoRAMoEOutput

__all__ = ["Expert", "MixedHead", "MixedTTLoRALinear", "Router", "TTLoRAMoEConfig", "TTLoRAMoEModel",
           "TTLoRAMoEOutput", "check_compatible", "compute_router_features", "load_expert", "load_experts",
           "stacked_factors", "train_router_on_features"]
