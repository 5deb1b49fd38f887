"""Never a silent wrong model (issue #12): a saved model's two files are bound to each other, merging is exact and
guarded, every value is checked where it enters, a recomposed MoE cannot run stale layers, and files get the user's
umask. Each case of the issue's table is one test (or one row of a parametrized one) here."""

from __future__ import annotations

import json
import logging
import os
import re
import stat

import pytest
import torch
from conftest import random_expert, randomize_, rel_err, tiny_base, tiny_batch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from test_hub import good_expert, hub, name, server  # noqa: F401  (the local Hub's fixtures)
from transformers import AutoModel

import hf_ttmoe.io.files
import hf_ttmoe.ttlora_moe.model
from hf_ttmoe import DenseMoELoRAConfig, TTLoRAConfig, TTLoRALinear, TTLoRAModel, TTLoRAMoEModel
from hf_ttmoe.io import (
    CONFIG_DIGEST_KEY,
    CONFIG_NAME,
    WEIGHTS_DIGEST_KEY,
    WEIGHTS_NAME,
    CorruptExpertError,
    ExpertNotFoundError,
    IncompatibleExpertError,
    config_digest,
    file_sha256,
    write_model_card,
)

TOL = 1e-5
NOT_TOGETHER = "config.json and model.safetensors do not belong together"


def moe_of(paths, **kwargs) -> TTLoRAMoEModel:
    return TTLoRAMoEModel.from_experts([str(p) for p in paths], base_model=tiny_base("bert", num_labels=3),
                                       **kwargs).eval()


def flip_tensor_bytes(data: bytes, count: int = 100) -> bytes:
    """`data` (a safetensors file) with `count` bytes of its tensor data inverted; the header stays valid."""
    start = 8 + int.from_bytes(data[:8], "little") + 10  # 10 bytes into the tensor data
    assert len(data) - start > count
    return data[:start] + bytes(b ^ 0xFF for b in data[start: start + count]) + data[start + count:]


def strip_digests(path) -> None:
    """Make a saved folder look like one written before digests existed."""
    config = json.loads((path / CONFIG_NAME).read_text())
    del config[WEIGHTS_DIGEST_KEY]
    (path / CONFIG_NAME).write_text(json.dumps(config))
    save_file(load_file(path / WEIGHTS_NAME), path / WEIGHTS_NAME)


def edit_config(path, **changes) -> None:
    config = json.loads((path / CONFIG_NAME).read_text())
    (path / CONFIG_NAME).write_text(json.dumps({**config, **changes}))


# ----- 1. weights bound to their config -----


def test_each_file_records_the_others_digest_which_stays_out_of_the_live_config(make_expert):
    path = make_expert()
    saved = json.loads((path / CONFIG_NAME).read_text())
    assert saved[WEIGHTS_DIGEST_KEY] == file_sha256(path / WEIGHTS_NAME)
    with safe_open(path / WEIGHTS_NAME, "pt") as f:
        assert f.metadata()[CONFIG_DIGEST_KEY] == config_digest(saved)
    for model in (TTLoRAModel.from_pretrained(path, base_model=tiny_base("bert", num_labels=2)),
                  AutoModel.from_pretrained(path, base_model=tiny_base("bert", num_labels=2))):
        assert not hasattr(model.config, WEIGHTS_DIGEST_KEY)
        assert WEIGHTS_DIGEST_KEY not in model.config.to_dict()
    assert TTLoRAModel.from_pretrained(path, base_model=tiny_base("bert", num_labels=2)).config == model.config


