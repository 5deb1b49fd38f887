"""hf_ttmoe: tensor-train LoRA experts, sparse routing over them, and dense MoE-LoRA, on Hugging Face transformers."""

from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from . import hub, io, pipelines, tt
from ._version import __version__
from .adapter import DEFAULT_BASE_MODEL, AdapterConfig, AdapterModel, load_base_model, load_tokenizer
from .data import EMBEDDED_TASKS, load_files, load_task, mixed_tasks, tokenize_task
from .hub import push_experts
from .moe_lora import DenseMoELoRAConfig, DenseMoELoRALinear, DenseMoELoRAModel, DenseMoELoRAOutput
from .saved_model import SavedModel
from .ttlora import TTLoRAConfig, TTLoRALinear, TTLoRAModel, create_riemannian_optimizer
from .ttlora_moe import Router, TTLoRAMoEConfig, TTLoRAMoEModel, TTLoRAMoEOutput

for _config, _model in (
    (TTLoRAConfig, TTLoRAModel),
    (DenseMoELoRAConfig, DenseMoELoRAModel),
    (TTLoRAMoEConfig, TTLoRAMoEModel),
):
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModel.register(_config, _model, exist_ok=True)
    # all three classify sequences; pipeline("text-classification", model=<dir or Hub id>) loads through this class
    AutoModelForSequenceClassification.register(_config, _model, exist_ok=True)
    # saved models carry no tokenizer files: AutoTokenizer returns the base model's (hf_ttmoe.pipelines)
    AutoTokenizer.register(_config, tokenizer_class=pipelines.BaseModelTokenizer, exist_ok=True)
pipelines.register_text_classification()

__all__ = [
    "DEFAULT_BASE_MODEL",
    "EMBEDDED_TASKS",
    "DenseMoELoRAConfig",
    "DenseMoELoRALinear",
    "DenseMoELoRAModel",
    "DenseMoELoRAOutput",
    "AdapterConfig",
    "AdapterModel",
    "Router",
    "SavedModel",
    "TTLoRAConfig",
    "TTLoRALinear",
    "TTLoRAMoEConfig",
    "TTLoRAMoEModel",
    "TTLoRAMoEOutput",
    "TTLoRAModel",
    "__version__",
    "create_riemannian_optimizer",
    "hub",
    "io",
    "load_base_model",
    "load_files",
    "load_task",
    "load_tokenizer",
    "mixed_tasks",
    "pipelines",
    "push_experts",
    "tokenize_task",
    "tt",
]
