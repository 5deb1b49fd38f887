"""The Hub workflow against a local Hub server (tests/hub_server.py), driven by the real `huggingface_hub` client:
push experts, dense MoE-LoRA models and routers with cards; pull and compose at pinned commits; offline; errors."""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest
import torch
from conftest import random_expert, randomize_, tiny_base, tiny_batch
from huggingface_hub import HfApi, ModelCard
from safetensors.torch import load, save
from transformers import AutoModel

from hf_ttmoe import DenseMoELoRAConfig, DenseMoELoRAModel, TTLoRAModel, TTLoRAMoEModel
from hf_ttmoe.hub import (
    CorruptExpertError,
    ExpertNotFoundError,
    IncompatibleExpertError,
    push_experts,
)
from hf_ttmoe.testing import TOKEN, HubServer, use_hub
from hub_cards import AUTO_END, AUTO_START, TrainingFacts

NUM_LABELS = (2, 3)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with HubServer(tmp_path_factory.mktemp("hub")) as hub:
        yield hub


class Client:
    """Points the in-process client at the server, with a cache of its own; switches offline mode on and off."""

    def __init__(self, server: HubServer, cache, monkeypatch):
        self.server, self.cache, self.monkeypatch = server, cache, monkeypatch
        self.api = None

    def set(self, offline: bool) -> None:
        use_hub(self.monkeypatch, self.server.url, self.server.token, self.cache, offline=offline)
        self.api = HfApi()

    def online(self) -> None:
        self.set(offline=False)

    def offline(self) -> None:
        self.set(offline=True)

    def wipe_cache(self) -> None:
        shutil.rmtree(self.cache, ignore_errors=True)

    def cache_files(self, repo_id: str) -> dict[str, bytes]:
        """Every file under the repo's cache folder and lock folder, with its content."""
        folder = "models--" + repo_id.replace("/", "--")
        found = {}
        for root in (self.cache / folder, self.cache / ".locks" / folder):
            for path in sorted(root.rglob("*")) if root.exists() else []:
                if path.is_file():
                    found[str(path.relative_to(self.cache))] = path.read_bytes()
        return found

    def readme(self, repo_id: str) -> ModelCard:
        return ModelCard(self.server.file_bytes(repo_id, "README.md").decode())


@pytest.fixture
def hub(server, tmp_path, monkeypatch):
    client = Client(server, tmp_path / "hf_cache", monkeypatch)
    client.online()
    return client


@pytest.fixture
def name(request) -> str:
    """A repo-name prefix unique to the test."""
    return re.sub(r"[^A-Za-z0-9]+", "-", request.node.name.removeprefix("test_"))[:40].strip("-")


def save_experts(root, num: int = 2, kind: str = "bert") -> list[str]:
    paths = []
    for i in range(num):
        path = root / f"{kind}-expert{i}"
        random_expert(kind, f"task{i}", NUM_LABELS[i % 2], seed=i).save_pretrained(path)
        paths.append(str(path))
    return paths


def compose(experts, kind: str = "bert", seed: int = 0, **kwargs) -> TTLoRAMoEModel:
    moe = TTLoRAMoEModel.from_experts(experts, base_model=tiny_base(kind, num_labels=5), **kwargs).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in moe.router.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return moe


def load_router(repo_id: str, kind: str = "bert", **kwargs) -> TTLoRAMoEModel:
    return TTLoRAMoEModel.from_pretrained(repo_id, base_model=tiny_base(kind, num_labels=5), **kwargs)


def outputs(model, batch=None):
    with torch.no_grad():
        return model(**(batch or tiny_batch(batch=6)))


# ----- round trip, pinning, offline -----


