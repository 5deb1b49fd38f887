"""Card data from models and saved experts (the automatic fields of `hub_cards`), and writing cards to directories."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from huggingface_hub import constants

from hub_cards import ExpertCardData, HubCardData, MoELoRACardData, RouterCardData, render_card, update_readme

from ..adapter import atomic_write
from ..ttlora.config import TTLoRAConfig
from .experts import CORE_TAG
from .pull import ExpertNotFoundError, pull

README_NAME = "README.md"
LORA_REFERENCE_RANK = 16  # the cards compare TT-LoRA's parameter count with LoRA r=16 on the same modules


def model_card_data(model) -> HubCardData:
    """The card data attached to `model` (created on first use; user fields persist on the model)."""
    data = model.__dict__.get("_hub_card_data")
    if data is None:
        from ..moe_lora import DenseMoELoRAModel
        from ..router import TTLoRAMoEModel

        cls = RouterCardData if isinstance(model, TTLoRAMoEModel) else \
            MoELoRACardData if isinstance(model, DenseMoELoRAModel) else ExpertCardData
        data = model.__dict__["_hub_card_data"] = cls()
    return data


def _base_facts(data: HubCardData, config, repo_id: str | None) -> None:
    from .. import __version__

    data.model_id = data.model_id or repo_id
    data.base_model = config.base_model_name_or_path
    data.base_model_revision = getattr(config, "base_model_revision", None)
    data.task = getattr(config, "task", None)
    data.task_type = getattr(config, "task_type", "seq_cls")
    data.library_version = __version__
    data.hub_url = constants.ENDPOINT
    if data.task_type == "seq_cls" and getattr(config, "id2label", None):
        data.labels = [config.id2label[i] for i in range(config.num_labels)]


def _split_modes(modes: list[int], in_features: int | None, candidates: tuple[int, ...]) -> int | None:
    """Index where the input modes end in a TT chain, from the input size (or the first fitting candidate)."""
    for size in ([in_features] if in_features else list(candidates)):
        m = next((j for j in range(1, len(modes)) if math.prod(modes[:j]) == size), None)
        if m is not None:
            return m
    return None


def expert_facts(data: ExpertCardData, config: TTLoRAConfig, tensors: dict[str, torch.Tensor],
                 in_features: dict[str, int] | None = None, repo_id: str | None = None) -> ExpertCardData:
    """Fill an expert's card data from its config and saved tensors. `in_features` (module -> input size) places the
    input/output split of each TT chain; without it the base's hidden and intermediate sizes are tried."""
    _base_facts(data, config, repo_id)
    data.tt_rank, data.alpha = config.tt_rank, config.alpha
    data.target_modules, data.layers = list(config.target_modules or []), config.layers_to_transform
    signature = config.base_model_signature or {}
    candidates = tuple(v for v in (signature.get("hidden_size"), signature.get("intermediate_size")) if v)
    layouts: dict[tuple, dict] = {}
    adapter = lora = 0
    for module in sorted({k.split(CORE_TAG)[0] for k in tensors if CORE_TAG in k}):
        cores = [tensors[f"{module}{CORE_TAG}{j}"] for j in range(sum(k.startswith(module + CORE_TAG)
                                                                       for k in tensors))]
        modes, ranks = [c.shape[1] for c in cores], [c.shape[0] for c in cores] + [cores[-1].shape[2]]
        m = _split_modes(modes, (in_features or {}).get(module), candidates)
        in_modes, out_modes = (modes[:m], modes[m:]) if m else (modes, [])
        params = sum(c.numel() for c in cores)
        adapter += params
        if m:
            lora += LORA_REFERENCE_RANK * (math.prod(in_modes) + math.prod(out_modes))
        key = (module.rsplit(".", 1)[-1], tuple(in_modes), tuple(out_modes), tuple(ranks))
        layout = layouts.setdefault(key, {"module": key[0], "in_modes": in_modes, "out_modes": out_modes,
                                          "ranks": ranks, "in_features": math.prod(in_modes),
                                          "out_features": math.prod(out_modes) if out_modes else "?",
                                          "parameters": params, "layers": 0})
        layout["layers"] += 1
    data.tt_layouts = list(layouts.values())
    data.trainable_parameters = {"adapter": adapter,
                                 "head": sum(v.numel() for k, v in tensors.items() if CORE_TAG not in k)}
    data.lora_r16_parameters = lora or None
    return data


def refresh_card_data(model, repo_id: str | None = None) -> HubCardData:
    """`model.model_card_data` with every automatic field filled from the model as it is now."""
    from ..router import TTLoRAMoEModel

    data = model_card_data(model)
    config = model.config
    if isinstance(data, ExpertCardData):
        dims = {name: layer.base_layer.in_features for name, layer in model.named_modules()
                if hasattr(layer, "ttlora_cores")}
        return expert_facts(data, config, model.adapter_state_dict(), dims, repo_id)
    _base_facts(data, config, repo_id)
    if isinstance(model, TTLoRAMoEModel):
        data.task_type = "seq_cls"
        data.experts = [{**e.reference(), "labels": e.label_names} for e in model.expert_sources]
        data.router_type, data.router_layer = config.router_type, config.router_layer
        data.pooling, data.noisy_gating = model.pooling, config.noisy_gating
        data.trainable_parameters = {"router": sum(p.numel() for p in model.router.parameters())}
        return data
    data.num_experts, data.lora_rank, data.lora_alpha = config.num_experts, config.lora_rank, config.lora_alpha
    data.num_experts_per_tok, data.router_aux_loss_coef = config.num_experts_per_tok, config.router_aux_loss_coef
    data.target_modules, data.layers = list(config.target_modules or []), config.layers_to_transform
    data.adapted_linears = len(model.adapter_layers())
    counts = model.num_parameters_by_kind()
    data.trainable_parameters = {"adapter": counts["adapter"], "head": counts["head"]}
    return data


def write_model_card(card_data: HubCardData, directory: str | os.PathLike, existing: str | None = None) -> str:
    """Render `card_data` into `directory/README.md`, merged into `existing` README text, or else into the README
    already in `directory` (updated, never overwritten: see `hub_cards.update_readme`). Returns the text written."""
    path = Path(directory, README_NAME)
    if existing is None and path.is_file():
        existing = path.read_text(encoding="utf-8")
    text = update_readme(existing, render_card(card_data))
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return text


def fetch_readme(repo_id: str, revision: str | None = None, token: str | bool | None = None) -> str | None:
    """The README text of a Hub repo, or None when the repo, the revision or the README does not exist."""
    try:
        directory, _ = pull(repo_id, (README_NAME,), revision, owner=f"Repo {repo_id!r}", token=token)
    except ExpertNotFoundError:
        return None
    return Path(directory, README_NAME).read_text(encoding="utf-8")


__all__ = ["README_NAME", "expert_facts", "fetch_readme", "model_card_data", "refresh_card_data", "write_model_card"]
