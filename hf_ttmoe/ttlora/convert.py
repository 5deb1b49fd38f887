"""Import a PEFT LoRA adapter as a TT-LoRA expert (`TTLoRAModel.from_lora`): each `ΔW = scaling · B @ A` is fitted by
TT-SVD in the TT-LoRA layer's own layout, the head is copied, and the result composes into a MoE like any other expert.

Which modules are adapted comes from the adapter's weights, not from its `target_modules` (which may be a regex):
TT-LoRA's `target_modules` are their names (or their paths inside a layer where names are ambiguous) and
`layers_to_transform` their layer indices. A module that selection adds but the LoRA lacks keeps ΔW = 0, exactly.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import PreTrainedModel

from .. import tt
from ..adapter import load_base_model
from ..architectures import layer_index, path_in_layer
from .config import TTLoRAConfig
from .peft_lora import PEFT_TASK_TYPES, PeftLoRA, read_peft_lora

logger = logging.getLogger(__name__)


@dataclass
class ModuleFit:
    """How one LoRA module was imported.

    Args:
        lora_rank / lora_scaling: the LoRA's `r` and scaling (`alpha / r`, or `alpha / sqrt(r)` with rsLoRA).
        tt_ranks: the TT chain's full rank list; `in_modes` / `out_modes`: its layout.
        lora_params / tt_params: entries of A and B vs of the TT cores.
        rel_error: `‖ΔW_TT - ΔW_LoRA‖_F / ‖ΔW_LoRA‖_F` (0 for a ΔW of zero fitted exactly).
    """

    lora_rank: int
    lora_scaling: float
    in_modes: list[int]
    out_modes: list[int]
    tt_ranks: list[int]
    lora_params: int
    tt_params: int
    rel_error: float


@dataclass
class LoRAImportReport:
    """What `TTLoRAModel.from_lora` imported (the model's `from_lora_report`).

    Args:
        source: the adapter's directory or Hub id; `revision`: the commit it was pulled at (None for a directory).
        modules: per adapted module path (as in the base model), its `ModuleFit`.
        heads: head weights loaded from the adapter (`model.<head>.<param>` names).
        zero_modules: modules TT-LoRA adapts that the LoRA does not (their ΔW is 0).
    """

    source: str
    revision: str | None
    modules: dict[str, ModuleFit] = field(default_factory=dict)
    heads: list[str] = field(default_factory=list)
    zero_modules: list[str] = field(default_factory=list)

    @property
    def lora_params(self) -> int:
        return sum(f.lora_params for f in self.modules.values())

    @property
    def tt_params(self) -> int:
        return sum(f.tt_params for f in self.modules.values())

    @property
    def max_rel_error(self) -> float:
        return max((f.rel_error for f in self.modules.values()), default=0.0)

    @property
    def mean_rel_error(self) -> float:
        return sum(f.rel_error for f in self.modules.values()) / max(len(self.modules), 1)

    def summary(self) -> str:
        at = f"@{self.revision[:10]}" if self.revision else ""
        zero = f"; ΔW = 0 in {len(self.zero_modules)} modules the LoRA does not adapt" if self.zero_modules else ""
        return (f"PEFT LoRA {self.source}{at} imported as TT-LoRA: {len(self.modules)} modules, {self.tt_params:,} TT "
                f"parameters vs {self.lora_params:,} LoRA ({self.tt_params / max(self.lora_params, 1):.1%}); relative "
                f"ΔW error mean {self.mean_rel_error:.2e}, max {self.max_rel_error:.2e}; heads {self.heads}{zero}")


# ----- building the expert -----


def _head_module(name: str, entries: list[str]) -> str:
    """The head module a head weight belongs to: the shortest prefix of its path that PEFT's `modules_to_save`
    names (PEFT matches them by the end of the path), else the weight's own module."""
    parts = name.split(".")[:-1]
    for i in range(1, len(parts) + 1):
        prefix = ".".join(parts[:i])
        if any(prefix == e or prefix.endswith(f".{e}") for e in entries):
            return prefix
    return ".".join(parts)


def _targets(modules: list[str], base: nn.Module) -> tuple[list[str], list[int] | None]:
    """`target_modules` and `layers_to_transform` that select these module paths of `base`: their last names when
    those select no other linear of the same layers, else their paths inside a layer ("attention.self.query"); every
    layer of `base` → None."""
    layers = sorted({i for i in map(layer_index, modules) if i is not None})
    names, paths = sorted({m.rsplit(".", 1)[-1] for m in modules}), sorted({path_in_layer(m) for m in modules})
    same_names = {path_in_layer(n) for n, m in base.named_modules() if isinstance(m, nn.Linear)
                  and n.rsplit(".", 1)[-1] in names and (not layers or layer_index(n) in layers)}
    all_layers = sorted({i for i in map(layer_index, dict(base.named_modules())) if i is not None})
    return (names if same_names <= set(paths) else paths), (None if layers == all_layers else layers or None)


def _num_labels(lora: PeftLoRA) -> int | None:
    """The head's number of labels: the smallest output size among the head's 2-D weights (the last projection)."""
    sizes = [t.shape[0] for t in lora.heads.values() if t.dim() == 2]
    return min(sizes) if sizes else None


def _resolve(module: str, base: nn.Module) -> str | None:
    """The module's path in `base` (PEFT on a bare encoder names "encoder.…" where ours has "bert.encoder.…")."""
    names = dict(base.named_modules())
    for candidate in (module, f"{getattr(base, 'base_model_prefix', '')}.{module}"):
        if candidate in names:
            return candidate
    return None


def _check_against_base(lora: PeftLoRA, base: PreTrainedModel) -> dict[str, str]:
    """Each LoRA module must be an `nn.Linear` of the base with A's input and B's output sizes. Returns the LoRA's
    module paths -> the base's."""
    where = f"base model {lora.config.get('base_model_name_or_path') or base.config.name_or_path!r}"
    resolved = {}
    for module, (a, b) in lora.factors.items():
        path = _resolve(module, base)
        if path is None:
            raise ValueError(f"{lora.owner} adapts {module}, which {where} ({type(base).__name__}) does not have: "
                             "the adapter was trained on another architecture.")
        layer = base.get_submodule(path)
        if not isinstance(layer, nn.Linear):
            raise ValueError(f"{lora.owner} adapts {module}, a {type(layer).__name__}: only nn.Linear targets can "
                             "be imported (no embeddings, convolutions or Conv1D).")
        if (b.shape[0], a.shape[1]) != (layer.out_features, layer.in_features):
            raise ValueError(f"{lora.owner}: {module} has ΔW of shape {(b.shape[0], a.shape[1])} (lora_B "
                             f"{tuple(b.shape)} @ lora_A {tuple(a.shape)}), but in {where} it is a "
                             f"{layer.out_features}x{layer.in_features} linear: the adapter was trained on another "
                             "architecture.")
        resolved[module] = path
    return resolved


def from_lora(
    cls,
    path_or_hub_id: str | os.PathLike,
    tt_rank: int | list[int] = 5,
    revision: str | None = None,
    base_model: PreTrainedModel | None = None,
    token: str | bool | None = None,
    cache_dir: str | None = None,
    local_files_only: bool = False,
    **config_kwargs,
):
    """Build a `cls` (TT-LoRA model) whose every layer's ΔW is the TT-SVD of the PEFT LoRA's ΔW at `tt_rank`.

    See `TTLoRAModel.from_lora`. `config_kwargs` go to `TTLoRAConfig` (`alpha`, `task`, `id2label`, `num_labels`,
    `forward_impl`, `tt_shapes`, ...); what the adapter decides (base model, targets, layers, heads) cannot be given.
    """
    decided = {"base_model_name_or_path", "base_model_revision", "target_modules", "layers_to_transform",
               "modules_to_save", "task_type"} & set(config_kwargs)
    if decided:
        raise TypeError(f"from_lora() takes {sorted(decided)} from the adapter's own config; do not pass them.")
    if config_kwargs.get("layout", "chain") != "chain":
        raise ValueError(f"from_lora(layout={config_kwargs['layout']!r}): importing fits each layer's ΔW on its own "
                         "(TT-SVD), which gives the 'chain' layout; a 'stacked' expert's layers share cores that no "
                         "per-layer fit can give. Import with layout='chain'.")
    lora = read_peft_lora(path_or_hub_id, revision, token=token, cache_dir=cache_dir,
                          local_files_only=local_files_only)
    c = lora.config
    base_name = c.get("base_model_name_or_path") or (base_model.config.name_or_path if base_model else None)
    if not base_name:
        raise ValueError(f"{lora.owner}: adapter_config.json names no base_model_name_or_path; pass base_model=.")
    task_type = PEFT_TASK_TYPES[c.get("task_type")]
    entries = list(c.get("modules_to_save") or [])
    head_modules = sorted({_head_module(name, entries) for name in lora.heads})
    if task_type == "seq_cls" and "num_labels" not in config_kwargs and "id2label" not in config_kwargs:
        num_labels = _num_labels(lora) or (base_model.config.num_labels if base_model is not None else None)
        if num_labels is None:
            raise ValueError(f"{lora.owner} saves no classification head: pass num_labels= (or base_model=).")
        config_kwargs["num_labels"] = num_labels
    config_kwargs.setdefault("dropout", float(c.get("lora_dropout") or 0.0))
    config = TTLoRAConfig(base_model_name_or_path=base_name, base_model_revision=c.get("revision"),
                          task_type=task_type, tt_rank=tt_rank, modules_to_save=head_modules or None, **config_kwargs)
    base = load_base_model(config) if base_model is None else base_model
    resolved = _check_against_base(lora, base)
    config.target_modules, config.layers_to_transform = _targets(list(resolved.values()), base)
    model = cls(config, base_model=base)
    report = LoRAImportReport(lora.source, lora.revision)
    _load_heads(model, lora, report)
    _fit_layers(model, lora, resolved, report)
    model.from_lora_report = report
    logger.info(report.summary())
    return model.eval()


def _load_heads(model, lora: PeftLoRA, report: LoRAImportReport) -> None:
    params = dict(model.named_parameters())
    for name, tensor in sorted(lora.heads.items()):
        ours = next((f"model.{p}" for p in (name, f"{model.model.base_model_prefix}.{name}")
                     if f"model.{p}" in params), None)
        if ours is None or not model.is_saved_key(ours):
            raise ValueError(f"{lora.owner} saves {name}, which {type(model.model).__name__} has no head weight "
                             f"for (its heads: {model.config.modules_to_save}).")
        if params[ours].shape != tensor.shape:
            raise ValueError(f"{lora.owner}: head weight {name} has shape {tuple(tensor.shape)}, but the model's "
                             f"{ours} has {tuple(params[ours].shape)} (pass num_labels= to match the head).")
        with torch.no_grad():
            params[ours].copy_(tensor)
        report.heads.append(ours)
    if model.config.task_type == "seq_cls" and not lora.heads:
        logger.warning(
            "%s saves no classification head: the expert's head %s is as the base model loads it (new and "
            "untrained unless the base checkpoint carries one).", lora.owner, model.config.modules_to_save)


@torch.no_grad()
def _fit_layers(model, lora: PeftLoRA, resolved: dict[str, str], report: LoRAImportReport) -> None:
    """Each layer's cores = TT-SVD of `ΔW / layer.scaling` at the layer's ranks, so `layer.delta_weight() ≈ ΔW`."""
    ours_to_lora = {path: module for module, path in resolved.items()}
    for path, layer in model.model.named_modules():
        if not isinstance(layer, model.adapter_layer_cls):
            continue
        module = ours_to_lora.get(path)
        if module is None:  # selected by target_modules x layers_to_transform, not adapted by the LoRA: its
            report.zero_modules.append(path)  # initial cores give ΔW = 0 exactly and still train
            continue
        delta = lora.delta_weight(module)  # (out, in), float64
        cores = tt.tt_svd(delta / layer.scaling, layer.in_modes, layer.out_modes, layer.ranks)
        for param, core in zip(layer.ttlora_cores, cores, strict=True):
            param.copy_(core.to(param.dtype))
        fitted = layer.delta_weight().double().cpu()
        norm = delta.norm().item()
        a, b = lora.factors[module]
        report.modules[path] = ModuleFit(
            lora_rank=a.shape[0], lora_scaling=lora.scaling(module), in_modes=layer.in_modes,
            out_modes=layer.out_modes, tt_ranks=layer.ranks, lora_params=a.numel() + b.numel(),
            tt_params=sum(c.numel() for c in layer.ttlora_cores),
            rel_error=(fitted - delta).norm().item() / norm if norm > 0 else fitted.norm().item(),
        )
    if missing := sorted(set(resolved.values()) - set(report.modules)):
        raise ValueError(f"{lora.owner} adapts {missing}, which TT-LoRA's target_modules={model.config.target_modules}"
                         f", layers_to_transform={model.config.layers_to_transform} did not select.")


__all__ = ["LoRAImportReport", "ModuleFit", "from_lora"]
