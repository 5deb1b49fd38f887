"""Every adapted layer's TT factors at once (hf_ttmoe/ttlora/shared_factors.py) against each layer building its own."""

from __future__ import annotations

import copy
import random

import pytest
import torch
from conftest import VOCAB, randomize_, rel_err, tiny_base, tiny_batch
from transformers import BertConfig, BertForSequenceClassification

from hf_ttmoe import TTLoRAConfig, TTLoRAModel
from hf_ttmoe.adapter import AdapterModel
from hf_ttmoe.testing import top_level_ops
from hf_ttmoe.ttlora.shared_factors import factor_groups

TOL = 1e-5
TOL_FLOAT64 = 1e-10

CASES = [  # (base, tt_rank, target_modules): one layout group, two groups (Llama's GQA v_proj is 32x16), odd ranks
    ("bert", 5, None),
    ("llama", 3, None),
    ("llama", 2, ["q_proj", "k_proj", "v_proj", "o_proj"]),
    ("bert", 4, ["query", "value", "intermediate.dense"]),
]


def expert(kind: str, tt_rank, targets) -> TTLoRAModel:
    config = TTLoRAConfig(num_labels=3, tt_rank=tt_rank, target_modules=targets)
    return randomize_(TTLoRAModel(config, base_model=tiny_base(kind, num_labels=3)), seed=1).train()


def step(model, shared: bool):
    """Logits and core gradients of one training step, with the shared factors (`model(...)`) or each layer building
    its own (`AdapterModel.forward`, which the sharing wraps)."""
    model.zero_grad(set_to_none=True)
    batch = {**tiny_batch(), "labels": torch.tensor([0, 1, 2, 1])}
    out = model(**batch) if shared else AdapterModel.forward(model, **batch)
    out.loss.backward()
    return out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind, tt_rank, targets", CASES)
def test_shared_factors_give_each_layers_outputs_and_gradients(kind, tt_rank, targets):
    model = expert(kind, tt_rank, targets)
    groups = factor_groups(model.adapter_layers())
    assert sum(len(g) for g in groups) == len(model.adapter_layers()) and any(len(g) > 1 for g in groups)
    logits, grads = step(model, shared=True)
    own_logits, own_grads = step(model, shared=False)
    assert rel_err(logits, own_logits) <= TOL
    assert grads.keys() == own_grads.keys() and any("ttlora_cores" in n for n in grads)
    for name in grads:
        assert rel_err(grads[name], own_grads[name]) <= TOL, name
    assert all(layer.shared_factors is None for layer in model.adapter_layers())  # nothing held past the forward


def random_layout_expert(seed: int) -> TTLoRAModel:
    """A bert expert on query/key/value (32x32 each) with a random layout per module (equal mode counts, so one rank
    list fits all; modules whose layouts coincide form a group) and random ranks, one int or one per bond."""
    rnd = random.Random(seed)
    splits = {1: [[32]], 2: [[4, 8], [8, 4], [2, 16], [16, 2]], 3: [[2, 4, 4], [4, 2, 4], [4, 4, 2], [2, 2, 8]]}
    num_in, num_out = rnd.choice([1, 2, 3]), rnd.choice([2, 3])
    modules = ["query", "key", "value"]
    shapes = {name: [rnd.choice(splits[num_in]), rnd.choice(splits[num_out])] for name in modules}
    bonds = num_in + num_out - 1
    tt_rank = rnd.randint(1, 6) if rnd.random() < 0.5 else [rnd.randint(1, 6) for _ in range(bonds)]
    config = TTLoRAConfig(num_labels=3, tt_rank=tt_rank, target_modules=modules, tt_shapes=shapes)
    return randomize_(TTLoRAModel(config, base_model=tiny_base("bert", num_labels=3)), seed=seed).train()


