"""`transformers.pipeline("text-classification", model=<dir or Hub id>)` on TT-LoRA experts and routed MoEs, on a
BERT and a Llama base: results equal the models' own outputs, one forward per batch, text pairs, Hub ids, and the
registrations behind it (AutoModelForSequenceClassification, AutoTokenizer, the task's pipeline class)."""

from __future__ import annotations

import pytest
import torch
from conftest import random_expert, tiny_base
from tiny_pool import PAIRS, TEXTS, save_base, save_pool
from transformers import AutoModelForSequenceClassification, AutoTokenizer, TextClassificationPipeline, pipeline

from hf_ttmoe import DEFAULT_BASE_MODEL, TTLoRAModel, TTLoRAMoEModel, load_tokenizer
from hf_ttmoe.pipelines import AdapterClassificationPipeline, TTLoRAMoEClassificationPipeline
from hf_ttmoe.testing import HubServer, use_hub

TOL = 1e-5


@pytest.fixture(scope="module")
def pools(tmp_path_factory):
    """kind -> (expert directories, MoE directory), saved once for the module."""
    root = tmp_path_factory.mktemp("pools")
    return {kind: save_pool(kind, root) for kind in ("bert", "llama")}


def count_forwards(module: torch.nn.Module) -> list[int]:
    """A one-element list counting `module`'s forward calls from now on."""
    calls = [0]

    def hook(*_):
        calls[0] += 1

    module.register_forward_hook(hook)
    return calls


def expected_moe_results(moe: TTLoRAMoEModel, tokenizer, texts, pairs=None) -> list[dict]:
    """What the pipeline must answer: `moe.decode(moe(**batch))`, scored by a softmax over the chosen task's labels."""
    with torch.no_grad():
        out = moe(**tokenizer(texts, pairs, padding=True, return_tensors="pt"))
    results = []
    for (task, label), e, logits in zip(moe.decode(out), out.expert_index.tolist(), out.logits):
        probs = logits[: len(moe.label_names[e])].softmax(-1)
        results.append({"label": label, "score": probs.max().item(), "task": task})
    return results


def assert_same_results(got: list[dict], want: list[dict]) -> None:
    assert [(r["task"], r["label"]) for r in got] == [(r["task"], r["label"]) for r in want]
    assert [r["score"] for r in got] == pytest.approx([r["score"] for r in want], abs=TOL)


def test_moe_pipeline_equals_decode_and_runs_one_forward_per_batch(pools, base_kind):
    _, moe_dir = pools[base_kind]
    classifier = pipeline("text-classification", model=str(moe_dir))
    assert type(classifier) is TTLoRAMoEClassificationPipeline
    assert type(classifier.tokenizer).__name__ == {"bert": "BertTokenizer", "llama": "LlamaTokenizer"}[base_kind]
    moe = TTLoRAMoEModel.from_pretrained(moe_dir)  # loaded on its own, with the tokenizer hf_ttmoe resolves
    want = expected_moe_results(moe, load_tokenizer(moe.config), TEXTS)
    assert len({r["task"] for r in want}) >= 2  # the rows of one batch use different experts

    forwards, base_forwards = count_forwards(classifier.model), count_forwards(classifier.model.model)
    assert_same_results(classifier(TEXTS, batch_size=len(TEXTS)), want)
    assert forwards[0] == base_forwards[0] == 1  # 12 rows, several experts: one mixed pass, routing inside it
    assert_same_results(classifier(TEXTS, batch_size=4), want)
    assert forwards[0] == 1 + 3
    assert_same_results(classifier(TEXTS), want)  # one row at a time: same answers (padding does not matter)
    assert forwards[0] == 1 + 3 + len(TEXTS)
    assert classifier(TEXTS[0]) == [classifier(TEXTS[:1])[0]]  # a single string: a list of one result, as usual


def test_moe_pipeline_text_pairs(pools, base_kind):
    _, moe_dir = pools[base_kind]
    classifier = pipeline("text-classification", model=str(moe_dir))
    moe = classifier.model
    want = expected_moe_results(moe, classifier.tokenizer, [p["text"] for p in PAIRS], [p["text_pair"] for p in PAIRS])
    assert_same_results(classifier(PAIRS, batch_size=len(PAIRS)), want)
    assert_same_results([classifier(p) for p in PAIRS], want)


def test_moe_pipeline_top_k_stays_in_the_chosen_task(pools):
    _, moe_dir = pools["bert"]
    classifier = pipeline("sentiment-analysis", model=str(moe_dir))  # the task's alias gets the same class
    assert type(classifier) is TTLoRAMoEClassificationPipeline
    moe = classifier.model
    for text, best in zip(TEXTS, classifier(TEXTS)):
        ranked = classifier(text, top_k=None)
        labels = moe.label_names[moe.tasks.index(best["task"])]
        assert {r["task"] for r in ranked} == {best["task"]} and sorted(r["label"] for r in ranked) == sorted(labels)
        assert ranked[0] == best and sum(r["score"] for r in ranked) == pytest.approx(1.0, abs=TOL)
        assert [r["score"] for r in ranked] == sorted((r["score"] for r in ranked), reverse=True)