def test_round_trip_two_experts_and_a_router_from_a_wiped_cache_then_offline(hub, tmp_path, name):
    moe = compose(save_experts(tmp_path / "experts"))
    want = outputs(moe)
    info = moe.push_to_hub(f"org/{name}-moe")
    api = hub.api
    # every expert got its own repo; the router pins each at the commit it was pushed at
    pinned = json.loads(hub.server.file_bytes(f"org/{name}-moe", "config.json"))["experts"]
    assert [e["repo_id"] for e in pinned] == ["org/bert-expert0", "org/bert-expert1"]
    for entry in pinned:
        assert entry["revision"] == api.model_info(entry["repo_id"]).sha
        files = sorted(s.rfilename for s in api.model_info(entry["repo_id"]).siblings)
        assert files == [".gitattributes", "README.md", "config.json", "model.safetensors"]
    assert info.oid == api.model_info(f"org/{name}-moe").sha
    assert len(hub.server.commits(f"org/{name}-moe")) == 2  # creation + one upload commit

    hub.wipe_cache()
    got = outputs(load_router(f"org/{name}-moe"))
    assert torch.equal(got.logits, want.logits) and torch.equal(got.expert_index, want.expert_index)
    for entry in pinned:  # pulled into the normal cache, at the pinned commit
        assert (hub.cache / f"models--{entry['repo_id'].replace('/', '--')}" / "snapshots" / entry["revision"]
                / "model.safetensors").is_file()

    # offline: everything comes from the cache, without a single request
    hub.offline()
    before = len(hub.server.requests)
    got = outputs(load_router(f"org/{name}-moe"))
    assert torch.equal(got.logits, want.logits)
    assert len(hub.server.requests) == before
    # a local directory referencing Hub experts works offline too
    load_router(f"org/{name}-moe").save_pretrained(tmp_path / "local-router")
    assert json.loads((tmp_path / "local-router" / "config.json").read_text())["experts"] == pinned
    assert torch.equal(outputs(load_router(tmp_path / "local-router")).logits, want.logits)
    # offline with an empty cache: the error names the repo and says why
    hub.wipe_cache()
    with pytest.raises(ExpertNotFoundError, match=rf"Router 'org/{name}-moe'.*not in the cache.*offline"):
        load_router(f"org/{name}-moe")


def test_push_experts_pins_shas_and_skips_experts_already_on_the_hub(hub, tmp_path, name):
    paths = save_experts(tmp_path / name)
    moe = compose(paths)
    info = push_experts(moe, namespace="org", repo_id=f"org/{name}-router")
    assert [e["repo_id"] for e in moe.config.experts] == [f"org/{os.path.basename(p)}" for p in paths]
    heads = {r: hub.server.commits(r) for r in (e["repo_id"] for e in moe.config.experts)}
    assert [e["revision"] for e in moe.config.experts] == [heads[e["repo_id"]][0] for e in moe.config.experts]
    assert info.oid == hub.server.commits(f"org/{name}-router")[0]

    # the same local experts again: their repos already hold these files, nothing is pushed, same pins
    again = compose(paths, seed=1)
    push_experts(again, namespace="org", repo_id=f"org/{name}-router")
    assert {r: hub.server.commits(r) for r in heads} == heads
    assert again.config.experts == moe.config.experts
    # a router loaded from the Hub: its experts are Hub experts already
    loaded = load_router(f"org/{name}-router")
    assert not any(e.local for e in loaded.expert_sources)
    push_experts(loaded, namespace="org", repo_id=f"org/{name}-router2")
    assert {r: hub.server.commits(r) for r in heads} == heads

    # changed weights under the same name: a new expert commit, and the router pins it
    changed = random_expert(task="task0", num_labels=2, seed=7)
    changed.save_pretrained(paths[0])
    third = compose(paths)
    push_experts(third, namespace="org", repo_id=f"org/{name}-router")
    first_repo = moe.config.experts[0]["repo_id"]
    assert len(hub.server.commits(first_repo)) == len(heads[first_repo]) + 1
    assert third.config.experts[0]["revision"] == hub.server.commits(first_repo)[0]
    with pytest.raises(ValueError, match="would both be pushed to"):
        push_experts(compose(paths), namespace="org", repo_names={"task0": "same", "task1": "same"})


def test_pinned_revisions_survive_newer_pushes(hub, tmp_path, name):
    repo = f"org/{name}-expert"
    v1 = random_expert(seed=1)
    old = v1.push_to_hub(repo).oid
    moe = TTLoRAMoEModel.from_experts([repo], base_model=tiny_base("bert", num_labels=5)).eval()
    assert moe.config.experts[0]["revision"] == old  # composing from the Hub pins the commit
    router_v1 = moe.push_to_hub(f"org/{name}-moe").oid
    want_router = outputs(moe)
    v2 = random_expert(seed=2)
    new = v2.push_to_hub(repo).oid
    assert new != old
    base = tiny_base("bert", num_labels=2)
    batch = tiny_batch()
    with torch.no_grad():
        assert torch.equal(TTLoRAModel.from_pretrained(repo, base_model=base)(**batch).logits, v2(**batch).logits)
        pinned = TTLoRAModel.from_pretrained(repo, revision=old, base_model=tiny_base("bert", num_labels=2))
        assert torch.equal(pinned(**batch).logits, v1(**batch).logits)
    hub.api.create_tag(repo, tag="v1", revision=old)
    with torch.no_grad():
        tagged = TTLoRAModel.from_pretrained(repo, revision="v1", base_model=tiny_base("bert", num_labels=2))
        assert torch.equal(tagged(**batch).logits, v1(**batch).logits)
    # the router still composes the old expert; a newer router push does not change what revision= loads
    assert torch.equal(outputs(load_router(f"org/{name}-moe")).logits, want_router.logits)
    weight = moe.router.router_net.weight.detach().clone()
    with torch.no_grad():
        moe.router.router_net.weight.add_(1.0)
    moe.push_to_hub(f"org/{name}-moe")
    assert torch.equal(load_router(f"org/{name}-moe").router.router_net.weight, moe.router.router_net.weight)
    old_router = load_router(f"org/{name}-moe", revision=router_v1)
    assert torch.equal(old_router.router.router_net.weight, weight)
    assert torch.equal(outputs(old_router).logits, want_router.logits)


