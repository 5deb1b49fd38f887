"""The bottom layer: files a saved model is made of, checked reads and atomic writes, the Hub pull and push
transport, and the errors. Imports nothing of hf_ttmoe outside this package.

- `files.py`: file names, `atomic_write` (umask-respecting), digests, `read_weights` (safetensors, checked first),
  and a saved model's config and weights bound to each other (`write_model_files`, `read_model_files`).
- `pull.py`: `pull` (files at a revision into the Hugging Face cache, checked, all or nothing), `fetch_readme`.
- `push.py`: the Hub client, repo preparation, README/card writing.
- `errors.py`: `ExpertNotFoundError`, `CorruptExpertError`, `IncompatibleExpertError` (all name the repo).
"""

from .errors import CorruptExpertError, ExpertLoadError, ExpertNotFoundError, IncompatibleExpertError
from .files import (
    CONFIG_DIGEST_KEY,
    CONFIG_NAME,
    MODEL_FILES,
    README_NAME,
    WEIGHTS_DIGEST_KEY,
    WEIGHTS_NAME,
    atomic_write,
    check_model_files,
    check_safetensors,
    config_digest,
    file_sha256,
    git_blob_sha1,
    is_local_path,
    read_model_files,
    read_weights,
    write_model_files,
)
from .pull import fetch_readme, pull
from .push import hub_api, hub_commit_with, prepare_repo, write_model_card

__all__ = [
    "CONFIG_DIGEST_KEY",
    "CONFIG_NAME",
    "MODEL_FILES",
    "README_NAME",
    "WEIGHTS_DIGEST_KEY",
    "WEIGHTS_NAME",
    "CorruptExpertError",
    "ExpertLoadError",
    "ExpertNotFoundError",
    "IncompatibleExpertError",
    "atomic_write",
    "check_model_files",
    "check_safetensors",
    "config_digest",
    "fetch_readme",
    "file_sha256",
    "git_blob_sha1",
    "hub_api",
    "hub_commit_with",
    "is_local_path",
    "prepare_repo",
    "pull",
    "read_model_files",
    "read_weights",
    "write_model_card",
    "write_model_files",
]
