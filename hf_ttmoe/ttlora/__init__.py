from .config import TTLoRAConfig
from .layer import TTLoRALinear
from .model import TTLoRAModel
from .optim import create_riemannian_optimizer

__all__ = ["TTLoRAConfig", "TTLoRALinear", "TTLoRAModel", "create_riemannian_optimizer"]