def test_auto_model_token_and_cache_dir(hub, tmp_path, name):
    expert = random_expert()
    expert.push_to_hub(f"org/{name}", private=True)
    batch = tiny_batch()
    cache = tmp_path / "other-cache"
    loaded = AutoModel.from_pretrained(f"org/{name}", base_model=tiny_base("bert", num_labels=2), cache_dir=str(cache))
    assert isinstance(loaded, TTLoRAModel) and not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, expert(**batch).logits)
    assert list(cache.glob(f"models--org--{name}/snapshots/*/model.safetensors"))
    with pytest.raises(ExpertNotFoundError, match=rf"TTLoRAModel 'org/{name}': repository .* not found.*private"):
        TTLoRAModel.from_pretrained(f"org/{name}", token=False, base_model=tiny_base("bert", num_labels=2))
    loaded = TTLoRAModel.from_pretrained(f"org/{name}", token=TOKEN, base_model=tiny_base("bert", num_labels=2))
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, expert(**batch).logits)


def test_dense_moe_lora_push_and_load(hub, name):
    config = DenseMoELoRAConfig(base_model_name_or_path="tiny-bert", task="task0", num_labels=3, num_experts=4,
                                lora_rank=2, layers_to_transform=[1])
    model = randomize_(DenseMoELoRAModel(config, base_model=tiny_base("bert"))).eval()
    model.push_to_hub(f"org/{name}")
    loaded = AutoModel.from_pretrained(f"org/{name}", base_model=tiny_base("bert"))
    assert isinstance(loaded, DenseMoELoRAModel)
    batch = tiny_batch()
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, model(**batch).logits)
    card = hub.readme(f"org/{name}")
    assert card.data.library_name == "hf_ttmoe" and "moe-lora" in card.data.tags
    assert "4 LoRA experts mixed per token" in card.text and "**Adapted linears:** 2" in card.text


# ----- errors: each names the expert, and a failed pull leaves the cache as it was -----


def _plant(hub, repo, data: bytes) -> None:
    hub.server.put_file(repo, "model.safetensors", data, message="broken weights")


@pytest.fixture
def good_expert(hub, name):
    """A bert expert on the Hub, and its weights' bytes."""
    repo = f"org/{name}-good"
    random_expert(task="good").push_to_hub(repo)
    return repo, hub.server.file_bytes(repo, "model.safetensors")


def assert_fails_cleanly(hub, repo, error, match, **kwargs):
    """Composing `repo` raises `error` matching `match`, and leaves its cache folders exactly as they were."""
    before = hub.cache_files(repo)
    with pytest.raises(error, match=match):
        TTLoRAMoEModel.from_experts([repo], base_model=tiny_base("bert", num_labels=5), **kwargs)
    assert hub.cache_files(repo) == before


def test_missing_repo_revision_and_file_are_named(hub, good_expert, name):
    repo, _ = good_expert
    assert_fails_cleanly(hub, f"org/{name}-nope", ExpertNotFoundError, rf"Expert 'org/{name}-nope'.*not found")
    with pytest.raises(ExpertNotFoundError, match=rf"Expert '{repo}'.*revision 'nope' does not exist"):
        TTLoRAMoEModel.from_experts([{"repo_id": repo, "revision": "nope"}], base_model=tiny_base("bert"))
    with pytest.raises(ExpertNotFoundError, match=rf"Expert '{repo}' \(revision 0+\).*revision '0+' does not"):
        TTLoRAMoEModel.from_experts([{"repo_id": repo, "revision": "0" * 40}], base_model=tiny_base("bert"))
    TTLoRAMoEModel.from_experts([repo], base_model=tiny_base("bert"))  # cached now: a later failure keeps it
    hub.server.delete_file(repo, "model.safetensors")
    assert_fails_cleanly(hub, repo, ExpertNotFoundError, rf"Expert '{repo}'.*has no 'model.safetensors'")
    assert hub.cache_files(repo)  # the earlier, complete pull is still cached


