"""The bottom layer: files a saved model is made of, checked reads and atomic writes, the Hub pull and push
transport, and the errors. Imports nothing of hf_ttmoe outside this package.

- `files.py`: file names, `atomic_write`, digests, `read_weights` (safetensors, checked first).
- `pull.py`: `pull` (files at a revision into the Hugging Face cache, checked, all or nothing), `fetch_readme`.
- `push.py`: the Hub client, repo preparation, README/card writing.
- `errors.py`: `ExpertNotFoundError`, `CorruptExpertError`, `IncompatibleExpertError` (all name the repo).
"""

from .errors import CorruptExpertError, ExpertLoadError, ExpertNotFoundError, IncompatibleExpertError
from .files import (
    CONFIG_NAME,
    MODEL_FILES,
    README_NAME,
    WEIGHTS_NAME,
    atomic_write,
    check_safetensors,
    file_sha256,
    git_blob_sha1,
    read_weights,
)
from .pull import fetch_readme, pull
from .push import hub_api, hub_commit_with, prepare_repo, write_model_card

__all__ = [
    "CONFIG_NAME",
    "MODEL_FILES",
    "README_NAME",
    "WEIGHTS_NAME",
    "CorruptExpertError",
    "ExpertLoadError",
    "ExpertNotFoundError",
    "IncompatibleExpertError",
    "atomic_write",
    "check_safetensors",
    "fetch_readme",
    "file_sha256",
    "git_blob_sha1",
    "hub_api",
    "hub_commit_with",
    "prepare_repo",
    "pull",
    "read_weights",
    "write_model_card",
]
