"""Shared test harness: tiny random base models (one encoder, one decoder), random experts, and helpers every method's
tests use. The contracts every method meets are in test_contracts.py."""

from __future__ import annotations

import gc
import os

import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
)

from hf_ttmoe import TTLoRAConfig, TTLoRAModel

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

VOCAB = 100
BASES = ("bert", "llama")  # the case matrix: one encoder, one decoder


def tiny_base(kind: str, task_type: str = "seq_cls", num_labels: int = 3, seed: int = 0):
    """A small random HF model of the given family; deterministic for a seed."""
    torch.manual_seed(seed)
    if kind == "bert":
        cfg = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=64, num_labels=num_labels,
                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        assert task_type == "seq_cls"
        model = BertForSequenceClassification(cfg)
    elif kind == "llama":
        cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
                          num_labels=num_labels, pad_token_id=0)
        model = (LlamaForSequenceClassification if task_type == "seq_cls" else LlamaForCausalLM)(cfg)
    else:
        raise ValueError(kind)
    model.config.name_or_path = f"tiny-{kind}"
    return model.eval()


def tiny_batch(batch: int = 4, seq: int = 10, seed: int = 0, pad_last: int = 3):
    """Token ids in [1, VOCAB) with the last `pad_last` positions of row 0 padded (id 0, mask 0)."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, VOCAB, (batch, seq), generator=g)
    attention_mask = torch.ones_like(input_ids)
    if pad_last:
        input_ids[0, -pad_last:] = 0
        attention_mask[0, -pad_last:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative error ‖a - b‖ / max(‖b‖, tiny) in float64."""
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def randomize_(model: torch.nn.Module, seed: int = 0, std: float = 0.3) -> torch.nn.Module:
    """Give every trainable weight seeded N(0, std²) values, in place: the init makes adapters a no-op (ΔW = 0), and
    a test that saves, merges or composes them must see them matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def random_expert(kind: str = "bert", task: str = "task0", num_labels: int = 2, seed: int = 0,
                  task_type: str = "seq_cls", **config_kwargs):
    """A tiny TT-LoRA expert (eval mode) with random cores and head; `config_kwargs` add to or override the config."""
    config_kwargs = {"base_model_name_or_path": f"tiny-{kind}", "tt_rank": 2, "pad_token_id": 0, **config_kwargs}
    config = TTLoRAConfig(task=task, task_type=task_type, num_labels=num_labels, **config_kwargs)
    expert = TTLoRAModel(config, base_model=tiny_base(kind, task_type, num_labels=num_labels))
    return randomize_(expert, seed).eval()


@pytest.fixture
def make_expert(tmp_path):
    """Factory: save a `random_expert(kind, task, num_labels, seed, **config_kwargs)` in its own directory under
    `tmp_path/experts` (expert0, expert1, ... in call order) and return that directory."""
    count = 0

    def make(kind: str = "bert", task: str = "task0", num_labels: int = 2, seed: int = 0, **config_kwargs):
        nonlocal count
        path = tmp_path / "experts" / f"expert{count}"
        count += 1
        random_expert(kind, task, num_labels, seed, **config_kwargs).save_pretrained(path)
        return path

    return make


def pytest_collection_finish(session):
    """Trainer and accelerate call `gc.collect()` a few times per run, and each full collection walks every object that
    importing torch and transformers created (about half a second a call). Freeze what exists once the tests are
    collected: a collection then walks only what the tests create."""
    gc.collect()
    gc.freeze()


@pytest.fixture(params=BASES)
def base_kind(request):
    return request.param


@pytest.fixture(autouse=True)
def one_thread(request):
    """Tiny models run on one intra-op thread: more threads only add synchronization at these sizes, and stall for
    seconds per step when other processes share the cores. Slow tests (real models) keep torch's default."""
    if request.node.get_closest_marker("slow"):
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
