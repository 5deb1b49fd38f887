"""`transformers.pipeline` for hf_ttmoe models: after `import hf_ttmoe`,

    ```python
    from transformers import pipeline

    pipeline("text-classification", model="experts/sst2")("a moving film")
    # [{'label': 'positive', 'score': 0.93}]
    pipeline("text-classification", model="org/ttlora-moe-4tasks")(["a moving film", "Stocks fell"], batch_size=8)
    # [{'label': 'positive', 'score': 0.93, 'task': 'sst2'}, {'label': 'business', 'score': 0.88, 'task': 'bbc'}]
    ```

Three pieces of the ecosystem's own machinery make a bare path or Hub id work; `hf_ttmoe/__init__.py` registers them:

- `AutoModelForSequenceClassification` maps our configs to our models, which is how `pipeline()` loads a model.
- `AutoTokenizer` maps our configs to `BaseModelTokenizer`: an expert or MoE repo carries no tokenizer files, and
  loading "its" tokenizer returns the base model's (`hf_ttmoe.load_tokenizer`: the Hub id the config names, or the
  embedded offline copy of it). No tokenizer is copied into every expert repo, and a repo cannot drift from its base.
- The "text-classification" task's implementation becomes `TextClassificationDispatcher`, which builds a plain
  `TextClassificationPipeline` for every other model (unchanged behaviour) and ours for hf_ttmoe models: a routed
  MoE's rows each carry the task of the expert they chose (`TTLoRAMoEClassificationPipeline`).
"""

from __future__ import annotations

import logging

import numpy as np
from transformers import AutoConfig, TextClassificationPipeline
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.pipelines.text_classification import ClassificationFunction, sigmoid, softmax

from .adapter import load_tokenizer
from .moe_lora import DenseMoELoRAConfig
from .ttlora import TTLoRAConfig
from .ttlora_moe import TTLoRAMoEConfig

TASK = "text-classification"
HUB_KWARGS = ("revision", "token", "cache_dir", "local_files_only")


class BaseModelTokenizer:
    """What `AutoTokenizer` resolves for an hf_ttmoe config: loading it returns the base model's own tokenizer.

    `AutoTokenizer.from_pretrained(<expert or MoE dir / Hub id>)` finds no tokenizer files there, reads the config and,
    through the registered mapping, calls `BaseModelTokenizer.from_pretrained`, which reads the config again (with the
    same revision / token / cache) and returns `hf_ttmoe.load_tokenizer(config)`: the tokenizer of
    `config.base_model_name_or_path` (or of its embedded offline copy), an instance of the base's tokenizer class.
    """

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *inputs, **kwargs):
        hub = {k: kwargs[k] for k in HUB_KWARGS if kwargs.get(k) is not None}
        config = AutoConfig.from_pretrained(pretrained_model_name_or_path, **hub)
        if not getattr(config, "base_model_name_or_path", None):
            raise ValueError(f"{pretrained_model_name_or_path!r} is a {config.model_type!r} model whose config names "
                             "no base model (base_model_name_or_path), so there is no tokenizer to load.")
        return load_tokenizer(config)


class AdapterClassificationPipeline(TextClassificationPipeline):
    """`TextClassificationPipeline` for an hf_ttmoe sequence classifier (a TT-LoRA expert, a dense MoE-LoRA model).

    The parent runs it unchanged (labels from the model's config); only its model check differs: the parent checks
    the class name against transformers' own model list, which classes registered with
    `AutoModelForSequenceClassification` are not in, so it would log an error for a model that works. Here the check
    is that the model classifies sequences (`task_type="seq_cls"`).
    """

    def check_model_type(self, supported_models):
        task_type = getattr(self.model.config, "task_type", "seq_cls")
        if task_type != "seq_cls":
            raise ValueError(f"{type(self.model).__name__} {self.model.config.name_or_path!r} has task_type="
                             f"{task_type!r}; the {TASK!r} pipeline needs a sequence classifier (task_type="
                             "'seq_cls').")


