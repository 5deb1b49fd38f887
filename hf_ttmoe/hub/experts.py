"""Experts as routers compose them: read from a local directory or pulled from the Hub at a pinned commit."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from ..adapter import CONFIG_NAME, WEIGHTS_NAME
from ..ttlora.config import TTLoRAConfig
from .pull import MODEL_FILES, CorruptExpertError, ExpertNotFoundError, IncompatibleExpertError, pull, read_weights

CORE_TAG = ".ttlora_cores."


@dataclass
class Expert:
    """One frozen expert as read from its directory: where it comes from, its config and tensors.

    Args:
        repo_id: the Hub id, or the directory as referenced (possibly relative to a router's directory).
        revision: the commit it was pulled at (Hub), or None (local directory).
        task: the task it serves.
        path: the directory the files were read from (a cache snapshot for Hub experts).
        local: True when read from a local directory rather than the Hub.
    """

    repo_id: str
    revision: str | None
    task: str
    path: str
    config: TTLoRAConfig
    tensors: dict[str, torch.Tensor]
    local: bool = True

    @property
    def num_labels(self) -> int:
        return self.config.num_labels

    @property
    def label_names(self) -> list[str]:
        return [self.config.id2label[i] for i in range(self.num_labels)]

    def modules(self) -> list[str]:
        return sorted({k.split(CORE_TAG)[0] for k in self.tensors if CORE_TAG in k})

    def cores(self, module: str) -> list[torch.Tensor]:
        n = sum(1 for k in self.tensors if k.startswith(module + CORE_TAG))
        return [self.tensors[f"{module}{CORE_TAG}{j}"] for j in range(n)]

    def reference(self) -> dict:
        """The entry a router's config stores: `{repo_id, revision, task}`."""
        return {"repo_id": self.repo_id, "revision": self.revision, "task": self.task}


def local_expert_dir(repo_id: str, root: str | None = None) -> str | None:
    """The local directory `repo_id` names (itself, or relative to `root`), or None when it names a Hub repo."""
    for candidate in (repo_id, os.path.join(root, repo_id) if root else None):
        if candidate and os.path.isdir(candidate):
            return candidate
    if os.path.isabs(repo_id) or repo_id.startswith(".") or repo_id.count("/") > 1:
        where = f" (nor relative to {root!r})" if root else ""
        raise ExpertNotFoundError(f"Expert {repo_id!r}: no such directory{where}.", repo_id)
    return None


def load_expert(entry: dict, root: str | None = None, **hub_kwargs) -> Expert:
    """Read one expert (`{repo_id, revision, task}`) from a local directory or the Hub (pinned to `revision`).

    No model is built; `hub_kwargs` (`token`, `cache_dir`, `local_files_only`) go to `pull`. Errors name the expert.
    """
    repo_id, revision = entry["repo_id"], entry.get("revision")
    path = local_expert_dir(repo_id, root)
    local = path is not None
    owner = f"Expert {repo_id!r}" + (f" (revision {revision})" if revision and not local else "")
    if not local:
        path, revision = pull(repo_id, MODEL_FILES, revision, owner=owner, **hub_kwargs)
    for name in MODEL_FILES:
        if not os.path.isfile(os.path.join(path, name)):
            raise ExpertNotFoundError(f"{owner}: {path!r} has no {name}; it is not a saved hf_ttmoe model.", repo_id)
    try:
        config = TTLoRAConfig.from_dict(json.loads(Path(path, CONFIG_NAME).read_text()))
    except (json.JSONDecodeError, ValueError, TypeError) as err:
        raise CorruptExpertError(f"{owner}: {CONFIG_NAME} cannot be read: {err}", repo_id, revision) from err
    if config.model_type != "ttlora":
        raise IncompatibleExpertError(f"{owner} is a {config.model_type!r} model, not a TT-LoRA expert.")
    tensors = read_weights(os.path.join(path, WEIGHTS_NAME), owner)
    task = entry.get("task") or config.task or repo_id
    return Expert(repo_id, revision, task, path, config, tensors, local=local)


def load_experts(entries: list[dict], root: str | None = None, max_workers: int = 8, **hub_kwargs) -> list[Expert]:
    """`load_expert` for each entry, in order. Hub experts are pulled in parallel threads, one thread per repo (so
    that a failed pull can restore that repo's cache folder without racing another pull of the same repo)."""
    groups: dict[str, list[int]] = {}
    experts: list[Expert | None] = [None] * len(entries)
    for i, entry in enumerate(entries):
        if local_expert_dir(entry["repo_id"], root) is not None:
            experts[i] = load_expert(entry, root)
        else:
            groups.setdefault(entry["repo_id"], []).append(i)

    def load_group(indices: list[int]) -> list[tuple[int, Expert]]:
        return [(i, load_expert(entries[i], root, **hub_kwargs)) for i in indices]

    if groups:
        with ThreadPoolExecutor(max_workers=min(max_workers, len(groups))) as pool:
            futures = [pool.submit(load_group, indices) for indices in groups.values()]
            errors = []
            for future in futures:
                try:
                    for i, expert in future.result():
                        experts[i] = expert
                except Exception as err:
                    errors.append(err)
        if errors:
            raise errors[0]
    return experts


__all__ = ["CORE_TAG", "Expert", "load_expert", "load_experts", "local_expert_dir"]
