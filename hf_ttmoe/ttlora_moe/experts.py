"""Experts as a MoE composes them: read from a local directory or pulled from the Hub at a pinned commit, checked
for compatibility, and their exact TT factors stacked."""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import tt
from ..io import (
    CONFIG_NAME,
    MODEL_FILES,
    CorruptExpertError,
    ExpertNotFoundError,
    IncompatibleExpertError,
    is_local_path,
    pull,
    read_model_files,
)
from ..ttlora.config import TTLoRAConfig
from ..ttlora.layer import CORE_TAG
from ..ttlora.stacked import saved_cores


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
        return saved_cores(self.tensors, module, self.config.layout)

    def reference(self) -> dict:
        """The entry a router's config stores: `{repo_id, revision, task}`."""
        return {"repo_id": self.repo_id, "revision": self.revision, "task": self.task}


def local_expert_dir(repo_id: str, root: str | None = None) -> str | None:
    """The local directory `repo_id` names (itself, or relative to `root`), or None when it names a Hub repo."""
    for candidate in (repo_id, os.path.join(root, repo_id) if root else None):
        if candidate and os.path.isdir(candidate):
            return candidate
    if is_local_path(repo_id):
        where = f" (nor relative to {root!r})" if root else ""
        raise ExpertNotFoundError(f"Expert {repo_id!r}: no such directory{where}.", repo_id)
    return None


def load_expert(entry: dict, root: str | None = None, **hub_kwargs) -> Expert:
    """Read one expert (`{repo_id, revision, task}`) from a local directory or the Hub (pinned to `revision`).

    No model is built, but the folder gets the checks `TTLoRAModel.from_pretrained` gives it: the same
    `read_model_files` (both files, whole, saved together, bytes unchanged), and cores whose ranks are those its
    config gives (`check_cores_fit_config`). `hub_kwargs` (`token`, `cache_dir`, `local_files_only`) go to `pull`.
    Errors name the expert.
    """
    repo_id, revision = entry["repo_id"], entry.get("revision")
    path = local_expert_dir(repo_id, root)
    local = path is not None
    owner = f"Expert {repo_id!r}" + (f" (revision {revision})" if revision and not local else "")
    if not local:
        path, revision = pull(repo_id, MODEL_FILES, revision, owner=owner, **hub_kwargs)
    saved_config, tensors = read_model_files(path, owner, repo_id, revision)
    if saved_config.get("model_type") != TTLoRAConfig.model_type:
        raise IncompatibleExpertError(f"{owner} is a {saved_config.get('model_type')!r} model, not a TT-LoRA expert.")
    try:
        config = TTLoRAConfig.from_dict(saved_config)
    except (ValueError, TypeError) as err:
        raise CorruptExpertError(f"{owner}: {CONFIG_NAME} cannot be read: {err}", repo_id, revision) from err
    task = entry.get("task") or config.task or repo_id
    expert = Expert(repo_id, revision, task, path, config, tensors, local=local)
    check_cores_fit_config(expert, owner)
    return expert


def check_cores_fit_config(expert: Expert, owner: str) -> None:
    """Each adapted module's cores must have the ranks its config's `tt_rank` gives (clipped as `TTLoRALinear`
    clips them), as building the expert with `TTLoRAModel.from_pretrained` requires: a `tt_rank` edited in a
    config saved without digests is refused here too."""
    for module in expert.modules():
        try:
            cores = expert.cores(module)
        except ValueError as err:
            raise IncompatibleExpertError(f"{owner}: {err}") from err
        have = [c.shape[0] for c in cores] + [cores[-1].shape[2]]
        try:
            want = tt.fit_tt_ranks([c.shape[1] for c in cores], expert.config.tt_rank)
        except ValueError as err:
            want = str(err)
        if have != want:
            raise IncompatibleExpertError(
                f"{owner}: the cores of {module} have TT ranks {have}, but its config's tt_rank="
                f"{expert.config.tt_rank!r} gives {want}: {CONFIG_NAME} does not describe these weights.")


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


def check_compatible(experts: list[Expert]) -> None:
    """All experts must share base model, task type, adapted modules and head layout; the error names who differs."""
    if not experts:
        raise ValueError("A TT-LoRA MoE needs at least one expert.")
    ref = experts[0]
    facts = {
        "base_model_signature": lambda e: e.config.base_model_signature,
        "base model": lambda e: (e.config.base_model_name_or_path, e.config.base_model_revision),
        "task_type": lambda e: e.config.task_type,
        "target_modules": lambda e: sorted(e.config.target_modules or []),
        "adapted modules": lambda e: e.modules(),
        "head modules": lambda e: e.config.modules_to_save,
    }
    for expert in experts[1:]:
        for what, get in facts.items():
            if get(expert) != get(ref):
                raise IncompatibleExpertError(
                    f"Expert {expert.repo_id!r} (task {expert.task!r}) is not compatible with expert {ref.repo_id!r} "
                    f"(task {ref.task!r}): {what} {get(expert)} vs {get(ref)}."
                )
    if ref.config.task_type != "seq_cls" or len(ref.config.modules_to_save or []) != 1:
        raise ValueError(
            f"Experts must be sequence classifiers with one head module; {ref.repo_id!r} has task_type="
            f"{ref.config.task_type!r}, modules_to_save={ref.config.modules_to_save}."
        )
    tasks = [e.task for e in experts]
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"Two experts have the same task name: {tasks}; give each expert its own task.")


def stacked_factors(experts: list[Expert], module: str, in_features: int, out_features: int):
    """`U: (E, out, r_max)` with each expert's scaling folded in, `V: (E, r_max, in)`; zero-padded to r_max."""
    us, vs = [], []
    for expert in experts:
        cores = expert.cores(module)
        modes = [c.shape[1] for c in cores]
        m = tt.split_index(modes, in_features)
        if m is None or math.prod(modes[m:]) != out_features:
            raise IncompatibleExpertError(f"Expert {expert.repo_id!r}: cores of {module} (modes {modes}) do not fit a "
                             f"{out_features}x{in_features} weight.")
        u, v = tt.tt_factors([c.float() for c in cores], m)  # (out, r), (r, in)
        us.append(u * (expert.config.alpha / cores[m].shape[0]))
        vs.append(v)
    r_max = max(u.shape[1] for u in us)
    u = torch.stack([F.pad(u, (0, r_max - u.shape[1])) for u in us])  # (E, out, r_max)
    v = torch.stack([F.pad(v, (0, 0, 0, r_max - v.shape[0])) for v in vs])  # (E, r_max, in)
    return u, v


__all__ = ["Expert", "check_compatible", "check_cores_fit_config", "load_expert", "load_experts", "local_expert_dir",
           "stacked_factors"]
