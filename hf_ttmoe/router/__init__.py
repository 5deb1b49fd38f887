from .config import TTLoRAMoEConfig
from .features import compute_router_features, train_router_on_features
from .layer import MixedHead, MixedTTLoRALinear
from .model import TTLoRAMoEModel, TTLoRAMoEOutput, check_compatible, load_expert
from .router import Router

__all__ = ["MixedHead", "MixedTTLoRALinear", "Router", "TTLoRAMoEConfig", "TTLoRAMoEModel", "TTLoRAMoEOutput",
           "check_compatible", "compute_router_features", "load_expert", "train_router_on_features"]
