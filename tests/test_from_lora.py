"""`TTLoRAModel.from_lora`: a PEFT LoRA adapter imported as a TT-LoRA expert. Oracle: the PEFT model itself (built
with `peft.get_peft_model` on the tiny bases, random non-zero A, B and head). Exact at full TT rank, the TT-SVD
approximation below it; refusals name the value; the import composes into a MoE and loads from the Hub."""

from __future__ import annotations

import json

import peft
import pytest
import torch
from conftest import rel_err, tiny_base, tiny_batch
from huggingface_hub import HfApi
from safetensors.torch import load_file, save_file

from hf_ttmoe import TTLoRAModel, TTLoRAMoEModel
from hf_ttmoe.io import ExpertNotFoundError
from hf_ttmoe.testing import HubServer, use_hub

TOL = 1e-4
TARGETS = {"bert": ["query", "value"], "llama": ["q_proj", "v_proj"]}
EXACT_RANK = 8  # ≥ every TT rank of a rank-4 ΔW in the tiny bases' layouts ([16, 2 | 2, 16]): TT-SVD is exact


def peft_lora(path, kind: str = "bert", seed: int = 0, num_labels: int = 2, safe: bool = True, **lora_kwargs):
    """Save a PEFT LoRA (r=4, alpha 8, random non-zero A, B and head) on the tiny `kind` base to `path`; return the
    PEFT model (eval)."""
    lora_kwargs = {"r": 4, "lora_alpha": 8, "target_modules": TARGETS[kind], "task_type": "SEQ_CLS", **lora_kwargs}
    model = peft.get_peft_model(tiny_base(kind, num_labels=num_labels), peft.LoraConfig(**lora_kwargs))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    model.save_pretrained(path, safe_serialization=safe)
    return model.eval()


def import_lora(path, kind: str = "bert", tt_rank: int = EXACT_RANK, num_labels: int = 2, **kwargs) -> TTLoRAModel:
    return TTLoRAModel.from_lora(path, tt_rank=tt_rank, base_model=tiny_base(kind, num_labels=num_labels), **kwargs)


def logits(model, batch=None) -> torch.Tensor:
    with torch.no_grad():
        return model(**(batch or tiny_batch())).logits


# ----- exactness and approximation -----


def test_full_rank_import_equals_the_lora(tmp_path, base_kind):
    lora = peft_lora(tmp_path / "lora", base_kind)
    model = import_lora(tmp_path / "lora", base_kind)
    assert (logits(model) - logits(lora)).abs().max() <= TOL
    report = model.from_lora_report
    assert len(report.modules) == 4 and report.max_rel_error <= 1e-5 and not report.zero_modules
    head = {"bert": "classifier", "llama": "score"}[base_kind]
    assert report.heads and all(h.startswith(f"model.{head}.") for h in report.heads)
    assert model.config.target_modules == TARGETS[base_kind] and model.config.modules_to_save == [head]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(".ttlora_cores." in n or n.startswith(f"model.{head}.") for n in trainable)


@pytest.mark.parametrize("lora_kwargs", [
    {"use_rslora": True},
    {"rank_pattern": {"query": 2}, "alpha_pattern": {"value": 3}},
    {"layers_to_transform": [1]},
    {"target_modules": r".*\.0\.attention\.self\.query|.*\.1\.attention\.self\.value", "lora_dropout": 0.1},
], ids=["rslora", "rank_alpha_patterns", "one_layer", "regex_targets"])
def test_lora_options_import_exactly(tmp_path, lora_kwargs):
    lora = peft_lora(tmp_path / "lora", **lora_kwargs)
    model = import_lora(tmp_path / "lora")
    assert (logits(model) - logits(lora)).abs().max() <= TOL
    report = model.from_lora_report
    if "layers_to_transform" in lora_kwargs:
        assert model.config.layers_to_transform == [1] and len(report.modules) == 2
    if "target_modules" in lora_kwargs:  # query in layer 0, value in layer 1: the other two get ΔW = 0
        assert len(report.modules) == 2 and len(report.zero_modules) == 2 and model.config.dropout == 0.1
    if "rank_pattern" in lora_kwargs:
        assert {f.lora_rank for m, f in report.modules.items() if m.endswith("query")} == {2}