@pytest.mark.parametrize("seed", range(8))
def test_shared_factors_match_the_dense_reconstruction_on_random_layouts(seed):
    """Oracle independent of the factors code: the shared path's logits and core gradients against each layer adding
    its dense ΔW ("reconstruction"), on random layouts and ranks. In float64, so that the bound checks the algebra
    (in float32 two summation orders through two random layers differ by up to ~3e-5)."""
    model = random_layout_expert(seed).double()
    assert any(len(g) > 1 for g in factor_groups(model.adapter_layers()))
    logits, grads = step(model, shared=True)
    model.set_forward_impl("reconstruction")
    dense_logits, dense_grads = step(model, shared=False)
    assert rel_err(logits, dense_logits) <= TOL_FLOAT64
    assert grads.keys() == dense_grads.keys() and any("ttlora_cores" in n for n in grads)
    for name in grads:
        assert rel_err(grads[name], dense_grads[name]) <= TOL_FLOAT64, name


def test_sharing_stays_out_of_inference_and_merged_layers(monkeypatch):
    model = expert("bert", 5, None)
    layer_cls = type(model.adapter_layers()[0])
    seen = []
    original = layer_cls.scaled_factors_t

    def spy(self):
        seen.append(self.shared_factors is not None)
        return original(self)

    monkeypatch.setattr(layer_cls, "scaled_factors_t", spy)
    with torch.no_grad():
        model(**tiny_batch())
    assert seen and not any(seen)  # without gradient each layer's cached factors serve
    seen.clear()
    model(**tiny_batch())
    assert seen and all(seen)


def test_shared_factors_launch_fewer_ops_as_layers_grow():
    """Deterministic op counts (what a GPU pays in launches): building factors per layer costs a chain per layer,
    sharing costs one chain per layout, so the saving grows with the number of adapted layers."""
    model = expert("bert", 5, ["query", "key", "value", "dense"])
    shared = top_level_ops(lambda: step(model, shared=True))
    own = top_level_ops(lambda: step(model, shared=False))
    assert shared < 0.8 * own, (shared, own)


@pytest.mark.parametrize("layout", ["chain", "stacked"])
def test_training_step_launches_at_most_115_percent_of_peft_loras_ops(layout):
    """Issue 11's bound, as `benchmarks/bench_ops.py` measures it: a MiniLM-shaped encoder (6 layers, width 384, so
    the same TT layout and layer count; small vocabulary and feed-forward, which change no op count), one training
    forward + backward at batch 2, 16 tokens: TT-LoRA r=5 on query/value (chain or stacked layout) within 1.15x the
    top-level ATen ops of PEFT LoRA r=16 there."""
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                        intermediate_size=64, max_position_embeddings=64, num_labels=2)
    base = BertForSequenceClassification(config)
    base.config.name_or_path = "minilm-shaped"
    batch = {"input_ids": torch.randint(1, VOCAB, (2, 16)), "attention_mask": torch.ones(2, 16, dtype=torch.long),
             "labels": torch.zeros(2, dtype=torch.long)}
    tt_model = TTLoRAModel(TTLoRAConfig(num_labels=2, tt_rank=5, target_modules=["query", "value"], layout=layout),
                           base_model=copy.deepcopy(base))
    lora = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(
        r=16, lora_alpha=32, target_modules=["query", "value"], modules_to_save=["classifier"]))
    counts = {}
    for name, model in {"tt": tt_model, "lora": lora}.items():
        model.train()

        def train_step(m=model):
            m.zero_grad(set_to_none=True)
            m(**batch).loss.backward()

        train_step()  # warm-up, as the benchmark does
        counts[name] = top_level_ops(train_step)
    assert counts["tt"] <= 1.15 * counts["lora"], counts


def test_inference_after_a_fused_optimizer_step_sees_the_new_cores():
    """Fused AdamW updates the cores without bumping their version counters, so the inference cache cannot tell: the
    training forward in between must drop it (the shared path does, as each layer's own path does)."""
    model = expert("bert", 5, None)
    with torch.no_grad():
        model.eval()(**tiny_batch())  # each layer caches its factors
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, fused=True)
    model.train()
    step(model, shared=True)
    optimizer.step()
    model.eval()
    with torch.no_grad():
        served = model(**tiny_batch()).logits
        for layer in model.adapter_layers():
            layer._factor_cache = None
        assert torch.equal(served, model(**tiny_batch()).logits)
