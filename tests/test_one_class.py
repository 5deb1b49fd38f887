"""A classifier that predicts one class for every row is trained, saved and scored like any other; these tests pin
that it is named as not learned: `compute_metrics`' `predicted_class_share`, `OneClassWarningCallback` under a real
`Trainer`, and the training commands' summary line."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from transformers import Trainer, TrainingArguments

from hf_ttmoe.training import compute_metrics
from trainer_callbacks import OneClassWarningCallback, one_class_note, predicts_one_class

LOGGER = "trainer_callbacks.one_class"


def test_predicted_class_share_is_the_share_of_the_most_predicted_class():
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0], [0.0, 2.0, 1.0]])
    assert compute_metrics((logits, np.array([0, 1, 1, 2, 0])))["predicted_class_share"] == pytest.approx(3 / 5)
    assert compute_metrics((np.tile([0.0, 1.0], (4, 1)), np.array([0, 1, 0, 1])))["predicted_class_share"] == 1.0


@pytest.mark.parametrize("share, accuracy, expected", [
    (1.0, 0.5056, True),   # one class for every row, the labels hold others: not learned
    (1.0, 1.0, False),     # the rows are all of that class: right, not stuck
    (0.98, 0.51, False),   # nearly one class is not one class
])
def test_predicts_one_class(share, accuracy, expected):
    metrics = {"eval_predicted_class_share": share, "eval_accuracy": accuracy}
    assert predicts_one_class(metrics) is expected
    assert predicts_one_class({f"test_{k[5:]}": v for k, v in metrics.items()}, "test") is expected
    assert not predicts_one_class(metrics, "test")  # another evaluation's keys
    assert (one_class_note({"test_predicted_class_share": share, "test_accuracy": accuracy}) != "") is expected


class Fixed(torch.nn.Module):
    """Logits `scale · one_hot(x)` plus a learnable bias: `scale=0` with bias (1, 0) predicts class 0 for every row,
    `scale=5` predicts each row's label (x = label). Learning rate 0 keeps it as built."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale, self.bias = scale, torch.nn.Parameter(torch.tensor([1.0, 0.0]))

    def forward(self, x, labels=None):
        logits = self.scale * torch.nn.functional.one_hot(x, 2).float() + self.bias
        return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}


def run(tmp_path, scale: float) -> Trainer:
    rows = [{"x": i % 2, "labels": i % 2} for i in range(16)]
    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=0.0, max_steps=2, eval_strategy="steps",
                             eval_steps=1, per_device_train_batch_size=8, report_to=[], use_cpu=True,
                             save_strategy="no", disable_tqdm=True)
    trainer = Trainer(model=Fixed(scale), args=args, train_dataset=rows, eval_dataset=rows,
                      compute_metrics=compute_metrics, callbacks=[OneClassWarningCallback()])
    trainer.train()
    trainer.evaluate(metric_key_prefix="test")
    return trainer


def test_a_trainer_whose_model_predicts_one_class_warns_at_train_end_and_after(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        trainer = run(tmp_path, scale=0.0)
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert [m.split(" ")[0] for m in messages] == ["All", "test"], messages
    assert messages[0].startswith("All 2 evaluations during training (to step 2) predicted one class")
    assert "test_accuracy 0.5000 is that class's share" in messages[1] and "--learning_rate" in messages[1]
    assert trainer.state.log_history[0]["eval_predicted_class_share"] == 1.0


def test_a_trainer_whose_model_learned_does_not_warn(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        run(tmp_path, scale=5.0)
    assert [r for r in caplog.records if r.name == LOGGER] == []


def test_one_class_evaluations_during_training_warn_only_if_the_model_never_leaves_them(caplog):
    callback = OneClassWarningCallback()
    state = type("State", (), {"global_step": 100})()
    stuck, learned = ({"eval_predicted_class_share": s, "eval_accuracy": 0.6} for s in (1.0, 0.7))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        callback.on_train_begin(None, state, None)
        for metrics in (stuck, stuck, learned):  # a head predicts one class for a while before it learns
            callback.on_evaluate(None, state, None, metrics=metrics)
        callback.on_train_end(None, state, None)
        callback.on_train_begin(None, state, None)  # a second training starts its count afresh
        callback.on_evaluate(None, state, None, metrics=stuck)
        callback.on_train_end(None, state, None)
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(messages) == 1 and messages[0].startswith("All 1 evaluations"), messages


@pytest.mark.parametrize("command", ["train_expert", "train_moe_lora"])
def test_training_commands_attach_the_warning_and_name_a_one_class_expert(command, tmp_path, monkeypatch, capsys):
    import importlib

    module = importlib.import_module(f"hf_ttmoe.commands.{command}")
    seen = {}

    def fake_train_and_evaluate(model, tokenizer, splits, training_args, callbacks=None):
        seen["callbacks"] = callbacks
        return {"test_accuracy": 0.5, "test_f1": 0.0, "test_macro_f1": 0.33, "test_predicted_class_share": 1.0}

    monkeypatch.setattr(module, "train_and_evaluate", fake_train_and_evaluate)
    module.main(["--task", "rotten_tomatoes", "--output_dir", str(tmp_path), "--max_train_samples", "16",
                 "--max_eval_samples", "8", "--report_to", "none", "--use_cpu"])
    assert any(isinstance(c, OneClassWarningCallback) for c in seen["callbacks"])
    assert "one class for every test row, not learned" in capsys.readouterr().out


def test_the_share_is_a_diagnostic_not_a_quality_metric_of_the_model_card():
    from hub_cards import TrainingFacts

    facts = TrainingFacts(eval_metrics={"accuracy": 0.9, "mcc": 0.8, "predicted_class_share": 0.55, "runtime": 1.0})
    assert facts.quality_metrics() == {"accuracy": 0.9, "mcc": 0.8}
