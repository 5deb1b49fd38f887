"""Parameter counts read from what a method saves: the stored parameters are the tensors in its weight files."""

from __future__ import annotations

import math
from pathlib import Path

from safetensors import safe_open


def stored_parameters(*files: str | Path) -> int:
    """Sum of the element counts of every tensor in the given safetensors files (read from their headers)."""
    total = 0
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            total += sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    return total


def trainable_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
