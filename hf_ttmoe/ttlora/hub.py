"""A TT-LoRA expert's model card facts, read from its config and saved cores, and pushing a saved expert directory."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from huggingface_hub import CommitOperationAdd, ModelCard

from hub_cards import ExpertCardData, render_card, update_readme

from .. import tt
from ..io import (
    MODEL_FILES,
    README_NAME,
    fetch_readme,
    hub_api,
    hub_commit_with,
    prepare_repo,
    read_model_files,
)
from ..saved_model import base_card_facts
from .config import TTLoRAConfig
from .layer import CORE_TAG
from .stacked import saved_cores

LORA_REFERENCE_RANK = 16  # the cards compare TT-LoRA's parameter count with LoRA r=16 on the same modules


def _split_modes(modes: list[int], in_features: int | None, candidates: tuple[int, ...]) -> int | None:
    """Index where the input modes end in a TT chain, from the input size (or the first fitting candidate)."""
    for size in ([in_features] if in_features else list(candidates)):
        m = tt.split_index(modes, size)
        if m is not None:
            return m
    return None


def expert_facts(data: ExpertCardData, config: TTLoRAConfig, tensors: dict[str, torch.Tensor],
                 in_features: dict[str, int] | None = None, repo_id: str | None = None) -> ExpertCardData:
    """Fill an expert's card data from its config and saved tensors. `in_features` (module -> input size) places the
    input/output split of each TT chain; without it the base's hidden and intermediate sizes are tried."""
    base_card_facts(data, config, repo_id)
    data.tt_rank, data.alpha, data.tt_layout = config.tt_rank, config.alpha, config.layout
    data.target_modules, data.layers = list(config.target_modules or []), config.layers_to_transform
    signature = config.base_model_signature or {}
    candidates = tuple(v for v in (signature.get("hidden_size"), signature.get("intermediate_size")) if v)
    layouts: dict[tuple, dict] = {}
    lora = 0
    for module in sorted({k.split(CORE_TAG)[0] for k in tensors if CORE_TAG in k}):
        cores = saved_cores(tensors, module, config.layout)
        modes, ranks = [c.shape[1] for c in cores], [c.shape[0] for c in cores] + [cores[-1].shape[2]]
        m = _split_modes(modes, (in_features or {}).get(module), candidates)
        in_modes, out_modes = (modes[:m], modes[m:]) if m else (modes, [])
        params = sum(c.numel() for c in cores)
        if m:
            lora += LORA_REFERENCE_RANK * (math.prod(in_modes) + math.prod(out_modes))
        key = (module.rsplit(".", 1)[-1], tuple(in_modes), tuple(out_modes), tuple(ranks))
        layout = layouts.setdefault(key, {"module": key[0], "in_modes": in_modes, "out_modes": out_modes,
                                          "ranks": ranks, "in_features": math.prod(in_modes),
                                          "out_features": math.prod(out_modes) if out_modes else "?",
                                          "parameters": params, "layers": 0})
        layout["layers"] += 1
    data.tt_layouts = list(layouts.values())
    # the cores as saved: a stacked expert's shared cores once
    data.trainable_parameters = {"adapter": sum(v.numel() for k, v in tensors.items() if CORE_TAG in k),
                                 "head": sum(v.numel() for k, v in tensors.items() if CORE_TAG not in k)}
    data.lora_r16_parameters = lora or None
    return data


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
    saved_config, tensors = read_model_files(directory, f"Expert {directory!r}")  # a damaged folder is not pushed
    config = TTLoRAConfig.from_dict(saved_config)
    api = hub_api(token)
    repo_id = prepare_repo(api, repo_id, private, revision)
    existing = hub_commit_with(api, repo_id, directory, revision)
    if existing is not None:
        return existing
    card = render_card(expert_facts(ExpertCardData(model_id=repo_id), config, tensors, in_features, repo_id))
    readme = Path(directory, README_NAME)
    if readme.is_file():  # its body stays (it may hold training facts); its metadata gets ours
        card = ModelCard(update_readme(readme.read_text(encoding="utf-8"), card, keep_body=True),
                         ignore_metadata_errors=True)
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


__all__ = ["expert_facts", "push_expert_dir"]
