from .config import TTLoRAMoEConfig
from .layer import MixedHead, MixedTTLoRALinear
from .model import TTLoRAMoEModel, TTLoRAMoEOutput, check_compatible, load_expert
from .router import Router

__all__ = ["MixedHead", "MixedTTLoRALinear", "Router", "TTLoRAMoEConfig", "TTLoRAMoEModel", "TTLoRAMoEOutput",
           "check_compatible", "load_expert"]