def test_a_crash_between_replacing_the_weights_and_the_config_is_caught(make_expert, monkeypatch):
    path = make_expert(alpha=16.0)
    newer = random_expert(alpha=4.0, seed=1)  # same shapes, other alpha
    real = hf_ttmoe.io.files.atomic_write

    def crash_before_config(target, write):
        if os.path.basename(target) == CONFIG_NAME:
            raise KeyboardInterrupt("killed between the two renames")
        real(target, write)

    monkeypatch.setattr(hf_ttmoe.io.files, "atomic_write", crash_before_config)
    with pytest.raises(KeyboardInterrupt):
        newer.save_pretrained(path)
    monkeypatch.undo()
    assert json.loads((path / CONFIG_NAME).read_text())["alpha"] == 16.0  # old config, new weights
    with pytest.raises(CorruptExpertError, match=rf"TTLoRAModel '{re.escape(str(path))}': {NOT_TOGETHER}"):
        TTLoRAModel.from_pretrained(path, base_model=tiny_base("bert", num_labels=2))
    with pytest.raises(CorruptExpertError, match=rf"Expert '{re.escape(str(path))}': {NOT_TOGETHER}"):
        moe_of([path])
    newer.save_pretrained(path)  # a complete save makes the folder whole again
    TTLoRAModel.from_pretrained(path, base_model=tiny_base("bert", num_labels=2))


def test_flipped_tensor_bytes_in_a_local_folder_are_caught(make_expert):
    path = make_expert()
    (path / WEIGHTS_NAME).write_bytes(flip_tensor_bytes((path / WEIGHTS_NAME).read_bytes()))
    match = r"model.safetensors is corrupted: its bytes hash to"
    with pytest.raises(CorruptExpertError, match=match):
        TTLoRAModel.from_pretrained(path, base_model=tiny_base("bert", num_labels=2))
    with pytest.raises(CorruptExpertError, match=match):
        moe_of([path])


def test_a_checkpoint_saved_before_digests_loads_with_a_one_line_notice(make_expert, caplog):
    path = make_expert()
    want = TTLoRAModel.from_pretrained(path, base_model=tiny_base("bert", num_labels=2))(**tiny_batch()).logits
    strip_digests(path)
    with caplog.at_level(logging.WARNING, logger="hf_ttmoe"):
        got = TTLoRAModel.from_pretrained(path, base_model=tiny_base("bert", num_labels=2))(**tiny_batch()).logits
    assert torch.equal(got, want)
    notices = [r.getMessage() for r in caplog.records if "saved without digests" in r.getMessage()]
    assert len(notices) == 1 and "\n" not in notices[0]
    moe_of([path])  # composing reads it the same way


@pytest.mark.parametrize("digests", [True, False])
def test_from_experts_refuses_an_edited_rank_as_from_pretrained_does(make_expert, digests):
    path = make_expert(tt_rank=2)
    if not digests:
        strip_digests(path)
    edit_config(path, tt_rank=3)
    if digests:  # both refuse the pair
        pretrained, composed = (CorruptExpertError, NOT_TOGETHER), (CorruptExpertError, NOT_TOGETHER)
    else:  # both refuse cores that do not fit the config
        pretrained = (ValueError, "shape mismatches")
        composed = (IncompatibleExpertError, r"TT ranks \[1, 2, 2, 2, 1\].*tt_rank=3 gives \[1, 3, 3, 3, 1\]")
    with pytest.raises(pretrained[0], match=pretrained[1]):
        TTLoRAModel.from_pretrained(path, base_model=tiny_base("bert", num_labels=2))
    with pytest.raises(composed[0], match=composed[1]):
        moe_of([path])


def test_hub_weights_of_another_save_or_with_flipped_bytes_are_refused(hub, good_expert, tmp_path):  # noqa: F811
    repo, data = good_expert
    random_expert(task="good", alpha=4.0, seed=3).save_pretrained(tmp_path / "other")  # same shapes, other config
    hub.server.put_file(repo, WEIGHTS_NAME, (tmp_path / "other" / WEIGHTS_NAME).read_bytes(), message="half a save")
    with pytest.raises(CorruptExpertError, match=rf"TTLoRAModel '{repo}': {NOT_TOGETHER}"):
        TTLoRAModel.from_pretrained(repo, base_model=tiny_base("bert", num_labels=2))
    with pytest.raises(CorruptExpertError, match=rf"Expert '{repo}': {NOT_TOGETHER}"):
        moe_of([repo])
    hub.server.put_file(repo, WEIGHTS_NAME, flip_tensor_bytes(data), message="bytes flipped in the repo")
    with pytest.raises(CorruptExpertError, match=rf"Expert '{repo}'.*model.safetensors is corrupted: its bytes"):
        moe_of([repo])