def test_error_decreases_with_rank_and_vanishes_at_full_rank(tmp_path):
    lora = peft_lora(tmp_path / "lora")
    errors, outputs = [], []
    for rank in (1, 2, 4, EXACT_RANK):
        model = import_lora(tmp_path / "lora", tt_rank=rank)
        errors.append(model.from_lora_report.mean_rel_error)
        outputs.append(rel_err(logits(model), logits(lora)))
        for module, fit in model.from_lora_report.modules.items():  # the report is the layer's own ΔW error
            layer = model.model.get_submodule(module)
            peft_layer = lora.base_model.model.get_submodule(module)
            delta = 2.0 * peft_layer.lora_B.default.weight @ peft_layer.lora_A.default.weight  # alpha 8 / r 4
            assert abs(rel_err(layer.delta_weight(), delta) - fit.rel_error) <= 1e-5
    assert errors == sorted(errors, reverse=True) and errors[0] > 0.3 and errors[-1] <= 1e-5
    assert outputs[-1] <= 1e-5 < outputs[0]


@pytest.mark.parametrize("wrapper", ["modules_to_save.", "modules_to_save.default."])
def test_head_saved_inside_the_modules_to_save_wrapper_is_mapped(tmp_path, wrapper):
    """Older PEFT saved heads as `<head>.modules_to_save.<param>` (or with the adapter name): same import."""
    lora = peft_lora(tmp_path / "lora")
    path = tmp_path / "lora" / "adapter_model.safetensors"
    tensors = load_file(path)
    save_file({k.replace("classifier.", f"classifier.{wrapper}"): v for k, v in tensors.items()}, path)
    model = import_lora(tmp_path / "lora")
    assert (logits(model) - logits(lora)).abs().max() <= TOL
    assert sorted(model.from_lora_report.heads) == ["model.classifier.bias", "model.classifier.weight"]


# ----- refusals: each names the value -----


def _edit_config(path, **changes) -> None:
    file = path / "adapter_config.json"
    file.write_text(json.dumps({**json.loads(file.read_text()), **changes}))


def test_refuses_what_tt_lora_cannot_hold(tmp_path):
    peft_lora(tmp_path / "dora", use_dora=True)
    with pytest.raises(ValueError, match="use_dora=True .*DoRA"):
        import_lora(tmp_path / "dora")
    peft_lora(tmp_path / "emb", target_modules=["word_embeddings", "query"])
    with pytest.raises(ValueError, match="word_embeddings.lora_embedding_A.* embedding"):
        import_lora(tmp_path / "emb")
    peft_lora(tmp_path / "bias", bias="all")
    with pytest.raises(ValueError, match="bias='all'"):
        import_lora(tmp_path / "bias")
    peft_lora(tmp_path / "pickle", safe=False)
    with pytest.raises(ValueError, match="adapter_model.bin .*pickle"):
        import_lora(tmp_path / "pickle")

    peft_lora(tmp_path / "lora")
    _edit_config(tmp_path / "lora", rank_pattern={"query": 3})
    with pytest.raises(ValueError, match=r"query has lora_A of rank 4.*r=3.*rank_pattern"):
        import_lora(tmp_path / "lora")
    _edit_config(tmp_path / "lora", rank_pattern={}, init_lora_weights="pissa")
    with pytest.raises(ValueError, match="init_lora_weights='pissa'.*changes the base weights"):
        import_lora(tmp_path / "lora")
    _edit_config(tmp_path / "lora", init_lora_weights=True, peft_type="IA3")
    with pytest.raises(ValueError, match="peft_type='IA3'"):
        import_lora(tmp_path / "lora")
    _edit_config(tmp_path / "lora", peft_type="LORA")
    with pytest.raises(TypeError, match="target_modules"):
        import_lora(tmp_path / "lora", target_modules=["query"])

    weights = tmp_path / "lora" / "adapter_model.safetensors"
    tensors = load_file(weights)
    key = next(k for k in tensors if k.endswith("query.lora_A.weight"))
    save_file({**tensors, key: tensors[key][:, :, None, None].contiguous()}, weights)
    with pytest.raises(ValueError, match=r"shape \(4, 32, 1, 1\): LoRA on a convolution"):
        import_lora(tmp_path / "lora")


