"""TT-LoRA MoE: composition checks, mixed-expert batches equal per-row single experts, routing, references to the
experts. Save/load, config errors and Trainer resume of the router are in test_contracts.py."""

from __future__ import annotations

import os
import re

import pytest
import torch
from conftest import rel_err, tiny_base, tiny_batch
from safetensors.torch import load_file

from hf_ttmoe import TTLoRAModel, TTLoRAMoEConfig, TTLoRAMoEModel
from hf_ttmoe.io import WEIGHTS_NAME

TOL = 1e-5
NUM_LABELS = (2, 3, 5, 4)  # label spaces differ between tasks


def save_experts(make_expert, kind, num=4, **config_kwargs):
    """`num` saved random experts whose label spaces and TT ranks differ (expert i: task{i})."""
    return [make_expert(kind, task=f"task{i}", num_labels=NUM_LABELS[i % 4], seed=100 + i, tt_rank=2 + i % 3,
                        **config_kwargs) for i in range(num)]


def compose(paths, kind, **kwargs):
    return TTLoRAMoEModel.from_experts([str(p) for p in paths], base_model=tiny_base(kind, num_labels=5), **kwargs)


@pytest.mark.parametrize("router_layer", [0, 1, 2])
def test_mixed_batch_rows_equal_their_single_expert(make_expert, base_kind, router_layer):
    paths = save_experts(make_expert, base_kind)
    moe = compose(paths, base_kind, router_layer=router_layer).eval()
    batch = tiny_batch(batch=8, pad_last=3)
    index = torch.tensor([0, 1, 2, 3, 3, 2, 1, 0])
    with torch.no_grad():
        mixed = moe(**batch, expert_index=index)
        routed = moe(**batch)
    singles = [TTLoRAModel.from_pretrained(p, base_model=tiny_base(base_kind, num_labels=n))
               for p, n in zip(paths, NUM_LABELS)]
    for row, e in enumerate(index.tolist()):
        single = singles[e]
        one = {k: v[row:row + 1] for k, v in batch.items()}
        with torch.no_grad():
            want = single(**one).logits[0]
        got = mixed.logits[row]
        assert rel_err(got[: NUM_LABELS[e]], want) <= TOL
        assert torch.isinf(got[NUM_LABELS[e]:]).all()
        assert mixed.predictions[row] == want.argmax()
    # routed forward: each row equals its own chosen expert's oracle output
    with torch.no_grad():
        again = moe(**batch, expert_index=routed.expert_index)
    assert torch.equal(torch.isinf(again.logits), torch.isinf(routed.logits))
    finite = ~torch.isinf(routed.logits)
    assert rel_err(routed.logits[finite], again.logits[finite]) <= TOL
    assert moe.rerun_prefix == (router_layer > 0)


def pair_types(batch, seed=0):
    """token_type_ids of a random sentence pair per row: segment 1 from a random position on (row 1: none)."""
    mask = batch["attention_mask"]
    g = torch.Generator().manual_seed(seed)
    types = torch.zeros_like(mask)
    for row in range(mask.shape[0]):
        if row != 1:
            length = int(mask[row].sum())
            types[row, int(torch.randint(1, length, (1,), generator=g)):length] = 1
    return types


