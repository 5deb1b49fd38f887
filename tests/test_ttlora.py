"""TT-LoRA-specific tests (trainable set, forward paths, factor cache, load refusals, layouts, parameter counts), over
one encoder and one decoder base. Identity at init, save/load, config errors, merge and Trainer resume are in
test_contracts.py."""

from __future__ import annotations

import os

import pytest
import torch
from conftest import random_expert, randomize_, rel_err, tiny_base, tiny_batch
from transformers import LlamaConfig, LlamaForSequenceClassification

from hf_ttmoe import TTLoRAConfig, TTLoRALinear, TTLoRAModel, tt

TOL = 1e-5


def test_trainable_parameters_are_cores_and_head_only(base_kind):
    model = random_expert(base_kind)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    head = {"bert": "model.classifier.", "llama": "model.score."}[base_kind]
    assert trainable and all(".ttlora_cores." in n or n.startswith(head) for n in trainable)
    targets = {"bert": ("query", "value"), "llama": ("q_proj", "v_proj")}[base_kind]
    layers = [n for n, m in model.named_modules() if isinstance(m, TTLoRALinear)]
    assert len(layers) == 4 and all(n.rsplit(".", 1)[-1] in targets for n in layers)
    counts = model.num_parameters_by_kind()
    assert counts["adapter"] == sum(p.numel() for n, p in model.named_parameters() if "ttlora_" in n)


def test_config_init_reaches_every_layer_and_round_trips(tmp_path, base_kind):
    config = TTLoRAConfig(base_model_name_or_path=f"tiny-{base_kind}", num_labels=2, tt_rank=3, init="orthogonal")
    model = TTLoRAModel(config, base_model=tiny_base(base_kind, num_labels=2))
    layers = [m for m in model.modules() if isinstance(m, TTLoRALinear)]
    for layer in layers:  # ΔW = 0 and V's rows orthonormal up to one gain, which Gaussian cores never give
        u, v = layer.factors()
        gram = v.double() @ v.double().T
        assert torch.equal(u, torch.zeros_like(u))
        assert rel_err(gram, gram[0, 0] * torch.eye(len(gram), dtype=gram.dtype)) <= TOL
    model.config.save_pretrained(tmp_path)
    assert TTLoRAConfig.from_pretrained(tmp_path).init == "orthogonal"


@pytest.mark.parametrize("layout", ["chain", "stacked"])
@pytest.mark.parametrize("impl", ["contraction", "reconstruction"])
def test_forward_paths_agree_in_the_model(base_kind, impl, layout):
    model = random_expert(base_kind, num_labels=3, layout=layout).train()
    batch = tiny_batch()
    labels = torch.tensor([0, 1, 2, 1])

    def run():
        model.zero_grad()
        out = model(**batch, labels=labels)
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if "ttlora_" in n}
        return out.logits.detach(), grads

    logits_f, grads_f = run()
    model.set_forward_impl(impl)
    logits_i, grads_i = run()
    assert rel_err(logits_i, logits_f) <= TOL
    assert all(rel_err(grads_i[n], grads_f[n]) <= TOL for n in grads_f)
    with pytest.raises(ValueError, match="forward_impl='fast'"):
        model.set_forward_impl("fast")


def test_inference_reuses_factors_until_a_core_changes(monkeypatch):
    from hf_ttmoe import tt

    torch.manual_seed(0)
    layer = TTLoRALinear(torch.nn.Linear(24, 12), tt_rank=3)
    with torch.no_grad():
        for core in layer.ttlora_cores:
            core.normal_()
    builds = []
    real = tt.tt_factors_t
    monkeypatch.setattr(tt, "tt_factors_t", lambda *a: builds.append(1) or real(*a))
    x = torch.randn(5, 24)

    def reference():
        return layer.base_layer(x) + x @ layer.delta_weight().T

    with torch.no_grad():
        first, second = layer(x), layer(x)
        assert len(builds) == 1 and torch.equal(first, second) and rel_err(first, reference()) <= TOL
    optimizer = torch.optim.SGD(layer.ttlora_cores.parameters(), lr=1e-3)
    for _ in range(2):  # training forwards never use the cache, and their gradients reach every core
        layer(x).square().mean().backward()
        assert all(c.grad is not None and c.grad.abs().sum() > 0 for c in layer.ttlora_cores)
        optimizer.step()  # in place: the next inference must see the new cores
        optimizer.zero_grad()
        with torch.no_grad():
            assert not torch.equal(layer(x), first) and rel_err(layer(x), reference()) <= TOL
    layer.load_state_dict({k: torch.randn_like(v) for k, v in layer.state_dict().items() if "ttlora_" in k},
                          strict=False)
    with torch.no_grad():
        assert rel_err(layer(x), reference()) <= TOL
        built = len(builds)
        layer(x)
        assert len(builds) == built
        layer.double()  # new storages: rebuilt in the new dtype
        x = x.double()
        assert layer(x).dtype == torch.float64 and rel_err(layer(x), reference()) <= TOL


