"""The user commands behind `scripts/*.py` and the `hf-ttmoe-*` console scripts, one module per command."""