@pytest.mark.parametrize("pooling", ["auto", "mean"])
def test_router_features_match_the_base_hidden_state(make_expert, base_kind, pooling):
    """Features = the base's own hidden state, pooled by hand: BERT "auto" is "segments" (each segment's mean side
    by side, zeros for a row without a second segment), Llama's is its last real token."""
    paths = save_experts(make_expert, base_kind, num=2)
    batch = tiny_batch(pad_last=3)
    if base_kind == "bert":
        batch["token_type_ids"] = pair_types(batch)
    for layer in (0, 1):  # (HF's hidden_states[L] of Llama has the final norm applied; ours is the layer output)
        moe = compose(paths, base_kind, router_layer=layer, pooling=pooling).eval()
        base = tiny_base(base_kind)
        with torch.no_grad():
            hidden = base(**batch, output_hidden_states=True).hidden_states[layer]  # (B, T, H), base without adapters
            feats = moe.router_features(**batch)
        mask = batch["attention_mask"].float()

        def mean(weights, hidden=hidden):
            return (hidden * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp_min(1)

        if pooling == "mean":
            want = mean(mask)
        elif base_kind == "llama":
            assert moe.pooling == moe.config.pooling == "last"
            last = mask.sum(1).long() - 1
            want = hidden[torch.arange(4), last]
        else:
            assert moe.pooling == moe.config.pooling == "segments"  # resolved, and saved so
            second = mask * batch["token_type_ids"]
            want = torch.cat([mean(mask - second), mean(second)], -1)
            assert feats.shape == (4, 2 * hidden.shape[-1]) and not want[1, hidden.shape[-1]:].any()
        assert rel_err(feats, want) <= TOL
        assert moe.router.router_net.in_features == feats.shape[1]


def test_segment_pooling_needs_token_types(make_expert):
    paths = save_experts(make_expert, "llama", num=2)
    with pytest.raises(ValueError, match=r"pooling='segments'.*type_vocab_size=0.*'mean', 'last' or 'auto'"):
        compose(paths, "llama", pooling="segments")
    with pytest.raises(ValueError, match=r"pooling='max' is not one of"):
        TTLoRAMoEConfig(pooling="max")


def test_saved_router_keeps_its_pooling(make_expert, tmp_path):
    """A router saved with segment pooling loads with it; a config without a pooling (saved before "segments"
    existed) still means mean pooling on an encoder, and loads its H-wide router."""
    paths = save_experts(make_expert, "bert", num=2)
    batch = tiny_batch(pad_last=3)
    batch["token_type_ids"] = pair_types(batch)
    for pooling in ("auto", None):
        moe = compose(paths, "bert", pooling=pooling).eval()
        torch.nn.init.normal_(moe.router.router_net.weight)
        moe.save_pretrained(tmp_path / str(pooling))
        again = TTLoRAMoEModel.from_pretrained(tmp_path / str(pooling), base_model=tiny_base("bert", num_labels=5))
        assert again.pooling == moe.pooling == ("segments" if pooling else "mean")
        with torch.no_grad():
            assert torch.equal(again(**batch).expert_index, moe(**batch).expert_index)
            assert rel_err(again.router_features(**batch), moe.router_features(**batch)) <= TOL


def test_compatibility_errors_name_the_expert(make_expert, tmp_path):
    paths = save_experts(make_expert, "bert", num=2)
    other = save_experts(make_expert, "llama", num=1)
    with pytest.raises(ValueError, match=rf"Expert '{re.escape(str(other[0]))}' \(task 'task0'\) is not compatible "
                                         rf"with expert '{re.escape(str(paths[0]))}'.*signature"):
        TTLoRAMoEModel.from_experts([str(paths[0]), str(other[0])], base_model=tiny_base("bert"))
    layer0 = save_experts(make_expert, "bert", num=1, layers_to_transform=[0])
    with pytest.raises(ValueError, match="adapted modules"):
        TTLoRAMoEModel.from_experts([str(paths[0]), str(layer0[0])], base_model=tiny_base("bert"))
    with pytest.raises(ValueError, match="same task name"):
        TTLoRAMoEModel.from_experts([str(paths[0]), str(paths[0])], base_model=tiny_base("bert"))
    with pytest.raises(FileNotFoundError, match="Expert '.*missing'"):
        TTLoRAMoEModel.from_experts([str(tmp_path / "missing")], base_model=tiny_base("bert"))


def test_router_trains_only_router_and_learns_task_ids(make_expert):
    paths = save_experts(make_expert, "bert", num=2)
    moe = compose(paths, "bert", router_layer=0, noisy_gating=True)
    trainable = [n for n, p in moe.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("router.router_") for n in trainable)
    # two "tasks" with disjoint vocabularies: the embedding router separates them
    g = torch.Generator().manual_seed(0)
    ids = torch.cat([torch.randint(1, 50, (32, 8), generator=g), torch.randint(50, 100, (32, 8), generator=g)])
    task_ids = torch.tensor([0] * 32 + [1] * 32)
    opt = torch.optim.Adam([p for p in moe.parameters() if p.requires_grad], lr=5e-2)
    moe.train()
    for _ in range(100):
        out = moe(input_ids=ids, attention_mask=torch.ones_like(ids), task_ids=task_ids)
        assert out.logits is None  # router-only training forward
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    moe.eval()
    with torch.no_grad():
        out = moe(input_ids=ids, attention_mask=torch.ones_like(ids))
    assert (out.expert_index == task_ids).float().mean() >= 0.95
    assert [t for t, _ in moe.decode(out)][:1] == ["task0"]


def test_saved_router_references_its_experts_instead_of_copying_them(make_expert, tmp_path):
    paths = save_experts(make_expert, "bert", num=3)
    moe = compose(paths, "bert", router_layer=1, router_type="mlp")
    moe.save_pretrained(tmp_path / "moe")
    saved = load_file(tmp_path / "moe" / WEIGHTS_NAME)
    assert set(saved) == set(moe.router.state_dict(prefix="router."))  # router only, no expert copies
    config = TTLoRAMoEConfig.from_pretrained(tmp_path / "moe")
    assert [e["repo_id"] for e in config.experts] == ["../experts/expert0", "../experts/expert1", "../experts/expert2"]
    moved = tmp_path / "moved"  # the references are relative: router and experts move together
    moved.mkdir()
    for name in ("experts", "moe"):
        (tmp_path / name).rename(moved / name)
    reloaded = TTLoRAMoEModel.from_pretrained(moved / "moe", base_model=tiny_base("bert", num_labels=5))
    assert [os.path.abspath(e.path) for e in reloaded.expert_sources] == [str(moved / "experts" / f"expert{i}")
                                                                          for i in range(3)]


def test_add_and_remove_experts_keep_router_rows(make_expert):
    paths = save_experts(make_expert, "bert", num=3)
    moe = compose(paths[:2], "bert")
    with torch.no_grad():
        moe.router.router_net.weight.normal_()
    row1 = moe.router.router_net.weight[1].clone()
    bigger = moe.add_expert(str(paths[2]))
    assert bigger.tasks == ["task0", "task1", "task2"] and bigger.router.router_net.weight.shape[0] == 3
    assert torch.equal(bigger.router.router_net.weight[1], row1)
    smaller = bigger.remove_expert("task0")
    assert smaller.tasks == ["task1", "task2"] and torch.equal(smaller.router.router_net.weight[0], row1)
    with pytest.raises(ValueError, match="No expert for task 'nope'"):
        smaller.remove_expert("nope")


def test_composing_many_experts_builds_no_module_per_expert(make_expert, monkeypatch):
    """Composing stacks the experts' factors into the layers the base already has: 64 experts build exactly the
    modules 4 do (no model, layer or head per expert), and each adapted linear holds all 64 factor pairs."""
    paths = [str(p) for p in save_experts(make_expert, "bert", num=4)]
    built = []
    init = torch.nn.Module.__init__

    def counting_init(self, *args, **kwargs):
        built.append(type(self).__name__)
        init(self, *args, **kwargs)

    def compose_counting(num):
        entries = [{"repo_id": paths[i % 4], "task": f"t{i}"} for i in range(num)]
        base = tiny_base("bert", num_labels=5)
        built.clear()
        with monkeypatch.context() as patch:
            patch.setattr(torch.nn.Module, "__init__", counting_init)
            moe = TTLoRAMoEModel.from_experts(entries, base_model=base)
        return moe, sorted(built)

    (few, few_built), (many, many_built) = compose_counting(4), compose_counting(64)
    assert many.config.num_experts == 64 and many_built == few_built
    assert len(list(many.modules())) == len(list(few.modules()))
    linears = [m for _, m in many.mixed_layers() if hasattr(m, "expert_u")]  # the head is the other mixed layer
    assert len(linears) == 4 and all(m.expert_u.shape[0] == m.expert_v.shape[0] == 64 for m in linears)


def test_a_pool_of_18_experts_launches_what_one_expert_does(make_expert):
    """The routed mixed-batch forward is one pass whatever the pool: a batch spread over 18 experts runs exactly the
    ATen ops the same batch does with one expert (the bound on 18 experts' inference cost vs 1; times in
    benchmarks/README.md, "Mixed-expert batches")."""
    from hf_ttmoe.testing import top_level_ops

    paths = [str(p) for p in save_experts(make_expert, "bert", num=4)]
    batch = tiny_batch(batch=18, pad_last=3)

    def pool(num):
        entries = [{"repo_id": paths[i % 4], "task": f"t{i}"} for i in range(num)]
        return TTLoRAMoEModel.from_experts(entries, base_model=tiny_base("bert", num_labels=5)).eval()

    one, many = pool(1), pool(18)
    with torch.no_grad():
        assert len(set(many(**batch, expert_index=torch.arange(18)).expert_index.tolist())) == 18
        counts = {"routed, 1": top_level_ops(lambda: one(**batch)), "routed, 18": top_level_ops(lambda: many(**batch)),
                  "by hand, 1": top_level_ops(lambda: one(**batch, expert_index=[0] * 18)),
                  "by hand, 18 distinct": top_level_ops(lambda: many(**batch, expert_index=list(range(18))))}
    assert counts["routed, 18"] == counts["routed, 1"], counts
    assert counts["by hand, 18 distinct"] == counts["by hand, 1"], counts


def test_training_on_cached_features_equals_training_through_the_model(make_expert):
    from hf_ttmoe.ttlora_moe import compute_router_features, train_router_on_features

    paths = save_experts(make_expert, "bert", num=3)
    batch = tiny_batch(batch=6)
    batch["token_type_ids"] = pair_types(batch)
    task_ids = torch.tensor([0, 1, 2, 0, 1, 2])
    models = [compose(paths, "bert", router_layer=1, noisy_gating=False, router_aux_loss_coef=0.1) for _ in range(2)]
    models[1].router.load_state_dict(models[0].router.state_dict())
    through = models[0].train()
    opt = torch.optim.AdamW(through.router.parameters(), lr=1e-2, weight_decay=0.0)
    loss = through(**batch, task_ids=task_ids).loss
    loss.backward()
    opt.step()
    features, ids = compute_router_features(models[1], [{**batch, "task_ids": task_ids}])
    assert torch.equal(ids, task_ids) and features.shape == (6, 64)  # two segments of 32
    history = train_router_on_features(models[1], features, ids, epochs=1, lr=1e-2, batch_size=6)
    assert history[0] == pytest.approx(loss.item(), rel=1e-6)
    for (n, a), b in zip(through.router.named_parameters(), models[1].router.parameters()):
        assert rel_err(a.detach(), b.detach()) <= 1e-6, n


def test_trainer_with_expert_freezing_trains_only_the_router(make_expert, tmp_path):
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    from trainer_callbacks import ExpertFreezingCallback

    paths = save_experts(make_expert, "bert", num=2)
    moe = compose(paths, "bert", router_layer=0)
    g = torch.Generator().manual_seed(0)
    ids = torch.cat([torch.randint(1, 50, (16, 8), generator=g), torch.randint(50, 100, (16, 8), generator=g)])
    data = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist(),
                              "task_ids": [0] * 16 + [1] * 16})
    args = TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=5, per_device_train_batch_size=8,
                             learning_rate=1e-2, report_to=[], use_cpu=True, label_names=["task_ids"],
                             save_strategy="no", logging_steps=1)
    before = {n: p.detach().clone() for n, p in moe.named_parameters()}
    trainer = Trainer(model=moe, args=args, train_dataset=data, callbacks=[ExpertFreezingCallback()])
    trainer.train()
    changed = {n for n, p in moe.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith("router.router_") for n in changed)
    assert trainer.state.trainable_parameters == sum(p.numel() for p in moe.router.parameters())
    # an optimizer built over weights that must stay frozen is refused
    moe.requires_grad_(True)
    trainer = Trainer(model=moe, args=args, train_dataset=data, callbacks=[ExpertFreezingCallback()])
    with pytest.raises(RuntimeError, match="optimizer holds .* frozen parameters"):
        trainer.train()