class TTLoRAMoEClassificationPipeline(AdapterClassificationPipeline):
    """Text classification with a routed TT-LoRA MoE: each row is routed to one expert and classified in that expert's
    label space; each result is `{"label": label name in the chosen task, "score": ..., "task": chosen task}`.

    The label is the one `moe.decode(moe(**batch))` gives; `score` is the softmax over the chosen task's labels only
    (`function_to_apply` and `top_k` work as in the parent, within that task). With `batch_size=n`, n rows, whichever
    experts they pick, cost one forward of the MoE (its mixed-expert single pass).
    """

    def postprocess(self, model_outputs, function_to_apply=None, top_k=1, _legacy=True):
        expert = int(model_outputs["expert_index"][0])
        task, names = self.model.tasks[expert], self.model.label_names[expert]
        logits = model_outputs["logits"][0, : len(names)].float().numpy()  # (C_task,): the -inf padding cut off
        if function_to_apply is None:
            function_to_apply = ClassificationFunction.SIGMOID if len(names) == 1 else ClassificationFunction.SOFTMAX
        if function_to_apply == ClassificationFunction.SIGMOID:
            scores = sigmoid(logits)
        elif function_to_apply == ClassificationFunction.SOFTMAX:
            scores = softmax(logits)
        elif function_to_apply == ClassificationFunction.NONE:
            scores = logits
        else:
            raise ValueError(f"Unrecognized `function_to_apply` argument: {function_to_apply}")
        if top_k == 1 and _legacy:
            best = int(np.argmax(scores))
            return {"label": names[best], "score": scores[best].item(), "task": task}
        results = [{"label": name, "score": score.item(), "task": task} for name, score in zip(names, scores)]
        if not _legacy:
            results.sort(key=lambda r: r["score"], reverse=True)
            if top_k is not None:
                results = results[:top_k]
        return results


# model_type -> the pipeline class `TextClassificationDispatcher` builds for it
CLASSIFICATION_PIPELINES = {
    TTLoRAConfig.model_type: AdapterClassificationPipeline,
    DenseMoELoRAConfig.model_type: AdapterClassificationPipeline,
    TTLoRAMoEConfig.model_type: TTLoRAMoEClassificationPipeline,
}


class TextClassificationDispatcher(TextClassificationPipeline):
    """The "text-classification" implementation once hf_ttmoe is imported. `pipeline()` picks a task's class before it
    loads the model, so the class cannot depend on the model there; this one builds, for the model it is given, the
    pipeline of `CLASSIFICATION_PIPELINES[model.config.model_type]`, and a plain `TextClassificationPipeline` for any
    other model (exactly what `pipeline()` built before: no instance of this class is ever made)."""

    def __new__(cls, *args, **kwargs):
        model = kwargs.get("model", args[0] if args else None)
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        return CLASSIFICATION_PIPELINES.get(model_type, TextClassificationPipeline)(*args, **kwargs)


def register_text_classification() -> None:
    """Make `TextClassificationDispatcher` the "text-classification" implementation, keeping the task's model classes
    and default model. Called once, by `hf_ttmoe/__init__.py`."""
    entry = PIPELINE_REGISTRY.supported_tasks[TASK]
    if entry["impl"] is TextClassificationDispatcher:
        return
    registry_logger = logging.getLogger("transformers.pipelines.base")
    level = registry_logger.level
    registry_logger.setLevel(logging.ERROR)  # "already registered. Overwriting...": overwriting is the point
    try:
        PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=TextClassificationDispatcher, pt_model=entry["pt"],
                                            default=entry.get("default"), type=entry.get("type"))
    finally:
        registry_logger.setLevel(level)


__all__ = ["AdapterClassificationPipeline", "BaseModelTokenizer", "CLASSIFICATION_PIPELINES",
           "TTLoRAMoEClassificationPipeline", "TextClassificationDispatcher", "register_text_classification"]