def test_refuses_missing_files_and_another_architecture(tmp_path):
    with pytest.raises(ExpertNotFoundError, match="no such directory"):
        TTLoRAModel.from_lora(str(tmp_path / "missing"), base_model=tiny_base("bert"))
    peft_lora(tmp_path / "lora")
    (tmp_path / "lora" / "adapter_model.safetensors").unlink()
    with pytest.raises(ExpertNotFoundError, match="has no adapter_model.safetensors"):
        import_lora(tmp_path / "lora")

    peft_lora(tmp_path / "bert")
    with pytest.raises(ValueError, match="adapts bert.encoder.layer.0.attention.self.query, which .*does not have"):
        import_lora(tmp_path / "bert", "llama")
    peft.get_peft_model(tiny_base("bert"), peft.LoraConfig(r=4, target_modules=["query", "dense"])).save_pretrained(
        tmp_path / "plain")
    other = tiny_base("bert")
    other.bert.encoder.layer[0].attention.self.query = torch.nn.Linear(32, 16)
    with pytest.raises(ValueError, match=r"layer.0.attention.self.query has ΔW of shape \(32, 32\).*16x32 linear"):
        TTLoRAModel.from_lora(tmp_path / "plain", base_model=other, num_labels=3)
    other = tiny_base("bert")
    other.bert.pooler.dense = torch.nn.Identity()
    with pytest.raises(ValueError, match=r"adapts bert.pooler.dense, a Identity: only nn.Linear"):
        TTLoRAModel.from_lora(tmp_path / "plain", base_model=other, num_labels=3)


# ----- the import is an expert like any other -----


def test_imports_compose_into_a_moe_and_reload_exactly(tmp_path):
    paths = []
    for i, labels in enumerate((2, 3)):
        peft_lora(tmp_path / f"lora{i}", seed=i, num_labels=labels)
        model = import_lora(tmp_path / f"lora{i}", num_labels=labels, tt_rank=4, task=f"task{i}")
        model.save_pretrained(tmp_path / f"expert{i}")
        reloaded = TTLoRAModel.from_pretrained(tmp_path / f"expert{i}",
                                               base_model=tiny_base("bert", num_labels=labels))
        assert (logits(reloaded) - logits(model)).abs().max() <= 1e-6
        paths.append(str(tmp_path / f"expert{i}"))
    moe = TTLoRAMoEModel.from_experts(paths, base_model=tiny_base("bert", num_labels=5))
    assert [e.task for e in moe.expert_sources] == ["task0", "task1"]
    with torch.no_grad():
        moe(**tiny_batch())


@pytest.fixture
def hub(tmp_path, monkeypatch):
    with HubServer(tmp_path / "hub") as server:
        use_hub(monkeypatch, server.url, server.token, tmp_path / "hf_cache")
        yield server


def test_from_the_hub_at_a_revision_and_pickle_repos_refused(hub, tmp_path):
    api = HfApi()
    api.create_repo("org/lora")
    first = peft_lora(tmp_path / "first", seed=1)
    sha = api.upload_folder(repo_id="org/lora", folder_path=tmp_path / "first").oid
    peft_lora(tmp_path / "second", seed=2)
    api.upload_folder(repo_id="org/lora", folder_path=tmp_path / "second")
    model = TTLoRAModel.from_lora("org/lora", tt_rank=EXACT_RANK, revision=sha,
                                  base_model=tiny_base("bert", num_labels=2))
    assert (logits(model) - logits(first)).abs().max() <= TOL
    assert model.from_lora_report.revision == sha

    api.create_repo("org/pickled")
    peft_lora(tmp_path / "pickled", safe=False)
    api.upload_folder(repo_id="org/pickled", folder_path=tmp_path / "pickled")
    with pytest.raises(ValueError, match="'org/pickled' holds its weights as adapter_model.bin"):
        TTLoRAModel.from_lora("org/pickled", base_model=tiny_base("bert", num_labels=2))
    hub.delete_file("org/pickled", "adapter_model.bin")
    with pytest.raises(ExpertNotFoundError, match="'org/pickled'.*has no adapter_model.safetensors: it is not a saved "
                       "PEFT adapter"):
        TTLoRAModel.from_lora("org/pickled", base_model=tiny_base("bert", num_labels=2))
    with pytest.raises(ExpertNotFoundError, match="'org/nope'.*not found"):
        TTLoRAModel.from_lora("org/nope", base_model=tiny_base("bert", num_labels=2))
