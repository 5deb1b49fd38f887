"""TT-LoRA MoE: frozen TT-LoRA experts composed on one base model, and a sparse top-1 router that picks one per input.

The experts' factors are precomputed and stacked, so a batch whose rows use different experts runs in one pass
(`MixedTTLoRALinear`). The router reads the base model's hidden state after layer `router_layer`, captured by a
forward hook: when no expert adapts a layer below it (always so for `router_layer=0`, the embeddings), routing costs
nothing extra; otherwise the prefix is run once without adapters to route, then the model runs with the experts.
"""

from __future__ import annotations

import numbers
import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from hub_cards import RouterCardData

from ..adapter import base_signature, load_base_model
from ..architectures import find_layers, is_encoder, layer_index
from ..io import IncompatibleExpertError
from ..losses import router_loss
from ..saved_model import SavedModel, is_partitioned
from ..ttlora import TTLoRAConfig
from ..ttlora.hub import push_expert_dir
from .config import TTLoRAMoEConfig
from .experts import Expert, check_compatible, load_experts, stacked_factors
from .gate import Router
from .layer import MixedHead, MixedTTLoRALinear


class _StopForward(Exception):
    """Raised by the routing hook when only the router's features are needed."""


@dataclass
class TTLoRAMoEOutput(ModelOutput):
    """Outputs of `TTLoRAMoEModel`.

    Args:
        loss: router cross-entropy against `task_ids` (+ weighted balance loss), only when `task_ids` are given.
        logits: `(B, C_max)` per-row logits in that row's task label space, `-inf` beyond the task's labels
            (`None` for a router-only training forward).
        router_logits: `(B, E)`.
        expert_index: `(B,)` the expert (= task) each row used.
        predictions: `(B,)` label id within the chosen task.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    router_logits: torch.Tensor | None = None
    expert_index: torch.Tensor | None = None
    predictions: torch.Tensor | None = None


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`(B, T, H)`, `(B, T)` weights -> `(B, H)`: the mean over weighted tokens, zeros where a row has none."""
    return (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)


def resolve_pooling(config: TTLoRAMoEConfig, base_config, encoder: bool) -> str:
    """The router's pooling: `config.pooling`, with "auto" resolved (and written back to the config, so a saved router
    keeps it) and "segments" refused on a base without token types."""
    types = getattr(base_config, "type_vocab_size", None) or 0
    by_architecture = "mean" if encoder else "last"
    if config.pooling == "auto":
        config.pooling = "segments" if types >= 2 else by_architecture
    if config.pooling == "segments" and types < 2:
        raise ValueError(f"pooling='segments' pools each input segment (token_type_ids 0 and 1) on its own, but the "
                         f"base model has type_vocab_size={types}: use 'mean', 'last' or 'auto'.")
    return config.pooling or by_architecture