def test_a_folder_without_config_json_is_named(make_expert):
    path = make_expert()
    (path / CONFIG_NAME).unlink()
    with pytest.raises(FileNotFoundError, match="has no config.json: it is not a saved hf_ttmoe model"):
        TTLoRAModel.from_pretrained(path, base_model=tiny_base("bert", num_labels=2))
    with pytest.raises(ExpertNotFoundError, match="has no config.json"):
        moe_of([path])


# ----- 2. merge safety -----


@pytest.mark.parametrize("dtype, tol", [(torch.float32, TOL), (torch.bfloat16, 5e-2)])
def test_unmerge_restores_the_base_weights_bit_for_bit(base_kind, dtype, tol):
    model = random_expert(base_kind).to(dtype)
    weights = {n: p.clone() for n, p in model.named_parameters() if "base_layer" in n}
    batch = tiny_batch()
    with torch.no_grad():
        unmerged = model(**batch).logits
        model.merge()
        merged = model(**batch).logits
        model.unmerge()
    assert rel_err(merged, unmerged) <= tol
    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters() if n in weights)


def test_adapter_changes_while_merged_are_merged_anew_and_unmerge_stays_exact(base_kind):
    model, other = random_expert(base_kind, seed=0), random_expert(base_kind, seed=1)  # same base weights
    weights = {n: p.clone() for n, p in model.named_parameters() if "base_layer" in n}
    batch = tiny_batch()
    with torch.no_grad():
        model.merge()
        model.load_adapter_state_dict(other.adapter_state_dict())
        assert rel_err(model(**batch).logits, other(**batch).logits) <= TOL
        for layer in model.adapter_layers():  # an in-place edit, as an optimizer step makes it
            layer.ttlora_cores[0].mul_(0.5)
        merged = model(**batch).logits
        model.unmerge()
        assert rel_err(model(**batch).logits, merged) <= TOL
    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters() if n in weights)


def test_training_a_merged_model_is_refused():
    model = random_expert("bert")
    batch = tiny_batch()
    model.merge()
    model.train()
    with pytest.raises(RuntimeError, match=r"is merged: training it would train nothing.*unmerge\(\)"):
        model(**batch, labels=torch.tensor([0, 1, 0, 1]))
    with torch.no_grad():
        model(**batch)
    model.eval()(**batch)
    model.unmerge()
    model.train()(**batch, labels=torch.tensor([0, 1, 0, 1])).loss.backward()


def test_safe_merge_refuses_non_finite_weights_and_merges_nothing():
    model = random_expert("bert")
    layer = model.adapter_layers()[-1]
    with torch.no_grad():
        layer.ttlora_cores[0][0, 0, 0] = float("nan")
    weights = {n: p.clone() for n, p in model.named_parameters() if "base_layer" in n}
    match = rf"{re.escape(layer.name)}: merging would write non-finite values"
    with pytest.raises(ValueError, match=match):
        model.merge(safe_merge=True)
    with pytest.raises(ValueError, match=match):
        layer.merge(safe_merge=True)
    assert not any(m.merged for m in model.adapter_layers())
    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters() if n in weights)


# ----- 3. every value checked where it enters -----