def test_expert_pipeline_labels_from_its_config(pools, base_kind):
    experts, _ = pools[base_kind]
    classifier = pipeline("text-classification", model=str(experts[1]))
    assert type(classifier) is AdapterClassificationPipeline
    expert = TTLoRAModel.from_pretrained(experts[1])
    tokenizer = load_tokenizer(expert.config)
    for texts, pairs, inputs in ((TEXTS, None, TEXTS), ([p["text"] for p in PAIRS], [p["text_pair"] for p in PAIRS],
                                                        PAIRS)):
        with torch.no_grad():
            probs = expert(**tokenizer(texts, pairs, padding=True, return_tensors="pt")).logits.softmax(-1)
        want = [{"label": expert.config.id2label[p.argmax().item()], "score": p.max().item()} for p in probs]
        got = classifier(inputs, batch_size=4)
        assert [r["label"] for r in got] == [r["label"] for r in want]
        assert [r["score"] for r in got] == pytest.approx([r["score"] for r in want], abs=TOL)
    assert {r["label"] for r in classifier(TEXTS[0], top_k=None)} == {"world", "sports", "business"}


def test_registrations_resolve_our_models_and_the_base_tokenizer(pools, tmp_path):
    experts, moe_dir = pools["llama"]
    assert type(AutoModelForSequenceClassification.from_pretrained(experts[0])) is TTLoRAModel
    assert type(AutoModelForSequenceClassification.from_pretrained(moe_dir)) is TTLoRAMoEModel
    for path in (experts[0], moe_dir):  # no tokenizer file in these directories: the base's tokenizer is returned
        tokenizer = AutoTokenizer.from_pretrained(path)
        assert type(tokenizer).__name__ == "LlamaTokenizer" and tokenizer("the film")["input_ids"][0] == 2
    # a model object instead of a path: the tokenizer is passed, as transformers asks for any model object
    moe = TTLoRAMoEModel.from_pretrained(moe_dir)
    from_object = pipeline("text-classification", model=moe, tokenizer=load_tokenizer(moe.config))
    assert type(from_object) is TTLoRAMoEClassificationPipeline
    assert set(from_object(TEXTS[0])[0]) == {"label", "score", "task"}
    # any other model keeps the plain pipeline of its task
    plain = pipeline("text-classification", model=str(save_base("bert", tmp_path / "plain")))
    assert type(plain) is TextClassificationPipeline


def test_causal_lm_expert_is_refused_by_text_classification(tmp_path):
    base = save_base("llama", tmp_path / "base")
    expert = random_expert("llama", task_type="causal_lm", base_model_name_or_path=str(base))
    expert.save_pretrained(tmp_path / "lm")
    with pytest.raises(ValueError, match="task_type='causal_lm'.*sequence classifier"):
        pipeline("text-classification", model=str(tmp_path / "lm"))


def test_dense_moe_lora_pipeline(tmp_path):
    from hf_ttmoe import DenseMoELoRAConfig, DenseMoELoRAModel

    base = save_base("bert", tmp_path / "base")
    config = DenseMoELoRAConfig(base_model_name_or_path=str(base), num_labels=2, num_experts=2, lora_rank=2,
                                id2label={0: "no", 1: "yes"})
    DenseMoELoRAModel(config, base_model=tiny_base("bert", num_labels=2)).save_pretrained(tmp_path / "dense")
    classifier = pipeline("text-classification", model=str(tmp_path / "dense"))
    assert type(classifier) is AdapterClassificationPipeline
    assert {r["label"] for r in classifier(TEXTS)} <= {"no", "yes"}


def test_embedded_base_model_tokenizer_offline(tmp_path):
    """An expert on the default base names its Hub id; the tokenizer comes from the embedded copy, offline."""
    from hf_ttmoe import TTLoRAConfig

    config = TTLoRAConfig(base_model_name_or_path=DEFAULT_BASE_MODEL, task="sentiment", num_labels=2, tt_rank=2,
                          id2label={0: "negative", 1: "positive"})
    TTLoRAModel(config).save_pretrained(tmp_path / "expert")
    classifier = pipeline("text-classification", model=str(tmp_path / "expert"))
    assert classifier.tokenizer.vocab_size == 30522  # MiniLM's WordPiece vocabulary
    assert [r["label"] for r in classifier(["a wonderful film", "a dull, boring film"])] != []


def test_pipeline_from_hub_ids(pools, tmp_path, monkeypatch):
    """The same pipelines from Hub ids (a local Hub server): the MoE pulls its experts at their pinned commits."""
    experts, moe_dir = pools["bert"]
    local = pipeline("text-classification", model=str(moe_dir))
    want = local(TEXTS, batch_size=len(TEXTS))
    want_expert = pipeline("text-classification", model=str(experts[0]))(TEXTS)
    with HubServer(tmp_path / "hub") as hub:
        use_hub(monkeypatch, hub.url, hub.token, tmp_path / "cache")
        local.model.push_to_hub("org/tiny-moe")  # its experts first (org/bert-expert0, ...), pinned, then the router
        from_hub = pipeline("text-classification", model="org/tiny-moe")
        assert type(from_hub) is TTLoRAMoEClassificationPipeline
        assert [e.revision for e in from_hub.model.expert_sources] == [e["revision"] for e in
                                                                       from_hub.model.config.experts]
        assert all(len(e.revision) == 40 for e in from_hub.model.expert_sources)
        assert_same_results(from_hub(TEXTS, batch_size=len(TEXTS)), want)
        expert = pipeline("text-classification", model="org/bert-expert0")
        assert type(expert) is AdapterClassificationPipeline
        assert [r["label"] for r in expert(TEXTS)] == [r["label"] for r in want_expert]
