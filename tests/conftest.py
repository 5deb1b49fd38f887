"""Shared test harness: tiny random base models (one encoder, one decoder) and helpers every method's tests use."""

from __future__ import annotations

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


@pytest.fixture(params=BASES)
def base_kind(request):
    return request.param