CONFIG_ERRORS = [  # (config class, kwargs, what the error must say)
    (TTLoRAConfig, {"num_labels": 0}, r"num_labels=0 must be an int >= 1"),
    (TTLoRAConfig, {"num_labels": -1}, r"num_labels=-1 must be an int >= 1"),
    (DenseMoELoRAConfig, {"num_labels": 0}, r"num_labels=0"),
    (TTLoRAConfig, {"num_labels": None, "id2label": {}}, r"num_labels=0 .*at least 1 label"),
    (TTLoRAConfig, {"tt_rank": 2.5}, r"tt_rank=2.5 must be a positive int"),
    (TTLoRAConfig, {"tt_rank": "3"}, r"tt_rank='3' must be a positive int"),
    (TTLoRAConfig, {"tt_rank": [2, 1.5]}, r"tt_rank=\[2, 1.5\] must be"),
    (TTLoRAConfig, {"tt_rank": True}, r"tt_rank=True must be"),
    (TTLoRAConfig, {"alpha": -5}, r"alpha=-5 must be a finite number > 0"),
    (TTLoRAConfig, {"alpha": "x"}, r"alpha='x' must be a finite number > 0"),
    (TTLoRAConfig, {"alpha": float("nan")}, r"alpha=nan must be"),
    (TTLoRAConfig, {"layers_to_transform": [0, 1.5]}, r"layers_to_transform=\[0, 1.5\] must be None"),
    (TTLoRAConfig, {"layers_to_transform": ["0"]}, r"layers_to_transform=\['0'\] must be None"),
    (TTLoRAConfig, {"tt_shapes": [[4, 8], [8, 4]]}, r"tt_shapes=\[\[4, 8\], \[8, 4\]\] must be a dict"),
    (TTLoRAConfig, {"tt_shapes": {"query": [4, 8]}}, r"tt_shapes\['query'\]=\[4, 8\] must be \[in_modes, out_modes\], "
                                                       r"two non-empty lists of positive ints"),
    (TTLoRAConfig, {"tt_shapes": {"query": [[4, 8.5], [8, 4]]}}, r"tt_shapes\['query'\]=\[\[4, 8.5\], \[8, 4\]\]"),
    (TTLoRAConfig, {"tt_shapes": {"query": [[4, "8"], [8, 4]]}}, r"tt_shapes\['query'\]=\[\[4, '8'\], \[8, 4\]\]"),
    (TTLoRAConfig, {"tt_shapes": {"query": [[], [32]]}}, r"tt_shapes\['query'\]=\[\[\], \[32\]\] must"),
    (TTLoRAConfig, {"tt_shapes": {"query": [[0, 32], [32]]}}, r"tt_shapes\['query'\]=\[\[0, 32\], \[32\]\] must"),
    (TTLoRAConfig, {"tt_shapes": {"query": [[True, 32], [32]]}}, r"tt_shapes\['query'\]=\[\[True, 32\], \[32\]\]"),
    (TTLoRAConfig, {"base_model_name_or_path": 3}, r"base_model_name_or_path=3 must be a Hub id"),
]


