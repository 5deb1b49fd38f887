"""Warns when a classifier predicts one class for every evaluation row: trained, saved and scored, yet it has not
learned its task (its accuracy is that class's share of the rows)."""

from __future__ import annotations

import logging

from transformers import TrainerCallback

logger = logging.getLogger(__name__)

SHARE = "predicted_class_share"  # the metric `hf_ttmoe.training.compute_metrics` reports it as
HINT = ("TT-LoRA chains do this at learning rates above a task's stable window (trained to convergence, QNLI and "
        "CoLA learn only at 1e-3 to 2e-3, not at the default 5e-3; benchmarks/README.md) and when the budget is too "
        "short to leave the start: lower --learning_rate, or train longer.")


def predicts_one_class(metrics: dict, prefix: str = "eval") -> bool:
    """Whether `metrics` (one evaluation's, keys `{prefix}_...`) say every row was predicted as one class while the
    labels hold others: the predicted class's share is 1 and the accuracy is not."""
    return metrics.get(f"{prefix}_{SHARE}") == 1.0 and metrics.get(f"{prefix}_accuracy", 1.0) < 1.0


def one_class_note(metrics: dict, prefix: str = "test") -> str:
    """A suffix for a command's summary line: what `predicts_one_class` found, or ""."""
    return f" -- one class for every {prefix} row, not learned (see the warning above)" if predicts_one_class(
        metrics, prefix) else ""


def _prefix(metrics: dict) -> str | None:
    return next((key[: -len(SHARE) - 1] for key in metrics if key.endswith(f"_{SHARE}")), None)


class OneClassWarningCallback(TrainerCallback):
    """Logs a warning when a classifier has not left one class: the model's evaluations after training (the final
    model's validation and test scores) that predict one class for every row, and a training whose every evaluation
    did. Evaluations during training alone do not warn: a head predicts one class for a while before it learns.

    Needs `predicted_class_share` among the metrics: `Trainer(compute_metrics=hf_ttmoe.training.compute_metrics)`.
    """

    def __init__(self):
        self.training = False
        self.during_training = []  # one bool per evaluation of the current training: predicted one class

    def on_train_begin(self, args, state, control, **kwargs):
        self.training, self.during_training = True, []

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        prefix = _prefix(metrics or {})
        if prefix is None:
            return
        one_class = predicts_one_class(metrics, prefix)
        if self.training:
            self.during_training.append(one_class)
        elif one_class:
            logger.warning("%s at step %d: the model predicts one class for every row (%s_accuracy %.4f is that "
                           "class's share), so it has not learned the task. %s", prefix, state.global_step, prefix,
                           metrics[f"{prefix}_accuracy"], HINT)

    def on_train_end(self, args, state, control, **kwargs):
        self.training = False
        if self.during_training and all(self.during_training):
            logger.warning("All %d evaluations during training (to step %d) predicted one class for every row: the "
                           "model never left it. %s", len(self.during_training), state.global_step, HINT)