class TTLoRAMoEModel(SavedModel):
    """Frozen TT-LoRA experts on one base model, with a trainable top-1 router (parameters prefixed `router_`).

    Example:
        ```python
        moe = TTLoRAMoEModel.from_experts(["experts/sst2", "experts/bbc"], router_layer=0)
        out = moe(**batch)                  # no task id: each row is routed to one expert
        moe.decode(out)                     # [(task, label name), ...]
        moe.save_pretrained("moe/")         # router weights + references to the experts
        ```
    """

    config_class = TTLoRAMoEConfig
    adapter_prefix = "router_"
    card_data_class = RouterCardData
    saved_name = "Router"

    def __init__(self, config: TTLoRAMoEConfig, base_model: PreTrainedModel | None = None,
                 experts: list[Expert] | None = None, root: str | None = None, **hub_kwargs):
        super().__init__(config)
        if experts is None:  # local directories, or pulled from the Hub at their pinned commits, in parallel
            experts = load_experts(config.experts, root, **hub_kwargs)
        check_compatible(experts)
        first = experts[0].config
        self.expert_sources = experts  # where each expert came from (pushing and saving use it)
        config.experts = [e.reference() for e in experts]
        config.base_model_name_or_path = config.base_model_name_or_path or first.base_model_name_or_path
        if config.base_model_signature not in (None, first.base_model_signature):
            raise IncompatibleExpertError(
                f"Expert {experts[0].repo_id!r} has base {first.base_model_signature}, but this MoE was composed on "
                f"{config.base_model_signature}.")
        config.base_model_signature = first.base_model_signature
        config.target_modules, config.pad_token_id = first.target_modules, first.pad_token_id
        config.gguf_file = first.gguf_file
        self.tasks = [e.task for e in experts]
        self.label_names = [[e.config.id2label[i] for i in range(e.num_labels)] for e in experts]
        if base_model is None:
            base_config = TTLoRAConfig.from_dict(first.to_dict())
            base_config.num_labels = max(e.num_labels for e in experts)
            base_model = load_base_model(base_config)
        elif any(is_partitioned(p) for p in base_model.parameters()):
            raise ValueError("Cannot compose experts onto a DeepSpeed ZeRO-3-partitioned base model: compose on a "
                             "whole model (e.g. before deepspeed.initialize), then train the router under ZeRO.")
        elif base_signature(base_model.config) != first.base_model_signature:
            raise IncompatibleExpertError(
                f"base_model has architecture {base_signature(base_model.config)}, but the experts (e.g. "
                f"{experts[0].repo_id!r}) were trained on {first.base_model_signature}.")
        self.model = base_model.requires_grad_(False)
        self.num_hidden_layers = len(find_layers(base_model)[1])
        if config.router_layer > self.num_hidden_layers:
            raise ValueError(f"router_layer={config.router_layer} exceeds the base model's "
                             f"{self.num_hidden_layers} layers (valid: 0..{self.num_hidden_layers}).")
        self._attach(experts)
        self._given_away = False  # set when add_expert / remove_expert hand the base to a new model
        self.pooling = resolve_pooling(config, base_model.config, is_encoder(first.base_model_signature["model_type"]))
        features = base_model.config.hidden_size * (2 if self.pooling == "segments" else 1)
        self.router = Router(features, len(experts), config.router_type,
                             hidden_size=config.router_hidden_size, noisy_gating=config.noisy_gating)
        adapted = [layer_index(n) for n, _ in self.mixed_layers()]
        # layers below router_layer that experts adapt must run again with the experts after routing
        self.rerun_prefix = any(i is not None and i < config.router_layer for i in adapted)
        self._routing: dict = {}
        self.post_init()

    # ----- construction -----

    def _attach(self, experts: list[Expert]) -> None:
        """Swap the experts' mixed layers and head into the base model and hook the router's input module."""
        self._inject(experts)
        self._hook_router_input()

    def _hook_router_input(self) -> None:
        embeddings, layers = find_layers(self.model)
        k = self.config.router_layer
        self._hook = (embeddings if k == 0 else layers[k - 1]).register_forward_hook(self._routing_hook)

    def _set_module(self, name: str, module: nn.Module) -> None:
        """Put `module` at path `name` of the base model."""
        self.model.set_submodule(name, module)

    def _inject(self, experts: list[Expert]) -> None:
        """Every expert's factors are stacked (which checks they fit) before the first layer is swapped."""
        swaps = []
        for module in experts[0].modules():
            path = module.removeprefix("model.")
            linear = self.model.get_submodule(path)
            u, v = stacked_factors(experts, module, linear.in_features, linear.out_features)
            swaps.append((path, MixedTTLoRALinear(linear, u.to(linear.weight.device), v.to(linear.weight.device))))
        for path, layer in swaps:
            self._set_module(path, layer)
        head_name = experts[0].config.modules_to_save[0]
        head = self.model.get_submodule(head_name)
        c_max, hidden = max(e.num_labels for e in experts), head.in_features
        weight = torch.zeros(len(experts), c_max, hidden)
        bias = torch.zeros(len(experts), c_max)
        for i, e in enumerate(experts):
            weight[i, : e.num_labels] = e.tensors[f"model.{head_name}.weight"]
            if f"model.{head_name}.bias" in e.tensors:
                bias[i, : e.num_labels] = e.tensors[f"model.{head_name}.bias"]
        num_labels = torch.tensor([e.num_labels for e in experts])
        to = {"dtype": head.weight.dtype, "device": head.weight.device}
        self._set_module(head_name, MixedHead(weight.to(**to), bias.to(**to), num_labels.to(head.weight.device)))
        self._original_head = (head_name, head)

    def init_weights(self):
        """The base is loaded, the experts are frozen tensors and the router initializes itself: nothing to do."""

    def mixed_layers(self) -> list[tuple[str, nn.Module]]:
        return [(n, m) for n, m in self.model.named_modules() if isinstance(m, (MixedTTLoRALinear, MixedHead))]

    def _set_experts(self, index: torch.Tensor | None) -> None:
        for _, layer in self.mixed_layers():
            layer.expert_index = index

    # ----- routing -----

    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor, token_types: torch.Tensor | None) -> torch.Tensor:
        """`(B, T, H)` -> `(B, H)`: mean over non-padding tokens, or the last non-padding token; "segments": `(B, 2H)`,
        the mean over each segment's non-padding tokens (zeros for a segment a row lacks)."""
        mask = mask.to(hidden.dtype)
        if self.pooling == "segments":
            second = mask * (token_types == 1).to(hidden.dtype) if token_types is not None else torch.zeros_like(mask)
            return torch.cat([masked_mean(hidden, mask - second), masked_mean(hidden, second)], -1)
        if self.pooling == "mean":
            return masked_mean(hidden, mask)
        last = (mask * torch.arange(mask.shape[1], device=mask.device)).argmax(1)  # (B,) last real position
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]

    def _routing_hook(self, module, args, output):
        state = self._routing
        if not state.get("active"):
            return
        hidden = output[0] if isinstance(output, tuple) else output
        features = self._pool(hidden, state["mask"], state["token_types"])
        state["features"] = features
        state["active"] = False
        if state.get("stop"):
            raise _StopForward
        if not state.get("fixed"):
            state["router_logits"] = self.router(features)
            self._set_experts(state["router_logits"].argmax(-1))

    def _run(self, inputs: dict, mask: torch.Tensor, *, stop: bool = False, fixed: bool = False):
        self._routing = {"active": True, "mask": mask, "token_types": inputs.get("token_type_ids"), "stop": stop,
                         "fixed": fixed}
        try:
            return self.model(**inputs)
        except _StopForward:
            return None
        finally:
            self._routing["active"] = False

    def _check_current(self) -> None:
        """Refuse every call once `add_expert` / `remove_expert` gave this model's base to a new model."""
        if self._given_away:
            raise RuntimeError(
                "This TTLoRAMoEModel gave its base model to the model add_expert() / remove_expert() returned (the "
                "base is shared, not copied, and now carries that model's expert layers): use the returned model.")

    def _expert_ids(self, name: str, value, batch: int, device: torch.device) -> torch.Tensor:
        """`value` (a tensor or list of ints, one per row) as a `(B,)` long tensor; anything else raises an error
        naming `name` and what is valid."""
        num = len(self.tasks)
        valid = f"one expert id per row: {batch} ints in 0..{num - 1}, as a tensor or a list"
        if isinstance(value, (list, tuple)):
            if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value):
                raise TypeError(f"{name}={value!r} must be {valid}.")
            value = torch.tensor(value, dtype=torch.long)
        if not isinstance(value, torch.Tensor) or value.dtype.is_floating_point or value.dtype.is_complex \
                or value.dtype == torch.bool:
            raise TypeError(f"{name} must be {valid}; got {type(value).__name__} {getattr(value, 'dtype', '')}.")
        if value.dim() != 1 or value.shape[0] != batch:
            raise ValueError(f"{name} has shape {tuple(value.shape)}, not ({batch},): it must be {valid}.")
        bad = value[(value < 0) | (value >= num)]
        if bad.numel():
            raise ValueError(f"{name} holds {bad.unique().tolist()}, outside 0..{num - 1}: there are {num} experts "
                             f"{self.tasks} (no negative ids: -1 does not mean the last expert).")
        return value.to(device=device, dtype=torch.long)

    def router_features(self, input_ids=None, attention_mask=None, **kwargs) -> torch.Tensor:
        """Pooled base hidden states after `router_layer`, `(B, H)`; runs only the prefix, adapters off."""
        self._check_current()
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        self._set_experts(None)
        self._run({"input_ids": input_ids, "attention_mask": mask, **kwargs}, mask, stop=True)
        return self._routing["features"]

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, task_ids=None, expert_index=None,
                **kwargs) -> TTLoRAMoEOutput:
        """Route each row to one expert (or use `expert_index` given by hand) and classify it with that expert.

        With `task_ids` (the row's true expert) the router's cross-entropy is the loss; a training forward with
        `task_ids` only runs the prefix the router needs. `expert_index` and `task_ids` hold one id in
        `0..num_experts - 1` per row (a tensor or a list); anything else raises an error naming them.
        """
        self._check_current()
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        if expert_index is not None:
            expert_index = self._expert_ids("expert_index", expert_index, mask.shape[0], mask.device)
        if task_ids is not None:
            task_ids = self._expert_ids("task_ids", task_ids, mask.shape[0], mask.device)
        inputs = {"input_ids": input_ids, "attention_mask": mask, **kwargs}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        router_only = self.training and task_ids is not None
        router_logits = None
        if expert_index is not None:  # the right expert given by hand (the oracle)
            self._set_experts(expert_index)
            out = self._run(inputs, mask, fixed=True)
        elif self.rerun_prefix or router_only:
            self._set_experts(None)
            self._run(inputs, mask, stop=True)
            router_logits = self.router(self._routing["features"])
            expert_index = router_logits.argmax(-1)
            self._set_experts(expert_index)
            out = None if router_only else self._run(inputs, mask, fixed=True)
        else:  # no adapted layer below router_layer: route inside the single forward
            self._set_experts(None)
            out = self._run(inputs, mask)
            router_logits = self._routing["router_logits"]
            expert_index = router_logits.argmax(-1)
        self._set_experts(None)
        loss = None
        if task_ids is not None and router_logits is not None:
            loss = router_loss(router_logits, task_ids, self.config.router_aux_loss_coef)
        logits = None if out is None else out.logits
        return TTLoRAMoEOutput(loss=loss, logits=logits, router_logits=router_logits, expert_index=expert_index,
                               predictions=None if logits is None else logits.argmax(-1))

    def decode(self, outputs: TTLoRAMoEOutput) -> list[tuple[str, str]]:
        """Per row: (task chosen, predicted label name in that task)."""
        return [(self.tasks[e], self.label_names[e][p])
                for e, p in zip(outputs.expert_index.tolist(), outputs.predictions.tolist())]

    # ----- saving, loading, composing -----

    @classmethod
    def from_experts(cls, experts: list[str | dict], base_model: PreTrainedModel | None = None, **config_kwargs):
        """Compose saved TT-LoRA experts (directories or Hub ids) under a new, untrained router (`pooling` "auto"
        unless given: each segment pooled on its own where the base has token types)."""
        entries = [e if isinstance(e, dict) else {"repo_id": str(e)} for e in experts]
        config_kwargs.setdefault("pooling", "auto")
        return cls(TTLoRAMoEConfig(experts=entries, **config_kwargs), base_model=base_model)

    def is_saved_key(self, key: str) -> bool:
        """Only the router is trained and saved; the experts are referenced by the config."""
        return key.startswith(f"router.{self.adapter_prefix}")

    router_state_dict = SavedModel.saved_state_dict

    def config_to_save(self, save_directory) -> dict:
        """Local experts referenced by a path relative to `save_directory`, Hub experts by id and revision."""
        config = self.config.to_dict()
        config["experts"] = [{**e.reference(), "repo_id": os.path.relpath(os.path.abspath(e.path),
                                                                       os.path.abspath(save_directory))}
                             if e.local else e.reference() for e in self.expert_sources]
        return config

    @classmethod
    def _from_saved_config(cls, config, base_model, root, **hub_kwargs):
        """Every expert the config references is read (local paths relative to `root`) or pulled at its pinned commit,
        in parallel; `token`, `cache_dir`, `local_files_only` and `HF_HUB_OFFLINE=1` apply to each."""
        return cls(config, base_model=base_model, root=root, **hub_kwargs)

    def fill_card_data(self, data: RouterCardData) -> None:
        data.task_type = "seq_cls"
        data.experts = [{**e.reference(), "labels": e.label_names} for e in self.expert_sources]
        data.router_type, data.router_layer = self.config.router_type, self.config.router_layer
        data.pooling, data.noisy_gating = self.pooling, self.config.noisy_gating
        data.trainable_parameters = {"router": sum(p.numel() for p in self.router.parameters())}

    def push_dependencies(self, namespace: str | None, private: bool | None, token: str | bool | None,
                          repo_names: dict[str, str] | None = None) -> None:
        """Push the local experts to `namespace` (as `repo_names.get(task)` or their directory name) and re-point
        this model at the commits holding them; experts from the Hub are already pinned. A repo that already holds an
        expert's exact files is pinned as it is."""
        names, targets, pinned = repo_names or {}, {}, []
        dims = {f"model.{name}": layer.base_layer.in_features for name, layer in self.model.named_modules()
                if isinstance(layer, MixedTTLoRALinear)}
        for expert in self.expert_sources:
            if not expert.local:
                pinned.append(expert)
                continue
            if namespace is None:
                raise ValueError(f"Expert {expert.repo_id!r} is a local directory: give the router's repo_id as "
                                 "'namespace/name' (or push_experts(namespace=...)) so it can be pushed.")
            target = f"{namespace}/{names.get(expert.task) or Path(expert.path).resolve().name}"
            if target in targets:
                raise ValueError(f"Experts {targets[target]!r} and {expert.path!r} would both be pushed to "
                                 f"{target!r}; give them different names with repo_names={{task: name}}.")
            targets[target] = expert.path
            commit = push_expert_dir(expert.path, target, in_features=dims, private=private, token=token)
            pinned.append(replace(expert, repo_id=target, revision=commit, local=False))
        self.expert_sources = pinned
        self.config.experts = [e.reference() for e in pinned]

    def _clean_base(self) -> PreTrainedModel:
        """The base model with every expert layer, the mixed head and the routing hook taken out again."""
        self._hook.remove()
        for name, module in list(self.model.named_modules()):
            if isinstance(module, MixedTTLoRALinear):
                self._set_module(name, module.base_layer)
        self._set_module(*self._original_head)
        return self.model

    def _source_entries(self) -> list[dict]:
        """The experts' references, local directories as paths that resolve from anywhere."""
        return [{**e.reference(), "repo_id": os.path.abspath(e.path)} if e.local else e.reference()
                for e in self.expert_sources]

    def _recompose(self, entries: list[dict]) -> TTLoRAMoEModel:
        """A new MoE over `entries` on this model's base object (not a copy: memory stays one base). This model is
        then retired: its calls raise, since the base now carries the new model's layers. If composing fails, this
        model is put back as it was."""
        self._check_current()
        experts = load_experts(entries)  # read and checked before the base is touched
        check_compatible(experts)
        old = dict(zip(self.tasks, range(len(self.tasks))))
        old_router = self.router.state_dict()
        config = TTLoRAMoEConfig.from_dict({**self.config.to_dict(), "experts": entries})
        mixed = self.mixed_layers()  # put back if composing fails
        try:
            new = type(self)(config, base_model=self._clean_base(), experts=experts)
        except BaseException:
            self._clean_base()  # whatever the failed model swapped in
            for name, module in mixed:
                self._set_module(name, module)
            self._hook_router_input()
            raise
        self._given_away = True
        with torch.no_grad():  # keep what the router learned about experts it already had
            for task, i in zip(new.tasks, range(len(new.tasks))):
                if task in old and isinstance(new.router.router_net, nn.Linear):
                    new.router.router_net.weight[i] = old_router["router_net.weight"][old[task]]
                    new.router.router_net.bias[i] = old_router["router_net.bias"][old[task]]
        weight = next(self.router.parameters())  # the new router where this one was moved or cast to
        new.router.to(weight.device, weight.dtype)
        return new.train(self.training)

    def add_expert(self, expert: str | dict) -> TTLoRAMoEModel:
        """A new MoE with one more expert, in this model's train / eval mode, on the same base object (not a copy);
        retrain its router afterwards. Use the returned model: this one is retired (its calls raise)."""
        entry = expert if isinstance(expert, dict) else {"repo_id": str(expert)}
        return self._recompose(self._source_entries() + [entry])

    def remove_expert(self, task: str) -> TTLoRAMoEModel:
        """A new MoE without the expert of `task`, in this model's train / eval mode, on the same base object;
        retrain its router afterwards. Use the returned model: this one is retired (its calls raise)."""
        if task not in self.tasks:
            raise ValueError(f"No expert for task {task!r}; experts: {self.tasks}.")
        return self._recompose([e for e in self._source_entries() if e["task"] != task])


__all__ = ["TTLoRAMoEModel", "TTLoRAMoEOutput"]
