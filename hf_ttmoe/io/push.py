"""Writing to the Hub: the client, repos and branches, model cards merged into the README already there, and the
check that a repo already holds a directory's files.

Follows `PyTorchModelHubMixin`: `create_repo(exist_ok=True)` -> save to a temporary directory -> one commit. A README a
user edited is updated, never overwritten (`hub_cards.update_readme`).
"""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

from hub_cards import HubCardData, render_card, update_readme

from .._version import __version__
from .files import MODEL_FILES, README_NAME, atomic_write, file_sha256, git_blob_sha1


def hub_api(token: str | bool | None) -> HfApi:
    """An `HfApi` client that names hf_ttmoe in its user agent."""
    return HfApi(token=token, library_name="hf_ttmoe", library_version=__version__)


def prepare_repo(api: HfApi, repo_id: str, private: bool | None, revision: str | None) -> str:
    """Create `repo_id` (and the branch `revision`) if missing; returns the repo id as the Hub spells it."""
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    if revision is not None:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    return repo_id


def hub_commit_with(api: HfApi, repo_id: str, directory: str, revision: str | None) -> str | None:
    """The head commit of `repo_id` if it already holds `directory`'s config and weights byte for byte, else None."""
    try:
        info = api.model_info(repo_id, revision=revision, files_metadata=True)
    except (RepositoryNotFoundError, RevisionNotFoundError):
        return None
    remote = {s.rfilename: s for s in info.siblings or []}
    for name in MODEL_FILES:
        local, sibling = os.path.join(directory, name), remote.get(name)
        if sibling is None:
            return None
        same = (sibling.lfs.sha256 == file_sha256(local)) if sibling.lfs else \
            sibling.blob_id == git_blob_sha1(Path(local).read_bytes())
        if not same:
            return None
    return info.sha


def write_model_card(card_data: HubCardData, directory: str | os.PathLike, existing: str | None = None) -> str:
    """Render `card_data` into `directory/README.md`, merged into `existing` README text, or else into the README
    already in `directory` (updated, never overwritten: see `hub_cards.update_readme`). Returns the text written."""
    path = Path(directory, README_NAME)
    if existing is None and path.is_file():
        existing = path.read_text(encoding="utf-8")
    text = update_readme(existing, render_card(card_data))
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return text


__all__ = ["hub_api", "hub_commit_with", "prepare_repo", "write_model_card"]
