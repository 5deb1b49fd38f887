from .config import DenseMoELoRAConfig
from .layer import DenseMoELoRALinear
from .model import DenseMoELoRAModel, DenseMoELoRAOutput

__all__ = ["DenseMoELoRAConfig", "DenseMoELoRALinear", "DenseMoELoRAModel", "DenseMoELoRAOutput"]
