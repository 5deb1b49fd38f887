"""Benchmarks of hf_ttmoe, run from the repository root as `python -m benchmarks.<name>` (see benchmarks/README.md)."""
