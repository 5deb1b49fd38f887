"""Fills a model's card with what training knew, and keeps `README.md` in the output directory current for pushes."""

from __future__ import annotations

import dataclasses
import enum
import logging
import os
from pathlib import Path

import torch
import transformers
from huggingface_hub import HfApi
from transformers import TrainerCallback, TrainingArguments

from hf_ttmoe import SavedModel, __version__
from hf_ttmoe.io import fetch_readme, write_model_card
from hub_cards import TrainingFacts

logger = logging.getLogger(__name__)

# arguments that say where and how a run is stored or reported, not how the model was trained
_NOT_HYPERPARAMETERS = {
    "output_dir", "overwrite_output_dir", "logging_dir", "run_name", "report_to", "push_to_hub", "hub_model_id",
    "hub_strategy", "hub_token", "hub_private_repo", "hub_always_push", "hub_revision", "push_to_hub_token",
    "push_to_hub_model_id", "push_to_hub_organization", "local_rank", "disable_tqdm", "project", "trackio_space_id",
    "accelerator_config", "logging_strategy", "logging_steps", "logging_first_step", "save_total_limit", "do_train",
    "do_eval", "do_predict",
}


def changed_hyperparameters(args: TrainingArguments) -> dict:
    """The `TrainingArguments` that differ from their declared defaults (storage and reporting options left out).

    Defaults come from the dataclass fields: building a default `TrainingArguments` would reset accelerate's state
    in the middle of a run."""
    values = args.to_dict()
    changed = {}
    for f in dataclasses.fields(TrainingArguments):
        if not f.init or f.name in _NOT_HYPERPARAMETERS or f.name not in values:
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else \
            None if f.default is dataclasses.MISSING else f.default
        default = default.value if isinstance(default, enum.Enum) else default
        value = values[f.name]
        if value != default and (value or default):  # None / False / "" / [] are all "unset"
            changed[f.name] = value
    return changed


def dataset_names(dataset) -> list[str]:
    """The Hub name of a `datasets.Dataset` when it has one (loaded from the Hub), else nothing."""
    info = getattr(dataset, "info", None)
    name = getattr(info, "dataset_name", None) or getattr(info, "builder_name", None)
    if not name or name in ("csv", "json", "pandas", "parquet", "text", "arrow", "generator"):
        return []
    config = getattr(info, "config_name", None)
    return [f"{name}:{config}" if config and config != "default" else name]


class ModelCardCallback(TrainerCallback):
    """Record training facts in `model.model_card_data.training` and write the model card to `args.output_dir`.

    Recorded: the training datasets (given here, or the Hub name of the `datasets.Dataset` trained on), the
    `TrainingArguments` that differ from their defaults, the last evaluation's metrics (they become the card's
    `model-index`), the step, epoch and final training loss, and library versions. `README.md` in `args.output_dir`
    is written (merged into what is there or on the Hub, never overwritten) after each evaluation, before each Trainer
    push (`on_push_begin`, so `hub_strategy="every_save"` uploads it) and at the end of training.

    `trainer.push_to_hub()` (`hub_strategy="end"`) has the Trainer write its own draft card over README.md after the
    callbacks ran; `ModelCardCallback.attach(trainer)` adds the callback and makes that step write this card instead.

    Args:
        datasets: Hub ids of the training datasets.
        eval_datasets: Hub ids of the evaluation datasets (default: the training ones).
    """

    def __init__(self, datasets: list[str] | None = None, eval_datasets: list[str] | None = None):
        self.datasets = list(datasets or [])
        self.eval_datasets = list(eval_datasets or [])

    @classmethod
    def attach(cls, trainer, **kwargs) -> ModelCardCallback:
        """Add the callback to `trainer` and route `trainer.create_model_card` (called by `trainer.push_to_hub()`)
        to this card."""
        callback = cls(**kwargs)
        trainer.add_callback(callback)

        def create_model_card(language=None, license=None, tags=None, model_name=None, finetuned_from=None,
                              tasks=None, dataset_tags=None, dataset=None, dataset_args=None):
            if not trainer.is_world_process_zero():
                return
            data = trainer.model.model_card_data
            data.language = language or data.language
            data.license = license or data.license
            data.model_name = model_name or data.model_name
            extra = [tags] if isinstance(tags, str) else tags or []
            data.tags = list(dict.fromkeys([*data.tags, *extra]))
            given = [dataset_tags] if isinstance(dataset_tags, str) else dataset_tags or []
            data.datasets = list(dict.fromkeys([*data.datasets, *given]))
            callback.write(trainer.args, trainer.model, trainer.hub_model_id)

        trainer.create_model_card = create_model_card
        return callback

    def _facts(self, model) -> TrainingFacts:
        data = model.model_card_data
        if data.training is None:
            data.training = TrainingFacts()
        return data.training

    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        if not isinstance(model, SavedModel):
            raise TypeError(f"ModelCardCallback needs an hf_ttmoe model (with `model_card_data`), got "
                            f"{type(model).__name__}.")
        facts = self._facts(model)
        found = dataset_names(getattr(train_dataloader, "dataset", None))
        facts.datasets = list(dict.fromkeys([*self.datasets, *found]))
        facts.eval_datasets = self.eval_datasets or facts.datasets
        facts.hyperparameters = changed_hyperparameters(args)
        facts.versions = {"hf_ttmoe": __version__, "transformers": transformers.__version__,
                          "torch": torch.__version__}

    def on_log(self, args, state, control, model=None, logs=None, **kwargs):
        facts = self._facts(model)
        facts.global_step, facts.epoch = state.global_step, state.epoch
        for key in ("train_loss", "loss"):
            if logs and key in logs:
                facts.train_loss = float(logs[key])
                break

    def on_evaluate(self, args, state, control, model=None, metrics=None, **kwargs):
        facts = self._facts(model)
        facts.eval_metrics = {k.removeprefix("eval_"): v for k, v in (metrics or {}).items()
                              if isinstance(v, (int, float))}
        facts.global_step, facts.epoch = state.global_step, state.epoch
        if state.is_world_process_zero:
            self.write(args, model, args.hub_model_id)

    def on_push_begin(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero:
            self.write(args, model, self._repo_id(args), remote=True)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        facts = self._facts(model)
        facts.global_step, facts.epoch = state.global_step, state.epoch
        if state.is_world_process_zero:
            self.write(args, model, args.hub_model_id)

    @staticmethod
    def _repo_id(args) -> str | None:
        """The repo the Trainer pushes to: `hub_model_id`, in the token's namespace when it has none."""
        name = args.hub_model_id or Path(args.output_dir).absolute().name
        if "/" in name or not args.push_to_hub:
            return name if args.push_to_hub else args.hub_model_id
        try:
            return f"{HfApi(token=args.hub_token).whoami()['name']}/{name}"
        except Exception:  # offline or no token: the card then names the repo by its short name
            return name

    def write(self, args, model, repo_id: str | None, remote: bool = False) -> None:
        """Write the card into `args.output_dir/README.md`, merged into the Hub's README when `remote`."""
        os.makedirs(args.output_dir, exist_ok=True)
        existing = None
        if remote and repo_id and "/" in repo_id:
            try:
                existing = fetch_readme(repo_id, args.hub_revision, args.hub_token)
            except OSError as err:  # the Hub is unreachable: merge into the local README only
                logger.warning("ModelCardCallback: could not read the README of %s (%s)", repo_id, err)
        write_model_card(model.refresh_card_data(repo_id), args.output_dir, existing=existing)
