"""The stacked TT layout (`TTLoRAConfig(layout="stacked")`, `hf_ttmoe.ttlora.stacked`): one tensor train across a
module's layers, checked against the benchmark's independent implementation (`benchmarks/stacked_tt.py`), its
parameter budget, ties that survive saving and refuse edited copies, MoE composition and config errors. Identity at
init, save/load, merge and Trainer resume run in test_contracts.py's `ttlora_stacked` rows."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from conftest import random_expert, randomize_, rel_err, tiny_base, tiny_batch
from safetensors.torch import load_file
from transformers import BertConfig, BertForSequenceClassification

from benchmarks.stacked_tt import StackedTTLinear, stack_tt_
from hf_ttmoe import TTLoRAConfig, TTLoRAModel, TTLoRAMoEModel
from hf_ttmoe.io import WEIGHTS_NAME
from hf_ttmoe.ttlora.layer import CORE_TAG
from hf_ttmoe.ttlora.stacked import saved_cores, stack_groups
from hub_cards import render_card

TOL = 1e-10  # float64


def random_bert(hidden: int, layers: int, intermediate: int, seed: int) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=100, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                        intermediate_size=intermediate, max_position_embeddings=64, num_labels=3,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(config).eval()


@pytest.mark.parametrize("seed, hidden, layers, intermediate, rank", [(0, 24, 3, 40, 3), (1, 40, 2, 56, 5)])
def test_stacked_layout_is_the_benchmarks_stacked_train(seed, hidden, layers, intermediate, rank):
    """On random shapes, in float64: the library's stacked expert and `benchmarks.stacked_tt` (U, V shared per module,
    an r × r core per layer) given the same weights give the same logits and the same gradients, the shared cores'
    being the sum over layers; the layers of a module hold one U and one V."""
    targets = ["query", "value", "attention.output.dense", "intermediate.dense"]
    base = random_bert(hidden, layers, intermediate, seed).double()
    reference_base = copy.deepcopy(base)
    config = TTLoRAConfig(base_model_name_or_path="tiny-bert", num_labels=3, tt_rank=rank, alpha=8.0,
                          layout="stacked", target_modules=targets)
    model = randomize_(TTLoRAModel(config, base_model=base), seed=seed).train()
    layers_ = model.adapter_layers()
    groups = stack_groups(layers_)
    assert len(groups) == 4 and all(len(g) == layers for g in groups.values())
    for group in groups.values():
        assert all(layer.ttlora_cores[j] is group[0].ttlora_cores[j] for layer in group for j in (0, 2))
        assert len({id(layer.ttlora_cores[1]) for layer in group}) == layers

    names = [n.removeprefix("model.") for n, m in model.named_modules() if m in layers_]
    stacks = stack_tt_(reference_base, names, rank, 8.0, "module")
    with torch.no_grad():  # core 0 (1, in, r) is Vᵀ, core 1 (r, 1, r) S_lᵀ, core 2 (r, out, 1) Uᵀ
        for name, layer in zip(names, layers_, strict=True):
            ref = reference_base.get_submodule(name)
            assert isinstance(ref, StackedTTLinear)
            v, s, u = layer.ttlora_cores
            ref._cores[0].v.copy_(v[0].T)
            ref._cores[0].u.copy_(u[:, :, 0].T)
            ref.s.copy_(s[:, 0, :].T)
        reference_base.classifier.load_state_dict(model.model.classifier.state_dict())
    batch, labels = tiny_batch(batch=4, seq=9, seed=seed), torch.tensor([0, 1, 2, 1])
    got = model(**batch, labels=labels)
    want = reference_base.train()(**batch, labels=labels)
    got.loss.backward()
    want.loss.backward()
    assert rel_err(got.logits, want.logits) <= TOL
    for name, layer in zip(names, layers_, strict=True):
        ref = reference_base.get_submodule(name)
        assert rel_err(layer.ttlora_cores[0].grad[0].T, ref._cores[0].v.grad) <= TOL
        assert rel_err(layer.ttlora_cores[2].grad[:, :, 0].T, ref._cores[0].u.grad) <= TOL
        assert rel_err(layer.ttlora_cores[1].grad[:, 0, :].T, ref.s.grad) <= TOL
    assert len(stacks) == 4


def test_stacked_budget_on_minilm_shapes_and_its_card():
    """MiniLM's shapes (6 layers of 384, query/value) at rank 4: 6,336 core parameters, 4.30% of LoRA r=16's 147,456,
    the budget the benchmarks measured; the card counts shared cores once and says the layout."""
    config = TTLoRAConfig(base_model_name_or_path="tiny-bert", num_labels=2, tt_rank=4, layout="stacked")
    model = TTLoRAModel(config, base_model=random_bert(384, 6, 1536, 0))
    assert model.num_parameters_by_kind()["adapter"] == 6336 == 2 * (384 * 4 * 2) + 12 * 4 * 4
    data = model.refresh_card_data()
    assert data.trainable_parameters["adapter"] == 6336 and data.lora_r16_parameters == 147456
    card = render_card(data).content
    assert "**layout:** stacked" in card and "so the cores are 4.30% of it" in card


def test_saved_stacked_expert_stores_shared_cores_once_and_keeps_its_ties(tmp_path, base_kind):
    """The file holds each module's U and V once (under its first layer) and every layer's own core: its tensors
    are the model's unique parameters. Reloading (`from_pretrained`, and `load_state_dict` as Trainer resumes)
    ties them again; a file that lacks a shared core, or carries a later layer's copy, is refused naming the key."""
    model = random_expert(base_kind, layout="stacked", tt_rank=3)
    model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / WEIGHTS_NAME)
    cores = {k: v for k, v in saved.items() if CORE_TAG in k}
    assert sum(v.numel() for v in cores.values()) == model.num_parameters_by_kind()["adapter"]
    assert len(cores) == 2 * (2 + 2 * 1)  # 2 modules: V and U once, each of 2 layers its own core
    reloaded = TTLoRAModel.from_pretrained(tmp_path, base_model=tiny_base(base_kind, num_labels=2))
    fresh = random_expert(base_kind, layout="stacked", tt_rank=3, seed=5)
    fresh.load_state_dict(saved)
    for again in (reloaded, fresh):
        for group in stack_groups(again.adapter_layers()).values():
            assert all(layer.ttlora_cores[j] is group[0].ttlora_cores[j] for layer in group for j in (0, 2))
        with torch.no_grad():
            assert rel_err(again(**tiny_batch()).logits, model(**tiny_batch()).logits) <= 1e-6
    first = next(k for k in cores if k.endswith(f"{CORE_TAG}0"))
    alias = next(iter(reloaded.tied_aliases()))
    with pytest.raises(ValueError, match=rf"missing \['{re.escape(first)}'\]"):
        reloaded.load_adapter_state_dict({k: v for k, v in saved.items() if k != first})
    later = next(a for a, name in reloaded.tied_aliases().items() if name == first).split(CORE_TAG)[0]
    v, s, u = saved_cores(saved, later, "stacked")  # the later layer's V, U are its module's, its core its own
    assert torch.equal(v, saved[first]) and torch.equal(u, saved[first[:-1] + "2"])
    assert torch.equal(s, saved[f"{later}{CORE_TAG}1"])
    with pytest.raises(ValueError, match=r"core 0 is saved neither for it nor once for its module"):
        saved_cores({k: v for k, v in saved.items() if k != first}, later, "stacked")
    with pytest.raises(ValueError, match=rf"unexpected \['{re.escape(alias)}'\]"):
        reloaded.load_adapter_state_dict({**saved, alias: saved[reloaded.tied_aliases()[alias]]})


