"""The contracts every method meets, over one case matrix (as PEFT's `TEST_CASES`): each row is a method on a tiny
encoder (BERT) or decoder (Llama), and each test body below is shared by every row it applies to.

Contracts: identity at init; save/load round trip of the saved weights only; config errors that name the bad value;
merge/unmerge, or a clear refusal for a method that cannot merge; Trainer training resumed from a checkpoint.
Method-specific behaviour (TT math, layouts, forward paths, gates, routing, balance loss) stays in each method's file.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch
from conftest import VOCAB, randomize_, rel_err, tiny_base, tiny_batch
from datasets import Dataset
from safetensors.torch import load_file
from transformers import AutoModel, Trainer, TrainingArguments

from hf_ttmoe import (
    AdapterModel,
    DenseMoELoRAConfig,
    DenseMoELoRAModel,
    TTLoRAConfig,
    TTLoRAModel,
    TTLoRAMoEConfig,
    TTLoRAMoEModel,
)
from hf_ttmoe.io import CONFIG_NAME, WEIGHTS_NAME

TTLORA = {"num_labels": 3, "tt_rank": 3}
MOE_LORA = {"num_labels": 3, "num_experts": 4, "lora_rank": 2, "num_experts_per_tok": 2}
TTLORA_MOE = {"router_layer": 1, "router_type": "mlp"}  # composed from two saved random experts, see `make_config`

TEST_CASES = [
    # (id, config class, model class, config kwargs, base kind)
    ("ttlora-bert", TTLoRAConfig, TTLoRAModel, TTLORA, "bert"),
    ("ttlora-llama", TTLoRAConfig, TTLoRAModel, TTLORA, "llama"),
    ("ttlora-llama-causal_lm", TTLoRAConfig, TTLoRAModel, {"task_type": "causal_lm", "tt_rank": 3}, "llama"),
    ("ttlora_stacked-bert", TTLoRAConfig, TTLoRAModel, {**TTLORA, "layout": "stacked"}, "bert"),
    ("ttlora_stacked-llama", TTLoRAConfig, TTLoRAModel, {**TTLORA, "layout": "stacked"}, "llama"),
    ("moe_lora-bert", DenseMoELoRAConfig, DenseMoELoRAModel, MOE_LORA, "bert"),
    ("moe_lora-llama", DenseMoELoRAConfig, DenseMoELoRAModel, MOE_LORA, "llama"),
    ("ttlora_moe-bert", TTLoRAMoEConfig, TTLoRAMoEModel, TTLORA_MOE, "bert"),
    ("ttlora_moe-llama", TTLoRAMoEConfig, TTLoRAMoEModel, TTLORA_MOE, "llama"),
]
# the MoE composes frozen, trained experts under a router: it is not the identity at init and has nothing to merge
ADAPTER_CASES = [case for case in TEST_CASES if issubclass(case[2], AdapterModel)]

QUERY = {"bert": "query", "llama": "q_proj"}
BAD_CONFIGS = {  # per method: (bad config kwargs, or a function of the base kind giving them; what the error says)
    TTLoRAConfig: [
        ({"forward_impl": "dense"}, "forward_impl='dense' is not one of"),
        ({"init": "xavier"}, "init='xavier' is not one of"),
        ({"tt_rank": 0}, "tt_rank=0"),
        ({"task_type": "regression"}, "task_type='regression'"),
        (lambda kind: {"tt_shapes": {QUERY[kind]: [[4, 4], [4, 8]]}},
         r"in_modes=\[4, 4\] \(product 16\) does not fit a dimension of 32"),
        ({"target_modules": ["nope"]}, r"target_modules=\['nope'\].*matched no nn.Linear"),
    ],
    DenseMoELoRAConfig: [
        ({"num_experts": 8, "num_experts_per_tok": 9}, r"num_experts_per_tok=9 must be None \(dense\) or an int in "
                                                       r"\[1, 8\]"),
        ({"lora_rank": 0}, "lora_rank=0"),
        ({"target_modules": ["nope"]}, r"target_modules=\['nope'\].*matched no nn.Linear"),
    ],
    TTLoRAMoEConfig: [
        ({"router_type": "gru"}, "router_type='gru' is not one of"),
        ({"router_layer": 3}, r"router_layer=3 exceeds the base model's 2 layers"),
    ],
}


def with_bad_values(row):
    """The row once per bad value of its method: (id, config class, model class, bad kwargs, base kind, match)."""
    name, config_cls, model_cls, kwargs, kind = row
    for bad, match in BAD_CONFIGS[config_cls]:
        bad = bad(kind) if callable(bad) else bad
        yield f"{name}-{next(iter(bad))}", config_cls, model_cls, {**kwargs, **bad}, kind, match


# the stacked layout's own config errors are in test_stacked_layout.py
ERROR_CASES = [case for row in TEST_CASES if "stacked" not in row[0] for case in with_bad_values(row)]


def cases(rows, fields="config_cls, model_cls, kwargs, kind"):
    """Parametrize a shared test body over table rows (the row id names the test)."""
    return pytest.mark.parametrize(fields, [row[1:] for row in rows], ids=[row[0] for row in rows])


def make_config(config_cls, kwargs, kind, make_expert):
    if config_cls is TTLoRAMoEConfig:  # two experts with different label spaces, from the one random-expert fixture
        experts = [{"repo_id": str(make_expert(kind, task=f"task{i}", num_labels=2 + i, seed=i))} for i in range(2)]
        return config_cls(experts=experts, **kwargs)
    return config_cls(base_model_name_or_path=f"tiny-{kind}", **kwargs)


def base_for(config, kind):
    return tiny_base(kind, getattr(config, "task_type", "seq_cls"), num_labels=config.num_labels)


def build(config_cls, model_cls, kwargs, kind, make_expert):
    config = make_config(config_cls, kwargs, kind, make_expert)
    return model_cls(config, base_model=base_for(config, kind))


def outputs(model) -> dict[str, torch.Tensor]:
    """Every tensor the model returns for `tiny_batch()` (logits; a router's logits and choices; an aux loss)."""
    with torch.no_grad():
        return {k: v for k, v in model(**tiny_batch()).items() if isinstance(v, torch.Tensor)}


def logits(model) -> torch.Tensor:
    return outputs(model)["logits"]


def assert_close(got, want, tol):
    """Relative error <= tol over the finite entries, and -inf (a MoE row's labels beyond its expert's) in the same
    places."""
    finite = torch.isfinite(want)
    assert torch.equal(torch.isfinite(got), finite)
    assert rel_err(got[finite], want[finite]) <= tol


@cases(ADAPTER_CASES)
def test_identity_at_init(config_cls, model_cls, kwargs, kind, make_expert):
    config = make_config(config_cls, kwargs, kind, make_expert)
    base = base_for(config, kind)
    reference = copy.deepcopy(base)
    model = model_cls(config, base_model=base).eval()
    assert model.adapter_layers()
    want = logits(reference)
    assert torch.equal(logits(model), want)
    randomize_(model)  # the adapters are live: the identity comes from their init
    assert rel_err(logits(model), want) > 1e-3


@cases(TEST_CASES)
def test_save_load_round_trip_saves_only_what_is_trained(config_cls, model_cls, kwargs, kind, make_expert, tmp_path):
    model = randomize_(build(config_cls, model_cls, kwargs, kind, make_expert), seed=1).eval()
    path = tmp_path / "saved"
    model.save_pretrained(path)
    assert sorted(os.listdir(path)) == sorted([CONFIG_NAME, WEIGHTS_NAME])
    # a weight several modules share (the stacked layout's U, V) once, under the first module's name
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and set(load_file(path / WEIGHTS_NAME)) == set(model.saved_state_dict()) == trainable
    for loader in (model_cls, AutoModel):
        reloaded = loader.from_pretrained(path, base_model=base_for(model.config, kind))
        assert type(reloaded) is model_cls and not reloaded.training
        same = {k: v for k, v in model.config.to_diff_dict().items() if k != "experts"}
        assert {k: v for k, v in reloaded.config.to_diff_dict().items() if k in same} == same
        got, want = outputs(reloaded), outputs(model)
        assert got.keys() == want.keys()
        for k in want:
            assert_close(got[k], want[k], 1e-6)


@cases(ERROR_CASES, fields="config_cls, model_cls, kwargs, kind, match")
def test_config_errors_name_the_bad_value(config_cls, model_cls, kwargs, kind, match, make_expert):
    with pytest.raises(ValueError, match=match):
        build(config_cls, model_cls, kwargs, kind, make_expert)


@cases(ADAPTER_CASES)
def test_merge_and_unmerge_are_exact_or_refused(config_cls, model_cls, kwargs, kind, make_expert):
    model = randomize_(build(config_cls, model_cls, kwargs, kind, make_expert)).eval()
    adapted = logits(model)
    weights = {n: p.clone() for n, p in model.named_parameters() if "base_layer" in n}
    if not model_cls.supports_merge:
        for method in (model.merge, model.unmerge):
            with pytest.raises(NotImplementedError, match="cannot be merged"):
                method()
        assert torch.equal(logits(model), adapted)
        return
    model.merge()
    assert any(not torch.equal(p, weights[n]) for n, p in model.named_parameters() if n in weights)
    assert rel_err(logits(model), adapted) <= 1e-5
    model.merge()  # idempotent
    assert rel_err(logits(model), adapted) <= 1e-5
    model.unmerge()
    assert rel_err(logits(model), adapted) <= 1e-5
    for n, p in model.named_parameters():
        if n in weights:
            assert (p - weights[n]).abs().max() <= 1e-5 * weights[n].abs().max(), n


def train_data(config) -> tuple[Dataset, str]:
    """16 rows of 8 tokens and the label column each kind of model trains on."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, VOCAB, (16, 8), generator=g)
    data = {"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()}
    if isinstance(config, TTLoRAMoEConfig):  # the router learns which expert a row belongs to
        label, data["task_ids"] = "task_ids", (ids[:, 0] % 2).tolist()
    elif config.task_type == "causal_lm":
        label, data["labels"] = "labels", ids.tolist()
    else:
        label, data["labels"] = "labels", (ids[:, 0] % 3).tolist()
    return Dataset.from_dict(data), label


TRAINER_STATE_FILES = {"optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin", "trainer_state.json"}


@cases(TEST_CASES)
def test_trainer_resumes_from_a_checkpoint_to_the_same_weights(config_cls, model_cls, kwargs, kind, make_expert,
                                                               tmp_path):
    def run(resume=None):
        torch.manual_seed(0)
        model = build(config_cls, model_cls, kwargs, kind, make_expert)
        data, label = train_data(model.config)
        args = TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=4, per_device_train_batch_size=4,
                                 learning_rate=1e-2, save_steps=2, logging_steps=1, report_to=[], use_cpu=True,
                                 seed=0, data_seed=0, label_names=[label])
        initial = {k: v.clone() for k, v in model.saved_state_dict().items()}
        trainer = Trainer(model=model, args=args, train_dataset=data)
        trainer.train(resume_from_checkpoint=resume)
        return trainer, initial, model.saved_state_dict()

    trainer, initial, final = run()
    assert len([h for h in trainer.state.log_history if "loss" in h]) == 4
    assert all(not torch.equal(final[k], initial[k]) for k in final)  # every trained weight moved
    checkpoint = tmp_path / "run" / "checkpoint-2"
    assert set(os.listdir(checkpoint)) - TRAINER_STATE_FILES == {CONFIG_NAME, WEIGHTS_NAME}
    assert set(load_file(checkpoint / WEIGHTS_NAME)) == set(final)
    _, _, resumed = run(resume=str(checkpoint))
    for k in final:
        assert rel_err(resumed[k], final[k]) <= 1e-5, k