def test_load_refuses_a_different_base_or_shapes(make_expert):
    path = make_expert("bert", num_labels=3, tt_rank=3)
    with pytest.raises(ValueError, match=r"architecture .*'model_type': 'llama'.*trained on .*'model_type': 'bert'"):
        TTLoRAModel.from_pretrained(path, base_model=tiny_base("llama"))
    config = TTLoRAConfig.from_pretrained(path)
    config.tt_rank = 2
    with pytest.raises(ValueError, match=r"shape mismatches \['model\.bert\.encoder\.layer\.0.*ttlora_cores\.0: "
                                          r"\(1, 8, 3\) vs model \(1, 8, 2\)"):
        TTLoRAModel.from_pretrained(path, config=config, base_model=tiny_base("bert"))
    config = TTLoRAConfig.from_pretrained(path)
    config.layers_to_transform = [0]
    with pytest.raises(ValueError, match=r"unexpected \['model\.bert\.encoder\.layer\.1"):
        TTLoRAModel.from_pretrained(path, config=config, base_model=tiny_base("bert"))


def test_saved_expert_keeps_its_layout_when_the_automatic_one_changes(make_expert, monkeypatch, base_kind):
    path = make_expert(base_kind, tt_rank=2)
    batch = tiny_batch()
    before = TTLoRAModel.from_pretrained(path, base_model=tiny_base(base_kind, num_labels=2))(**batch).logits
    saved = TTLoRAConfig.from_pretrained(path).tt_shapes
    assert saved == {"bert": {"query": [[8, 4], [4, 8]], "value": [[8, 4], [4, 8]]},
                     "llama": {"q_proj": [[8, 4], [4, 8]], "v_proj": [[8, 4], [4, 4]]}}[base_kind]
    monkeypatch.setattr("hf_ttmoe.tt.cheapest_modes", lambda n, rank, max_mode=16: [n // 2, 2])  # a later version
    fresh = TTLoRAModel(TTLoRAConfig(num_labels=2, tt_rank=2), base_model=tiny_base(base_kind, num_labels=2))
    assert fresh.config.tt_shapes[next(iter(saved))] == [[16, 2], [2, 16]]  # the automatic layout did change
    after = TTLoRAModel.from_pretrained(path, base_model=tiny_base(base_kind, num_labels=2))(**batch).logits
    assert torch.equal(after, before)


def test_tt_shapes_keys_read_as_target_modules(tmp_path):
    """A last name ("dense") or a path in the layer ("attention.output.dense", which wins); modules that share a name
    but not a shape are recorded by path, and the recorded layouts rebuild the same expert."""
    targets = ["query", "dense"]  # BERT's dense: attention output 32x32, FFN in 32->64, FFN out 64->32
    with pytest.raises(ValueError, match=r"tt_shapes has layouts for \['attention\.query'\], which are not adapted"):
        TTLoRAModel(TTLoRAConfig(num_labels=2, target_modules=targets,
                                 tt_shapes={"attention.query": [[4, 8], [8, 4]]}),
                    base_model=tiny_base("bert", num_labels=2))
    config = TTLoRAConfig(num_labels=2, tt_rank=2, target_modules=targets,
                          tt_shapes={"query": [[2, 16], [4, 8]], "attention.output.dense": [[2, 2, 8], [8, 2, 2]]})
    model = randomize_(TTLoRAModel(config, base_model=tiny_base("bert", num_labels=2))).eval()
    layouts = {n: [m.in_modes, m.out_modes] for n, m in model.named_modules() if isinstance(m, TTLoRALinear)}
    assert layouts["model.bert.encoder.layer.1.attention.self.query"] == [[2, 16], [4, 8]]
    assert layouts["model.bert.encoder.layer.1.attention.output.dense"] == [[2, 2, 8], [8, 2, 2]]
    auto = {path: list(map(list, tt.tt_layout(i, o, rank=2)))  # what the automatic choice gives the others
            for path, (i, o) in {"intermediate.dense": (32, 64), "output.dense": (64, 32),
                                 "bert.pooler.dense": (32, 32)}.items()}  # the pooler is a "dense" too
    assert layouts["model.bert.encoder.layer.1.output.dense"] == auto["output.dense"]
    assert model.config.tt_shapes == {"attention.output.dense": [[2, 2, 8], [8, 2, 2]], "query": [[2, 16], [4, 8]],
                                      **auto}
    model.save_pretrained(tmp_path)
    loaded = TTLoRAModel.from_pretrained(tmp_path, base_model=tiny_base("bert", num_labels=2))
    assert {n: [m.in_modes, m.out_modes] for n, m in loaded.named_modules() if isinstance(m, TTLoRALinear)} == layouts
    assert torch.equal(loaded(**tiny_batch()).logits, model(**tiny_batch()).logits)


def test_failed_save_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    model = random_expert("bert")
    model.save_pretrained(tmp_path)
    before = {f: (tmp_path / f).read_bytes() for f in os.listdir(tmp_path)}

    def boom(tensors, path, metadata=None):
        open(path, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr("hf_ttmoe.saved_model.save_file", boom)
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "ttlora_" in n).add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        model.save_pretrained(tmp_path)
    assert {f: (tmp_path / f).read_bytes() for f in os.listdir(tmp_path)} == before


def test_causal_lm_expert_has_no_head_and_trains():
    model = random_expert("llama", task_type="causal_lm")
    assert model.config.modules_to_save == []
    batch = tiny_batch(pad_last=0)
    out = model(**batch, labels=batch["input_ids"])
    out.loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad)
    assert {n.split(".")[-3] for n, p in model.named_parameters() if p.requires_grad} == {"q_proj", "v_proj"}


def test_layers_to_transform_selects_layers():
    model = random_expert("llama", layers_to_transform=[1])
    layers = [n for n, m in model.named_modules() if isinstance(m, TTLoRALinear)]
    assert layers == ["model.model.layers.1.self_attn.q_proj", "model.model.layers.1.self_attn.v_proj"]


LLAMA_1B = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                num_key_value_heads=8, vocab_size=128256)
REFERENCE_SHAPES = {"q_proj": [[16, 8, 4, 4], [4, 4, 8, 16]], "v_proj": [[16, 16, 4, 2], [2, 16, 16]]}