def test_stacked_and_chain_experts_compose_into_one_moe(make_expert, base_kind):
    """A MoE reads a stacked expert's per-layer chains like any other: each row of a mixed batch equals its own
    expert run alone."""
    paths = [make_expert(base_kind, task="stacked", num_labels=2, seed=1, layout="stacked", tt_rank=3),
             make_expert(base_kind, task="chain", num_labels=3, seed=2, tt_rank=2)]
    moe = TTLoRAMoEModel.from_experts([str(p) for p in paths], base_model=tiny_base(base_kind, num_labels=3)).eval()
    batch = tiny_batch(batch=4)
    index = torch.tensor([0, 1, 1, 0])
    with torch.no_grad():
        mixed = moe(**batch, expert_index=index).logits
    for e, (path, labels) in enumerate(zip(paths, (2, 3), strict=True)):
        single = TTLoRAModel.from_pretrained(path, base_model=tiny_base(base_kind, num_labels=labels))
        rows = (index == e).nonzero().flatten()
        with torch.no_grad():
            want = single(**{k: v[rows] for k, v in batch.items()}).logits
        assert rel_err(mixed[rows, :labels], want) <= 1e-5


@pytest.mark.parametrize("kwargs, match", [
    ({"layout": "tree"}, r"layout='tree' is not one of \('chain', 'stacked'\)"),
    ({"layout": "stacked", "init": "orthogonal"}, r"init='orthogonal' with layout='stacked'.*use init='gaussian'"),
    ({"layout": "stacked", "tt_shapes": {"query": [[4, 8], [8, 4]]}},
     r"tt_shapes\['query'\]=\[\[4, 8\], \[8, 4\]\] with layout='stacked'.*\[\[in\], \[1, out\]\]"),
])
def test_stacked_config_errors_name_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TTLoRAConfig(base_model_name_or_path="tiny-bert", num_labels=2, **kwargs)


def test_from_lora_refuses_the_stacked_layout(tmp_path):
    with pytest.raises(ValueError, match=r"from_lora\(layout='stacked'\).*TT-SVD.*layout='chain'"):
        TTLoRAModel.from_lora(tmp_path, layout="stacked")
