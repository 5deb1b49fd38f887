from .config import TTLoRAConfig
from .layer import TTLoRALinear
from .model import TTLoRAModel

__all__ = ["TTLoRAConfig", "TTLoRALinear", "TTLoRAModel"]
