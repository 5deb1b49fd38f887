"""Saved tiny pools for the pipeline and server tests: a tiny random base model saved with a real tokenizer of its
family (BERT WordPiece, Llama BPE) in a directory the experts' configs name, TT-LoRA experts on it, and a MoE over
them whose router sends different inputs to different experts."""

from __future__ import annotations

import string
from pathlib import Path

import torch
from conftest import VOCAB, random_expert, tiny_base
from transformers import BertTokenizer, LlamaTokenizer

from hf_ttmoe import TTLoRAMoEModel

WORDS = ("the a film movie good bad great awful stocks fell rose market team won lost match is was not very plot "
         "actor price bank goal season").split()
LABELS = (("negative", "positive"), ("world", "sports", "business"), ("no", "yes"), ("a", "b", "c", "d"))
TEXTS = ["the film was good", "stocks fell", "the team won the match", "a very bad movie", "market rose",
         "the plot", "awful actor", "great great great", "bank price", "goal season", "not very good", "the"]
PAIRS = [{"text": "the film", "text_pair": "was bad"}, {"text": "stocks rose", "text_pair": "the market fell"},
         {"text": "the team", "text_pair": "lost the match"}]


def tiny_tokenizer(kind: str):
    """A real tokenizer of the family whose ids fit the tiny base's vocabulary (VOCAB) and whose pad id is 0."""
    if kind == "bert":
        vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
        tokenizer = BertTokenizer(vocab=vocab, model_max_length=64)
    else:
        chars = list(string.ascii_lowercase + string.digits + ".,!?'")
        vocab = {t: i for i, t in enumerate(["<pad>", "<unk>", "<s>", "</s>", "▁", *chars])}
        tokenizer = LlamaTokenizer(vocab=vocab, merges=[], model_max_length=64, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<s>", eos_token="</s>", add_bos_token=True)
    assert len(vocab) <= VOCAB and tokenizer.pad_token_id == 0
    return tokenizer


def save_base(kind: str, path: Path) -> Path:
    """`tiny_base(kind)` and its tokenizer, saved as a base model directory."""
    tiny_base(kind).save_pretrained(path)
    tiny_tokenizer(kind).save_pretrained(path)
    return path


def save_pool(kind: str, root: Path, num_experts: int = 3) -> tuple[list[Path], Path]:
    """Experts task0.. (label names from LABELS) on a saved base, and a MoE over them (router_layer 0) whose router
    weights are set so that TEXTS go to several experts. Returns (expert directories, MoE directory)."""
    base = save_base(kind, root / f"{kind}-base")
    experts = []
    for i in range(num_experts):
        labels = LABELS[i]
        path = root / f"{kind}-expert{i}"
        random_expert(kind, task=f"task{i}", num_labels=len(labels), seed=10 + i, base_model_name_or_path=str(base),
                      id2label=dict(enumerate(labels))).save_pretrained(path)
        experts.append(path)
    moe = TTLoRAMoEModel.from_experts([str(p) for p in experts], base_model=tiny_base(kind, num_labels=4)).eval()
    # an untrained router sends every input to one expert: spread TEXTS over the experts with a random linear map of
    # their centred features
    linear = moe.router.router_net
    with torch.no_grad():
        features = moe.router_features(**tiny_tokenizer(kind)(TEXTS, padding=True, return_tensors="pt"))  # (N, H)
        weight = torch.randn(linear.weight.shape, generator=torch.Generator().manual_seed(0))  # (E, H)
        weight *= 10 / ((features - features.mean(0)) @ weight.T).std()
        linear.weight.copy_(weight)
        linear.bias.copy_(-features.mean(0) @ weight.T)
    moe.save_pretrained(root / f"{kind}-moe")
    return experts, root / f"{kind}-moe"