@pytest.mark.parametrize("damage", ["garbage", "truncated file", "truncated download", "corrupted download"])
def test_corrupted_and_truncated_weights_are_named_and_leave_nothing(hub, good_expert, damage):
    repo, data = good_expert
    if damage == "garbage":
        _plant(hub, repo, b"\x13\x00\x00\x00\x00\x00\x00\x00{not json" + bytes(64))
        match = rf"Expert '{repo}'.*model.safetensors is corrupted or truncated: header is not valid JSON"
    elif damage == "truncated file":
        _plant(hub, repo, data[: len(data) - 100])
        match = rf"Expert '{repo}'.*corrupted or truncated: tensor data ends at byte {len(data)} but the file has"
    elif damage == "truncated download":
        hub.server.faults[(repo, "model.safetensors")] = "truncate"
        match = rf"Expert '{repo}'.*download of model.safetensors was truncated"
    else:
        hub.server.faults[(repo, "model.safetensors")] = "corrupt"
        match = rf"Expert '{repo}'.*hashes to .* but the Hub announced"
    try:
        assert_fails_cleanly(hub, repo, CorruptExpertError, match)
        # the same with an explicit cache_dir=: nothing half-written there either
        other = hub.cache.parent / "explicit-cache"
        with pytest.raises(CorruptExpertError, match=match):
            TTLoRAMoEModel.from_experts([repo], base_model=tiny_base("bert"), cache_dir=str(other))
        assert not [p for p in other.rglob("*") if p.is_file()]
    finally:
        hub.server.faults.clear()


def test_incompatible_base_and_shapes_are_named(hub, good_expert, name):
    repo, data = good_expert
    llama = f"org/{name}-llama"
    random_expert("llama", task="other").push_to_hub(llama)
    with pytest.raises(IncompatibleExpertError, match=rf"Expert '{llama}' \(task 'other'\) is not compatible with "
                                                      rf"expert '{repo}'.*base_model_signature"):
        TTLoRAMoEModel.from_experts([repo, llama], base_model=tiny_base("bert"))
    other_base = f"org/{name}-otherbase"
    random_expert(task="other", base_model_revision="abc").push_to_hub(other_base)
    with pytest.raises(IncompatibleExpertError, match=rf"Expert '{other_base}'.*base model \('tiny-bert', 'abc'\)"):
        TTLoRAMoEModel.from_experts([repo, other_base], base_model=tiny_base("bert"))
    # cores whose modes do not fit the base's weights
    tensors = load(data)
    key = next(k for k in tensors if k.endswith("ttlora_cores.0"))
    tensors[key] = torch.zeros(1, 5, tensors[key].shape[2])
    _plant(hub, repo, save(tensors))
    with pytest.raises(IncompatibleExpertError, match=rf"Expert '{repo}': cores of .* do not fit a 32x32 weight"):
        TTLoRAMoEModel.from_experts([repo], base_model=tiny_base("bert"))
    with pytest.raises(ValueError, match=rf"{repo}@[0-9a-f]{{10}}/model.safetensors does not fit .*shape mismatch"):
        TTLoRAModel.from_pretrained(repo, base_model=tiny_base("bert", num_labels=2))
    with pytest.raises(IncompatibleExpertError, match=rf"experts \(e.g. '{llama}'\) were trained on"):
        TTLoRAMoEModel.from_experts([llama], base_model=tiny_base("bert"))


# ----- cards -----


