"""The multi-task comparison of issue 14 (`python -m benchmarks.multitask`, see benchmarks/README.md)."""
