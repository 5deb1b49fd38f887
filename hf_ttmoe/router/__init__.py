"""Deprecated: `hf_ttmoe.router` is now `hf_ttmoe.ttlora_moe` (named after its model type); this alias goes in 0.3."""

import warnings

from ..ttlora_moe import *  # noqa: F403
from ..ttlora_moe import __all__  # noqa: F401

warnings.warn("hf_ttmoe.router is deprecated: import from hf_ttmoe.ttlora_moe (or hf_ttmoe).", FutureWarning,
              stacklevel=2)
