"""Card data: what a model card says, as dataclasses. User-set fields come first; the rest (`init=False`) are filled
automatically, from the model (`hf_ttmoe.hub.refresh_card_data`) and from training (`ModelCardCallback`).

Each dataclass is a `huggingface_hub.CardData`, so `ModelCard.from_template(card_data, template_path=...)` renders it:
`to_yaml()` gives the metadata the Hub reads (`library_name`, `base_model`, `tags`, `datasets`, `pipeline_tag`,
`model-index` with eval results when known) and `to_dict()` the template's variables.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from huggingface_hub import CardData, EvalResult, ModelCardData

LIBRARY_NAME = "hf_ttmoe"
PIPELINE_TAGS = {"seq_cls": "text-classification", "causal_lm": "text-generation"}
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
# Trainer metrics that describe speed, bookkeeping or a diagnostic (`compute_metrics`' share of the most predicted
# class), not the model's quality
_NOT_QUALITY = ("runtime", "samples_per_second", "steps_per_second", "epoch", "step", "predicted_class_share")


def is_hub_id(name: str | None) -> bool:
    """True for something that can name a Hub repo ("org/name", "gpt2") and is not a local path."""
    return bool(name) and _HUB_ID.match(name) is not None and not name.startswith(".") and not os.path.exists(name)


@dataclass
class TrainingFacts:
    """What the `Trainer` knew, filled by `trainer_callbacks.ModelCardCallback`.

    Args:
        datasets: names of the datasets trained on (Hub ids where known).
        eval_datasets: names of the datasets evaluated on.
        hyperparameters: the `TrainingArguments` that differ from their defaults.
        eval_metrics: the last evaluation's metrics, without the `eval_` prefix (`{"accuracy": 0.91, "loss": 0.3}`).
        global_step / epoch / train_loss: where training stopped.
        versions: library versions used for training.
    """

    datasets: list[str] = field(default_factory=list)
    eval_datasets: list[str] = field(default_factory=list)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    eval_metrics: dict[str, float] = field(default_factory=dict)
    global_step: int | None = None
    epoch: float | None = None
    train_loss: float | None = None
    versions: dict[str, str] = field(default_factory=dict)

    def quality_metrics(self) -> dict[str, float]:
        """Eval metrics that describe the model (speed and step counters dropped)."""
        return {k: v for k, v in self.eval_metrics.items()
                if isinstance(v, (int, float)) and not any(k.endswith(s) for s in _NOT_QUALITY)}


@dataclass
class HubCardData(CardData):
    """Fields every hf_ttmoe card has.

    Args:
        model_id: the repo id ("org/name"); set when pushing if left empty.
        model_name: the card's title (default: the repo name).
        language: language code(s) of the training data.
        license: license id (e.g. "apache-2.0").
        tags: extra tags (the library adds its own).
        datasets: Hub ids of the datasets the model was trained on (joined with those training recorded).
    """

    template_name: ClassVar[str] = ""
    method_tags: ClassVar[tuple[str, ...]] = ()

    model_id: str | None = None
    model_name: str | None = None
    language: str | list[str] | None = None
    license: str | None = None
    tags: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)

    base_model: str | None = field(default=None, init=False)
    base_model_revision: str | None = field(default=None, init=False)
    task: str | None = field(default=None, init=False)
    task_type: str = field(default="seq_cls", init=False)
    labels: list[str] = field(default_factory=list, init=False)
    trainable_parameters: dict[str, int] = field(default_factory=dict, init=False)
    library_version: str | None = field(default=None, init=False)
    hub_url: str = field(default="https://huggingface.co", init=False)
    training: TrainingFacts | None = field(default=None, init=False)

    @property
    def pipeline_tag(self) -> str | None:
        return PIPELINE_TAGS.get(self.task_type)

    @property
    def title(self) -> str:
        return self.model_name or (self.model_id or "").rsplit("/", 1)[-1] or f"{LIBRARY_NAME} model"

    def all_datasets(self) -> list[str]:
        training = self.training.datasets if self.training else []
        return list(dict.fromkeys([*self.datasets, *training]))

    def eval_results(self) -> list[EvalResult]:
        """One `EvalResult` per quality metric of the last evaluation (the Hub shows them as `model-index`)."""
        if self.training is None:
            return []
        metrics = self.training.quality_metrics()
        datasets = self.training.eval_datasets or self.all_datasets() or [self.task or "unknown"]
        return [EvalResult(task_type=self.pipeline_tag or "other", dataset_type=datasets[0],
                           dataset_name=self.task or datasets[0], metric_type=name, metric_value=float(value),
                           dataset_split="validation") for name, value in metrics.items()]

    def metadata(self) -> ModelCardData:
        """The YAML block the Hub reads."""
        results = self.eval_results()
        return ModelCardData(
            library_name=LIBRARY_NAME,
            base_model=self.base_model if is_hub_id(self.base_model) else None,
            license=self.license,
            language=self.language,
            tags=[LIBRARY_NAME, *self.method_tags, *self.tags],
            datasets=self.all_datasets() or None,
            pipeline_tag=self.pipeline_tag,
            model_name=self.title if results else None,
            eval_results=results or None,
        )

    def to_yaml(self, line_break=None, original_order: list[str] | None = None) -> str:
        return self.metadata().to_yaml(line_break=line_break, original_order=original_order)

    def to_dict(self) -> dict[str, Any]:
        """Template variables: every field, plus `title`, `pipeline_tag`, `datasets` and `eval_results` as shown."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values.update(title=self.title, pipeline_tag=self.pipeline_tag, datasets=self.all_datasets(),
                      eval_results=self.training.quality_metrics() if self.training else {})
        return values