def _llama_1b_on_meta():
    with torch.device("meta"):
        return LlamaForSequenceClassification(LlamaConfig(**LLAMA_1B, num_labels=2))


def test_paper_parameter_count_on_meta_device():
    config = TTLoRAConfig(base_model_name_or_path="meta-llama/Llama-3.2-1B", num_labels=2, tt_rank=5, alpha=16,
                          tt_shapes=REFERENCE_SHAPES)
    model = TTLoRAModel(config, base_model=_llama_1b_on_meta())
    assert model.num_parameters_by_kind()["adapter"] == 33_920
    assert all(p.device.type == "meta" for p in model.parameters())
    # automatic layouts choose the cheap order themselves: no more parameters than the hand-made reference shapes
    auto = TTLoRAModel(TTLoRAConfig(base_model_name_or_path="x", num_labels=2, tt_rank=5),
                       base_model=_llama_1b_on_meta())
    q = auto.model.model.layers[0].self_attn.q_proj
    assert q.in_modes == sorted(q.in_modes, reverse=True) and q.out_modes == sorted(q.out_modes)
    assert auto.num_parameters_by_kind()["adapter"] <= 33_920


def test_lora_r16_equivalent_count_with_peft_on_meta():
    peft = pytest.importorskip("peft")
    lora = peft.get_peft_model(_llama_1b_on_meta(), peft.LoraConfig(r=16, target_modules=["q_proj", "v_proj"]))
    assert sum(p.numel() for n, p in lora.named_parameters() if "lora_" in n) == 1_703_936
    assert 33_920 / 1_703_936 < 0.02 + 1e-4
