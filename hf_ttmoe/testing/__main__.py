"""`python -m hf_ttmoe.testing [--root DIR]`: serve a local Hub until Ctrl-C (see `hf_ttmoe.testing.hub_server`)."""

from .hub_server import main

main()
