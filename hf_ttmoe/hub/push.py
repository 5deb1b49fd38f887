"""Pushing: an expert, a dense MoE-LoRA model or a router in one commit with its card; a router's local experts first.

Follows `PyTorchModelHubMixin`: `create_repo(exist_ok=True)` -> save to a temporary directory -> one `upload_folder`
commit, with a card rendered from `hub_cards` and merged into the README already on the Hub (a README a user edited
is updated, never overwritten).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi, ModelCard
from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

from hub_cards import ExpertCardData, render_card, update_readme

from ..adapter import CONFIG_NAME, WEIGHTS_NAME
from ..ttlora.config import TTLoRAConfig
from .cards import README_NAME, expert_facts, fetch_readme, refresh_card_data, write_model_card
from .pull import MODEL_FILES, file_sha256, git_blob_sha1, read_weights

DEFAULT_ROUTER_NAME = "ttlora-moe"


def _api(token: str | bool | None) -> HfApi:
    from .. import __version__

    return HfApi(token=token, library_name="hf_ttmoe", library_version=__version__)


def _prepare_repo(api: HfApi, repo_id: str, private: bool | None, revision: str | None) -> str:
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    if revision is not None:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    return repo_id


def push_to_hub(model, repo_id: str, *, commit_message: str | None = None, commit_description: str | None = None,
                private: bool | None = None, token: str | bool | None = None, revision: str | None = None,
                create_pr: bool = False, tags: list[str] | None = None, **unused):
    """Push an expert, a dense MoE-LoRA model or a router (after its local experts) in one commit, with its card.

    Args:
        model: a `TTLoRAModel`, `DenseMoELoRAModel` or `TTLoRAMoEModel` (whose local experts are pushed first, to the
            router's namespace: see `push_experts`).
        repo_id: "namespace/name"; created if missing.
        commit_message / commit_description / private / token / revision (a branch, created if missing) /
            create_pr: as in `HfApi.upload_folder`.
        tags: extra card tags.

    Returns:
        The `huggingface_hub.CommitInfo` of the commit (`.oid` is its sha).
    """
    from ..router import TTLoRAMoEModel

    if isinstance(model, TTLoRAMoEModel):
        namespace = repo_id.split("/")[0] if "/" in repo_id else None
        _push_local_experts(model, namespace, None, private, token)
    api = _api(token)
    repo_id = _prepare_repo(api, repo_id, private, revision)
    data = refresh_card_data(model, repo_id)
    data.tags = list(dict.fromkeys([*data.tags, *(tags or [])]))
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        write_model_card(data, tmp, existing=fetch_readme(repo_id, revision, token) or "")
        return api.upload_folder(repo_id=repo_id, folder_path=tmp, revision=revision, create_pr=create_pr,
                                 commit_message=commit_message or f"Upload {type(model).__name__}",
                                 commit_description=commit_description)


def _hub_commit_with(api: HfApi, repo_id: str, directory: str, revision: str | None) -> str | None:
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


def push_expert_dir(directory: str | os.PathLike, repo_id: str, *, in_features: dict[str, int] | None = None,
                    metadata: dict | None = None, commit_message: str | None = None, private: bool | None = None,
                    token: str | bool | None = None, revision: str | None = None) -> str:
    """Push a saved expert directory in one commit, unless the repo already holds its exact config and weights.

    The card is rendered from the files; when the directory has a README.md (e.g. written by `ModelCardCallback`
    during training, or by hand) its body is kept and only its metadata refreshed. Either is then merged into the
    README on the Hub (see `hub_cards.update_readme`).

    Args:
        directory: a `TTLoRAModel.save_pretrained` directory.
        repo_id: "namespace/name"; created if missing.
        in_features: module name -> input size, to show each TT layout's input/output split (default: guessed from
            the base model's hidden and intermediate sizes).
        metadata: card metadata to set (`license`, `language`, ...); `tags` and `datasets` are added to the card's.
        commit_message / private / token / revision: as in `HfApi.create_commit`.

    Returns:
        The sha of the commit holding the files.
    """
    directory = str(directory)
    api = _api(token)
    repo_id = _prepare_repo(api, repo_id, private, revision)
    existing = _hub_commit_with(api, repo_id, directory, revision)
    if existing is not None:
        return existing
    config = TTLoRAConfig.from_dict(json.loads(Path(directory, CONFIG_NAME).read_text()))
    tensors = read_weights(os.path.join(directory, WEIGHTS_NAME), f"Expert {directory!r}")
    card = render_card(expert_facts(ExpertCardData(model_id=repo_id), config, tensors, in_features, repo_id))
    readme = Path(directory, README_NAME)
    if readme.is_file():  # its body stays (it may hold training facts); its metadata gets ours
        card = _as_card(update_readme(readme.read_text(encoding="utf-8"), card, keep_body=True))
    for key, value in (metadata or {}).items():
        if key in ("tags", "datasets"):
            value = list(dict.fromkeys([*(card.data.get(key) or []), *value]))
        card.data[key] = value
    text = update_readme(fetch_readme(repo_id, revision, token), card)
    operations = [CommitOperationAdd(name, os.path.join(directory, name)) for name in MODEL_FILES]
    operations.append(CommitOperationAdd(README_NAME, text.encode()))
    info = api.create_commit(repo_id, operations=operations, revision=revision,
                             commit_message=commit_message or f"Upload TT-LoRA expert {config.task or ''}".strip())
    return info.oid


def _as_card(text: str) -> ModelCard:
    return ModelCard(text, ignore_metadata_errors=True)


def push_experts(moe, namespace: str | None, repo_id: str | None = None, *, repo_names: dict[str, str] | None = None,
                 commit_message: str | None = None, private: bool | None = None, token: str | bool | None = None,
                 revision: str | None = None, tags: list[str] | None = None):
    """Push every expert of `moe` that is not on the Hub yet, then the router, pinned to the experts' commits.

    Experts loaded from the Hub are already pinned to the commit they were pulled at and are not pushed again. A local
    expert goes to `{namespace}/{repo_names.get(task, directory name)}`; if that repo already holds the same config
    and weights, its head commit is pinned and nothing is pushed. `moe.config.experts` is updated in place to the
    Hub references.

    Args:
        moe: a `TTLoRAMoEModel`.
        namespace: user or organization for the expert repos (and the router, when `repo_id` is None).
        repo_id: the router's repo (default `{namespace}/ttlora-moe`).
        repo_names: task -> repo name for local experts.
        commit_message / private / token / revision / tags: as in `push_to_hub` (`revision` applies to the router).

    Returns:
        The router's `CommitInfo`.
    """
    if repo_id is None and namespace is None:
        raise ValueError("push_experts needs namespace= (for the expert repos) or repo_id= 'namespace/name'.")
    _push_local_experts(moe, namespace, repo_names, private, token)
    return push_to_hub(moe, repo_id or f"{namespace}/{DEFAULT_ROUTER_NAME}", commit_message=commit_message,
                       private=private, token=token, revision=revision, tags=tags)


def _push_local_experts(moe, namespace: str | None, repo_names: dict[str, str] | None, private: bool | None,
                        token: str | bool | None) -> None:
    """Push `moe`'s local experts (see `push_experts`) and re-point `moe` at the commits holding them."""
    names, targets, pinned = repo_names or {}, {}, []
    dims = {f"model.{name}": layer.base_layer.in_features for name, layer in moe.model.named_modules()
            if hasattr(layer, "expert_index") and hasattr(layer, "base_layer")}
    for expert in moe.expert_sources:
        if not expert.local:
            pinned.append(expert)
            continue
        if namespace is None:
            raise ValueError(f"Expert {expert.repo_id!r} is a local directory: give the router's repo_id as "
                             "'namespace/name' (or push_experts(namespace=...)) so it can be pushed.")
        target = f"{namespace}/{names.get(expert.task) or Path(expert.path).resolve().name}"
        if target in targets:
            raise ValueError(f"Experts {targets[target]!r} and {expert.path!r} would both be pushed to {target!r}; "
                             "give them different names with repo_names={task: name}.")
        targets[target] = expert.path
        commit = push_expert_dir(expert.path, target, in_features=dims, private=private, token=token)
        pinned.append(replace(expert, repo_id=target, revision=commit, local=False))
    moe.expert_sources = pinned
    moe.config.experts = [e.reference() for e in pinned]


__all__ = ["DEFAULT_ROUTER_NAME", "push_expert_dir", "push_experts", "push_to_hub"]