@pytest.mark.parametrize("config_cls, kwargs, match", CONFIG_ERRORS, ids=[str(c[1]) for c in CONFIG_ERRORS])
def test_config_values_are_checked_at_construction(config_cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        config_cls(**{k: v for k, v in {"num_labels": 2, **kwargs}.items() if v is not None})


BUILD_ERRORS = [  # (TTLoRAConfig kwargs on the 2-layer tiny BERT, what the error must say)
    ({"layers_to_transform": [0, 7]}, r"layers_to_transform=\[0, 7\]: \[7\] beyond the 2 layers .*valid indices: "
                                      r"0..1"),
    ({"tt_shapes": {"qeury": [[4, 8], [8, 4]]}}, r"tt_shapes has layouts for \['qeury'\], which are not adapted .*"
                                                 r"adapted: \['query', 'value'\]"),
    ({"tt_rank": 10**6}, r"tt_rank=1000000 gives .*query [\d,]+ TT parameters .*more than its dense ΔW's 1,024"),
]


@pytest.mark.parametrize("kwargs, match", BUILD_ERRORS, ids=[str(k) for k, _ in BUILD_ERRORS])
def test_values_that_depend_on_the_base_are_checked_when_building(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TTLoRAModel(TTLoRAConfig(num_labels=3, **kwargs), base_model=tiny_base("bert"))


def test_a_rank_above_the_full_tt_rank_is_clipped_with_a_warning(tmp_path, caplog):
    config = TTLoRAConfig(base_model_name_or_path="tiny-bert", num_labels=3, tt_rank=4,
                          tt_shapes={"query": [[2, 16], [16, 2]]})  # the bonds next to the 2s hold rank 2 at most
    with caplog.at_level(logging.WARNING, logger="hf_ttmoe"):
        model = randomize_(TTLoRAModel(config, base_model=tiny_base("bert"))).eval()
    warnings = [r.getMessage() for r in caplog.records if "exceeds the full TT rank" in r.getMessage()]
    assert len(warnings) == 2 and "bert.encoder.layer.0.attention.self.query: tt_rank=4" in warnings[0]
    assert "[1, 2, 32, 2, 1]" in warnings[0] and "clipped to [1, 2, 4, 2, 1]" in warnings[0]
    query = model.model.bert.encoder.layer[0].attention.self.query
    assert query.ranks == [1, 2, 4, 2, 1]
    model.save_pretrained(tmp_path)  # the same clipping on reload: the saved cores fit
    reloaded = TTLoRAModel.from_pretrained(tmp_path, base_model=tiny_base("bert"))
    assert torch.equal(reloaded(**tiny_batch()).logits, model(**tiny_batch()).logits)


@pytest.mark.parametrize("path", ["./no/such/base", "/no/such/base", "../no-such-base", "runs/no/such/base"])
def test_a_local_path_that_does_not_exist_says_so_before_any_hub_lookup(path):
    with pytest.raises(FileNotFoundError, match=rf"base_model_name_or_path='{re.escape(path)}': no such directory"):
        TTLoRAModel(TTLoRAConfig(base_model_name_or_path=path, num_labels=2))
    with pytest.raises(ExpertNotFoundError, match=rf"TTLoRAModel '{re.escape(path)}': no such directory"):
        TTLoRAModel.from_pretrained(path)
    with pytest.raises(ExpertNotFoundError, match=rf"Expert '{re.escape(path)}': no such directory"):
        TTLoRAMoEModel.from_experts([path])


def test_a_pathlib_base_path_is_stored_as_str_and_saves(tmp_path):
    tiny_base("bert").save_pretrained(tmp_path / "base")
    config = TTLoRAConfig(base_model_name_or_path=tmp_path / "base", num_labels=3, tt_rank=2)
    assert config.base_model_name_or_path == str(tmp_path / "base")
    model = randomize_(TTLoRAModel(config)).eval()
    model.save_pretrained(tmp_path / "expert")
    reloaded = TTLoRAModel.from_pretrained(tmp_path / "expert")
    assert torch.equal(reloaded(**tiny_batch()).logits, model(**tiny_batch()).logits)
    moe = TTLoRAMoEModel.from_experts([{"repo_id": tmp_path / "expert", "task": "a"}])  # Path entries too
    assert moe.config.experts[0]["repo_id"] == str(tmp_path / "expert")
    moe.save_pretrained(tmp_path / "router")


def test_a_base_checkpoint_with_a_head_of_another_size_gets_a_new_head(tmp_path, caplog):
    tiny_base("bert", num_labels=2).save_pretrained(tmp_path / "base")  # a fine-tuned 2-label classifier
    with caplog.at_level(logging.WARNING, logger="hf_ttmoe"):
        model = TTLoRAModel(TTLoRAConfig(base_model_name_or_path=str(tmp_path / "base"), num_labels=3, tt_rank=2))
    assert "carries a classification head with another number of labels than this model's 3" in caplog.text
    assert model.model.classifier.out_features == 3 and model.config.modules_to_save == ["classifier"]
    randomize_(model).eval().save_pretrained(tmp_path / "expert")
    reloaded = TTLoRAModel.from_pretrained(tmp_path / "expert")
    assert torch.equal(reloaded(**tiny_batch()).logits, model(**tiny_batch()).logits)
    moe = TTLoRAMoEModel.from_experts([tmp_path / "expert"]).eval()  # the MoE loads the base the same way
    out = moe(**tiny_batch(), expert_index=[0, 0, 0, 0])
    assert rel_err(out.logits, model(**tiny_batch()).logits) <= TOL
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hf_ttmoe"):  # the same label count: the base's head is kept
        TTLoRAModel(TTLoRAConfig(base_model_name_or_path=str(tmp_path / "base"), num_labels=2, tt_rank=2))
    assert "classification head" not in caplog.text


def test_a_dequantized_gguf_base_trains_through_peft_and_a_quantized_one_keeps_its_mark(tmp_path, monkeypatch):
    """A GGUF base arrives as plain float weights (no GGUF kernels here) but with its quantizer attached, and Trainer
    refused a PEFT LoRA over it ("quantized with gguf ... do not support training"): the loader drops the mark."""
    import peft
    from transformers import AutoModelForSequenceClassification
    from transformers.quantizers.quantizer_gguf import GgufHfQuantizer
    from transformers.trainer_utils import validate_quantization_for_training
    from transformers.utils.quantization_config import GgufConfig

    import hf_ttmoe.adapter

    tiny_base("llama", num_labels=2).save_pretrained(tmp_path / "base")
    load = AutoModelForSequenceClassification.from_pretrained

    def as_gguf(*args, **kwargs):  # what from_pretrained(..., gguf_file=) returns without the GGUF kernels
        model, info = load(*args, **kwargs)
        model.hf_quantizer = GgufHfQuantizer(GgufConfig())
        model.is_quantized, model.config.quantization_config = True, model.hf_quantizer.quantization_config
        return model, info

    monkeypatch.setattr(hf_ttmoe.adapter.AutoModelForSequenceClassification, "from_pretrained", as_gguf)
    marked, _ = as_gguf(tmp_path / "base", output_loading_info=True)
    with pytest.raises(ValueError, match="do not support training"):  # the failure this guards against
        validate_quantization_for_training(peft.get_peft_model(marked, peft.LoraConfig(target_modules=["q_proj"])))
    base = hf_ttmoe.adapter.load_base_model(TTLoRAConfig(base_model_name_or_path=str(tmp_path / "base"), num_labels=2))
    assert not base.is_quantized and getattr(base, "hf_quantizer", None) is None
    validate_quantization_for_training(peft.get_peft_model(base, peft.LoraConfig(target_modules=["q_proj"])))
    still_packed, _ = as_gguf(tmp_path / "base", output_loading_info=True)
    still_packed.model.layers[0].mlp.register_parameter(
        "blocks", torch.nn.Parameter(torch.zeros(4, dtype=torch.uint8), requires_grad=False))
    assert hf_ttmoe.adapter._unmark_dequantized(still_packed).hf_quantizer is not None  # quantized blocks: kept


INDEX_ERRORS = [  # (value for a batch of 4 over 2 experts, error, what it must say)
    (torch.tensor([0, 1, 0, -1]), ValueError, r"holds \[-1\], outside 0..1.*-1 does not mean the last expert"),
    (torch.tensor([0, 1, 0, 2]), ValueError, r"holds \[2\], outside 0..1"),
    (torch.tensor([0, 1]), ValueError, r"has shape \(2,\), not \(4,\)"),
    (torch.tensor(0), ValueError, r"has shape \(\), not \(4,\)"),
    (torch.tensor([[0, 1, 0, 1]]), ValueError, r"has shape \(1, 4\), not \(4,\)"),
    (torch.tensor([0.0, 1.0, 0.0, 1.0]), TypeError, r"must be one expert id per row: 4 ints in 0..1"),
    ([0, 1, 0.5, 1], TypeError, r"=\[0, 1, 0.5, 1\] must be one expert id per row"),
    (1, TypeError, r"must be one expert id per row.*got int"),
]


@pytest.mark.parametrize("argument", ["expert_index", "task_ids"])
@pytest.mark.parametrize("value, error, match", INDEX_ERRORS, ids=[str(i) for i in range(len(INDEX_ERRORS))])
def test_expert_index_and_task_ids_are_checked(make_expert, argument, value, error, match):
    moe = moe_of([make_expert(task="a"), make_expert(task="b", num_labels=3, seed=1)])
    with pytest.raises(error, match=rf"{argument}.*{match}" if error is TypeError else rf"{argument} {match}"):
        moe(**tiny_batch(), **{argument: value})


def test_expert_index_as_a_list_equals_the_tensor(make_expert):
    moe = moe_of([make_expert(task="a"), make_expert(task="b", num_labels=3, seed=1)])
    with torch.no_grad():
        listed = moe(**tiny_batch(), expert_index=[0, 1, 1, 0], task_ids=[0, 1, 1, 0])
        tensor = moe(**tiny_batch(), expert_index=torch.tensor([0, 1, 1, 0]))
    assert torch.equal(listed.logits, tensor.logits)
    assert moe.decode(listed)[1][0] == "b"


def test_add_and_remove_expert_keep_the_mode_and_retire_the_old_model(make_expert, tmp_path):
    paths = [make_expert(task="a"), make_expert(task="b", num_labels=3, seed=1), make_expert(task="c", seed=2)]
    moe_of(paths[:2]).save_pretrained(tmp_path / "router")
    loaded = TTLoRAMoEModel.from_pretrained(tmp_path / "router", base_model=tiny_base("bert", num_labels=3))
    assert not loaded.training
    bigger = loaded.add_expert(str(paths[2]))
    assert not bigger.training and bigger.tasks == ["a", "b", "c"]
    batch, index = tiny_batch(), torch.tensor([0, 1, 2, 1])
    for call in (lambda: loaded(**batch), lambda: loaded(**batch, expert_index=index[:2].repeat(2) % 2),
                 lambda: loaded.router_features(**batch), lambda: loaded.add_expert(str(paths[2]))):
        with pytest.raises(RuntimeError, match="gave its base model to the model add_expert.*use the returned model"):
            call()
    with torch.no_grad():
        assert torch.equal(bigger(**batch, expert_index=index).logits,
                           moe_of(paths)(**batch, expert_index=index).logits)
    smaller = bigger.train().remove_expert("b")
    assert smaller.training and smaller.tasks == ["a", "c"]
    with pytest.raises(RuntimeError, match="use the returned model"):
        bigger(**batch)


def test_a_failed_add_expert_leaves_the_model_working(make_expert, monkeypatch):
    paths = [make_expert(task="a"), make_expert(task="b", num_labels=3, seed=1), make_expert(task="c", seed=2)]
    moe = moe_of(paths[:2])
    batch, index = tiny_batch(), torch.tensor([0, 1, 1, 0])
    with torch.no_grad():
        want = moe(**batch, expert_index=index).logits
    with pytest.raises(IncompatibleExpertError, match="base_model_signature"):  # refused before the base is touched
        moe.add_expert(str(make_expert("llama", task="d")))

    def broken(*args, **kwargs):
        raise IncompatibleExpertError("cores do not fit")

    monkeypatch.setattr(hf_ttmoe.ttlora_moe.model, "stacked_factors", broken)  # fails after the base was taken
    with pytest.raises(IncompatibleExpertError, match="cores do not fit"):
        moe.add_expert(str(paths[2]))
    with torch.no_grad():
        assert torch.equal(moe(**batch, expert_index=index).logits, want)
        assert moe(**batch).logits.shape == want.shape  # routed calls work too


# ----- 4. files get the user's umask -----


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_experts_routers_and_cards_get_the_users_umask(make_expert, tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        expert = make_expert()
        moe = moe_of([expert])
        moe.save_pretrained(tmp_path / "router")
        write_model_card(moe.refresh_card_data("org/router"), tmp_path / "router")
    finally:
        os.umask(old)
    files = [expert / CONFIG_NAME, expert / WEIGHTS_NAME, *sorted((tmp_path / "router").iterdir())]
    assert {f.name for f in files[2:]} == {CONFIG_NAME, WEIGHTS_NAME, "README.md"}
    assert {str(f): oct(stat.S_IMODE(f.stat().st_mode)) for f in files} == {str(f): oct(mode) for f in files}


def test_a_folder_of_another_model_type_is_named(make_expert, tmp_path):
    moe_of([make_expert()]).save_pretrained(tmp_path / "router")
    with pytest.raises(ValueError, match=r"TTLoRAModel '.*router' is a saved 'ttlora_moe' model, not a 'ttlora' one"):
        TTLoRAModel.from_pretrained(tmp_path / "router", base_model=tiny_base("bert", num_labels=2))
    with pytest.raises(IncompatibleExpertError, match=r"is a 'ttlora_moe' model, not a TT-LoRA expert"):
        moe_of([tmp_path / "router"])


def test_tt_lora_linear_alone_names_itself_in_errors():
    with pytest.raises(ValueError, match=r"tt_rank=64 gives TT-LoRA layer 12x24 .* more than its dense ΔW's 288"):
        TTLoRALinear(torch.nn.Linear(24, 12), tt_rank=64)