def test_card_metadata_parses_and_describes_the_expert(hub, name):
    expert = random_expert()
    data = expert.model_card_data
    data.license, data.datasets, data.tags = "mit", ["stanfordnlp/sst2"], ["sentiment"]
    data.training = TrainingFacts(eval_metrics={"accuracy": 0.875, "loss": 0.31, "runtime": 1.5}, global_step=10)
    expert.push_to_hub(f"org/{name}")
    card = hub.readme(f"org/{name}")
    meta = card.data.to_dict()
    assert meta["library_name"] == "hf_ttmoe" and meta["base_model"] == "tiny-bert"
    assert meta["pipeline_tag"] == "text-classification" and meta["license"] == "mit"
    assert meta["datasets"] == ["stanfordnlp/sst2"]
    assert {"hf_ttmoe", "tt-lora", "sentiment"} <= set(meta["tags"])
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert results == {"accuracy": 0.875, "loss": 0.31}  # speed metrics stay out of model-index
    assert meta["model-index"][0]["results"][0]["dataset"]["type"] == "stanfordnlp/sst2"
    adapter = sum(p.numel() for n, p in expert.named_parameters() if "ttlora_" in n)
    assert f"**Trainable parameters:** {adapter:,} in TT cores" in card.text
    assert "| `query` | 32 × 32 | [8, 4] | [4, 8] | [1, 2, 2, 2, 1] | 2 |" in card.text
    assert f'AutoModel.from_pretrained("org/{name}")' in card.text
    assert "| accuracy | 0.8750 |" in card.text


def test_a_readme_the_user_edited_is_updated_not_overwritten(hub, name):
    repo = f"org/{name}"
    expert = random_expert()
    expert.push_to_hub(repo)
    text = hub.server.file_bytes(repo, "README.md").decode()
    # the user adds a license, a tag and a section of their own, outside the generated part
    edited = text.replace("tags:\n", "license: mit\ntags:\n- my-tag\n", 1) + "\n## Notes by the author\n\nHand-made.\n"
    hub.server.put_file(repo, "README.md", edited.encode())
    expert.model_card_data.training = TrainingFacts(eval_metrics={"accuracy": 0.5}, global_step=3)
    expert.push_to_hub(repo)
    card = hub.readme(repo)
    assert card.data.license == "mit" and "my-tag" in card.data.tags and "hf_ttmoe" in card.data.tags
    assert "## Notes by the author\n\nHand-made." in card.text
    assert "| accuracy | 0.5000 |" in card.text  # the generated section was refreshed
    assert card.text.count(AUTO_START) == 1 and card.text.count(AUTO_END) == 1
    # an edit inside the generated section: that body is kept as the user left it, metadata still refreshed
    inside = str(card).replace("| accuracy | 0.5000 |", "| accuracy | 0.5000 | (measured by hand)")
    hub.server.put_file(repo, "README.md", inside.encode())
    expert.model_card_data.training = TrainingFacts(eval_metrics={"accuracy": 0.75}, global_step=4)
    expert.push_to_hub(repo)
    card = hub.readme(repo)
    assert "(measured by hand)" in card.text and "| accuracy | 0.7500 |" not in card.text
    assert {r.metric_value for r in card.data.eval_results} == {0.75}
    # a README written by hand, without markers: body kept whole
    hub.server.put_file(repo, "README.md", b"---\nlicense: apache-2.0\n---\n# My expert\n\nWritten by hand.\n")
    expert.push_to_hub(repo)
    card = hub.readme(repo)
    assert card.text == "# My expert\n\nWritten by hand.\n"
    assert card.data.license == "apache-2.0" and card.data.library_name == "hf_ttmoe"


def test_router_card_links_each_expert_at_its_revision(hub, tmp_path, name):
    moe = compose(save_experts(tmp_path / name))
    moe.model_card_data.license = "apache-2.0"
    moe.push_to_hub(f"org/{name}-router")
    card = hub.readme(f"org/{name}-router")
    assert card.data.library_name == "hf_ttmoe" and "router" in card.data.tags
    for entry in moe.config.experts:
        assert f"[`{entry['repo_id']}`]({hub.server.url}/{entry['repo_id']}/tree/{entry['revision']})" in card.text
    assert "| 1 | `task1` |" in card.text and "LABEL_0, LABEL_1, LABEL_2" in card.text


# ----- Trainer(push_to_hub=True) -----


