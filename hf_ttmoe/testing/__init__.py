"""Testing utilities: a local Hugging Face Hub server, to test Hub workflows offline (see `hub_server`), and a count
of the ATen ops a step launches (`ops`)."""

from .hub_server import (
           ORGS,
           TOKEN,
           USER,
           HubServer,
           HubStore,
           client_environment,
           client_settings,
           git_blob_sha1,
           use_hub,
)
from .ops import top_level_ops

__all__ = ["HubServer", "HubStore", "client_environment", "client_settings", "git_blob_sha1", "TOKEN", "USER", "ORGS",
           "top_level_ops", "use_hub"]
