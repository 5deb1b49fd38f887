"""Testing utilities: a local Hugging Face Hub server, to test Hub workflows offline (see `hub_server`)."""

from .hub_server import ORGS, TOKEN, USER, HubServer, HubStore, client_environment, client_settings, git_blob_sha1

__all__ = ["HubServer", "HubStore", "client_environment", "client_settings", "git_blob_sha1", "TOKEN", "USER", "ORGS"]