@dataclass
class ExpertCardData(HubCardData):
    """Card of one TT-LoRA expert. Auto-filled: TT rank, alpha, adapted modules and their TT layouts, parameter
    counts (with the LoRA r=16 count for the same modules)."""

    template_name: ClassVar[str] = "expert_card.md"
    method_tags: ClassVar[tuple[str, ...]] = ("tt-lora", "tensor-train", "peft")

    tt_rank: int | list[int] | None = field(default=None, init=False)
    alpha: float | None = field(default=None, init=False)
    tt_layout: str | None = field(default=None, init=False)
    target_modules: list[str] = field(default_factory=list, init=False)
    layers: list[int] | None = field(default=None, init=False)
    tt_layouts: list[dict] = field(default_factory=list, init=False)
    lora_r16_parameters: int | None = field(default=None, init=False)


@dataclass
class MoELoRACardData(HubCardData):
    """Card of a dense MoE-LoRA model. Auto-filled: experts per linear, their rank and alpha, gate and balance loss."""

    template_name: ClassVar[str] = "moe_lora_card.md"
    method_tags: ClassVar[tuple[str, ...]] = ("moe-lora", "mixture-of-experts", "lora", "peft")

    num_experts: int | None = field(default=None, init=False)
    lora_rank: int | None = field(default=None, init=False)
    lora_alpha: float | None = field(default=None, init=False)
    num_experts_per_tok: int | None = field(default=None, init=False)
    router_aux_loss_coef: float | None = field(default=None, init=False)
    target_modules: list[str] = field(default_factory=list, init=False)
    layers: list[int] | None = field(default=None, init=False)
    adapted_linears: int | None = field(default=None, init=False)


@dataclass
class RouterCardData(HubCardData):
    """Card of a TT-LoRA MoE router. Auto-filled: each expert (`{repo_id, revision, task, labels, url}`, linked at
    its pinned revision), router type, layer and pooling."""

    template_name: ClassVar[str] = "router_card.md"
    method_tags: ClassVar[tuple[str, ...]] = ("tt-lora", "mixture-of-experts", "router")

    experts: list[dict] = field(default_factory=list, init=False)
    router_type: str | None = field(default=None, init=False)
    router_layer: int | None = field(default=None, init=False)
    pooling: str | None = field(default=None, init=False)
    noisy_gating: bool | None = field(default=None, init=False)

    def all_datasets(self) -> list[str]:
        expert_datasets = [d for e in self.experts for d in e.get("datasets", [])]
        return list(dict.fromkeys([*super().all_datasets(), *expert_datasets]))


__all__ = ["ExpertCardData", "HubCardData", "LIBRARY_NAME", "MoELoRACardData", "RouterCardData", "TrainingFacts",
           "is_hub_id"]