def _trainer(tmp_path, repo, strategy, callbacks=()):
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 100, (16, 8), generator=g)
    data = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist(),
                              "labels": (ids[:, 0] % 2).tolist()})
    args = TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=2, per_device_train_batch_size=8,
                             learning_rate=1e-2, save_steps=1, eval_strategy="steps", eval_steps=1, logging_steps=1,
                             report_to=[], use_cpu=True, push_to_hub=True, hub_model_id=repo, hub_strategy=strategy,
                             hub_always_push=True, save_strategy="steps")

    def accuracy(p):
        return {"accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())}

    model = random_expert()
    return Trainer(model=model, args=args, train_dataset=data, eval_dataset=data, compute_metrics=accuracy,
                   callbacks=list(callbacks)), model


def test_trainer_push_every_save_carries_the_card(hub, tmp_path, name):
    from trainer_callbacks import ModelCardCallback

    repo = f"org/{name}"
    trainer, model = _trainer(tmp_path, repo, "every_save", [ModelCardCallback(datasets=["stanfordnlp/sst2"])])
    trainer.train()
    commits = hub.server.commits(repo)
    # creation + the pushes: Trainer uploads in the background from one folder, so when the step-2 save
    # lands before the step-1 upload reads it, huggingface_hub skips the second, identical commit
    assert len(commits) >= 2
    final = tmp_path / "run" / "checkpoint-2" / "model.safetensors"
    assert hub.server.file_bytes(repo, "model.safetensors") == final.read_bytes()
    card = hub.readme(repo)
    assert card.data.library_name == "hf_ttmoe" and card.data.datasets == ["stanfordnlp/sst2"]
    assert {r.metric_type for r in card.data.eval_results} >= {"accuracy", "loss"}
    assert "| `max_steps` | `2` |" in card.text and "| `learning_rate` | `0.01` |" in card.text
    assert "`output_dir`" not in card.text  # storage options are not hyperparameters
    loaded = AutoModel.from_pretrained(repo, base_model=tiny_base("bert", num_labels=2))
    batch = tiny_batch()
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, model.eval()(**batch).logits)


def test_trainer_push_end_writes_our_card_not_the_trainer_draft(hub, tmp_path, name):
    from trainer_callbacks import ModelCardCallback

    repo = f"org/{name}"
    trainer, model = _trainer(tmp_path, repo, "end")
    ModelCardCallback.attach(trainer, datasets=["stanfordnlp/sst2"])
    trainer.train()
    assert len(hub.server.commits(repo)) == 1  # "end": nothing pushed during training
    info = trainer.push_to_hub(license="mit")
    assert hub.server.commits(repo)[0] == info.oid
    card = hub.readme(repo)
    assert card.data.library_name == "hf_ttmoe" and card.data.license == "mit"
    assert "Trainer had access to" not in card.text and "accuracy" in card.text
    files = {s.rfilename for s in hub.api.model_info(repo).siblings}
    assert {"config.json", "model.safetensors", "README.md"} <= files


def test_push_script_pushes_an_expert_directory_and_a_router(hub, tmp_path, name):
    from hf_ttmoe.commands.push import main

    base_dir = tmp_path / "tiny-bert"  # a base model the router can load by path
    tiny_base("bert", num_labels=2).save_pretrained(base_dir)
    paths = [tmp_path / f"{name}-e{i}" for i in range(2)]
    for i, path in enumerate(paths):
        random_expert(task=f"task{i}", seed=i, base_model_name_or_path=str(base_dir)).save_pretrained(path)
    # a README written during training (or by hand) keeps its body; the metadata is ours plus the flags
    (paths[0] / "README.md").write_text("---\nlicense: mit\n---\n# Sentiment expert\n\nTrained by hand.\n")
    commit = main(["--path", str(paths[0]), "--repo_id", f"org/{name}-e0", "--datasets", "stanfordnlp/sst2",
                   "--tags", "cli"])
    assert commit == hub.server.commits(f"org/{name}-e0")[0]
    card = hub.readme(f"org/{name}-e0")
    assert card.text == "# Sentiment expert\n\nTrained by hand.\n"
    assert card.data.license == "mit" and card.data.library_name == "hf_ttmoe"
    assert card.data.datasets == ["stanfordnlp/sst2"] and {"cli", "tt-lora"} <= set(card.data.tags)
    moe = TTLoRAMoEModel.from_experts([str(p) for p in paths], base_model=tiny_base("bert", num_labels=5))
    moe.save_pretrained(tmp_path / "router")
    main(["--path", str(tmp_path / "router"), "--repo_id", f"org/{name}-router", "--license", "mit",
          "--expert_names", json.dumps({"task1": f"{name}-second"})])
    pinned = json.loads(hub.server.file_bytes(f"org/{name}-router", "config.json"))["experts"]
    assert [e["repo_id"] for e in pinned] == [f"org/{name}-e0", f"org/{name}-second"]
    assert pinned[0]["revision"] == commit  # same files already on the Hub: pinned, not pushed again
    assert len(hub.server.commits(f"org/{name}-e0")) == 2
    assert hub.readme(f"org/{name}-router").data.license == "mit"
