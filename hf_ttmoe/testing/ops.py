"""Counting what a step launches: top-level ATen ops, a deterministic stand-in for GPU kernel launches."""

from __future__ import annotations

from collections.abc import Callable

from torch.profiler import ProfilerActivity, profile


def top_level_ops(fn: Callable[[], object]) -> int:
    """The ATen ops `fn()` runs that no other ATen op encloses: what the Python side and the autograd engine launch
    (on a GPU each is at least one kernel; views and `detach` are counted too, though they launch none)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()

    def enclosed(event) -> bool:
        parent = event.cpu_parent
        while parent is not None:
            if parent.name.startswith("aten::"):
                return True
            parent = parent.cpu_parent
        return False

    return sum(1 for e in prof.events() if e.name.startswith("aten::") and not enclosed(e))


__all__ = ["top_level_ops"]
