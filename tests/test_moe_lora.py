"""Dense MoE-LoRA: two-GEMM layer vs per-expert loop, gate math, FFN targets, aux loss wiring, balance-loss callback.
Identity at init, save/load, config errors, the refusal to merge and Trainer resume are in test_contracts.py."""

from __future__ import annotations

import copy
import random
import re

import pytest
import torch
import torch.nn.functional as F
from conftest import randomize_, rel_err, tiny_base, tiny_batch
from datasets import Dataset
from torch import nn
from transformers import Trainer, TrainingArguments

from hf_ttmoe import DenseMoELoRAConfig, DenseMoELoRALinear, DenseMoELoRAModel
from hf_ttmoe.moe_lora.layer import gate_weights
from trainer_callbacks import BalanceLossCallback

TOL = 1e-5


def loop_reference(layer: DenseMoELoRALinear, x: torch.Tensor) -> torch.Tensor:
    """The mixture written the slow, obvious way: one LoRA per expert, weighted by that expert's gate."""
    probs = F.softmax(x @ layer.moelora_gate.weight.T, dim=-1)  # (..., E)
    if layer.top_k is not None:
        top, idx = probs.topk(layer.top_k, dim=-1)
        keep = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, idx, True)
        probs = torch.where(keep, probs, 0.0)
        probs = probs / probs.sum(-1, keepdim=True)
    out = x @ layer.base_layer.weight.T + layer.base_layer.bias
    r = layer.rank
    for e in range(layer.num_experts):
        a = layer.moelora_A[e * r:(e + 1) * r]  # (r, in)
        b = layer.moelora_B[:, e * r:(e + 1) * r]  # (out, r)
        out = out + probs[..., e:e + 1] * ((x @ a.T) @ b.T) * layer.scaling
    return out


def random_layer(seed: int, top_k: int | None):
    rnd = random.Random(seed)
    d_in, d_out, num_experts, rank = rnd.randint(3, 24), rnd.randint(3, 24), rnd.randint(2, 9), rnd.randint(1, 5)
    torch.manual_seed(seed)
    layer = DenseMoELoRALinear(nn.Linear(d_in, d_out).requires_grad_(False), num_experts, rank, alpha=2.0 * rank,
                               top_k=None if top_k is None else min(top_k, num_experts))
    with torch.no_grad():
        layer.moelora_B.normal_()
        layer.moelora_gate.weight.normal_()
    return layer, torch.randn(2, rnd.randint(1, 7), d_in)


@pytest.mark.parametrize("top_k", [None, 1, 2])
@pytest.mark.parametrize("seed", range(6))
def test_two_gemm_layer_matches_per_expert_loop(seed, top_k):
    layer, x = random_layer(seed, top_k)
    grad_out = torch.randn(*x.shape[:-1], layer.base_layer.out_features)
    results = []
    for fn in (layer, lambda x: loop_reference(layer, x)):
        layer.zero_grad()
        y = fn(x)
        (y * grad_out).sum().backward()
        results.append((y.detach(), [p.grad.clone() for p in (layer.moelora_A, layer.moelora_B,
                                                              layer.moelora_gate.weight)]))
    (y_fast, g_fast), (y_ref, g_ref) = results
    assert rel_err(y_fast, y_ref) <= TOL
    for name, a, b in zip("AB", g_fast[:2], g_ref[:2]):
        assert rel_err(a, b) <= TOL, name
    if layer.top_k == 1:  # a renormalized top-1 gate is constant 1: its exact gradient is 0, both give round-off
        assert g_fast[2].abs().max() <= 1e-6 and g_ref[2].abs().max() <= 1e-6
    else:
        assert rel_err(g_fast[2], g_ref[2]) <= TOL


def test_gate_weights_stay_with_their_expert():
    # the reference notebook sorted the top-k and then indexed gates by sorted position; weights must follow ids
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    w = gate_weights(logits, 2)
    p = logits.softmax(-1)[0]
    assert torch.allclose(w[0], torch.tensor([0.0, p[1] / (p[1] + p[3]), 0.0, p[3] / (p[1] + p[3])]))
    layer, x = random_layer(0, 1)
    with torch.no_grad():  # experts give different outputs; permuting the gate must change the output
        permuted = copy.deepcopy(layer)
        permuted.moelora_gate.weight.copy_(layer.moelora_gate.weight.roll(1, dims=0))
        assert rel_err(permuted(x), layer(x)) > 1e-3


def make_model(kind, **kwargs):
    config = DenseMoELoRAConfig(base_model_name_or_path=f"tiny-{kind}", num_labels=3, num_experts=4, lora_rank=2,
                                **kwargs)
    return DenseMoELoRAModel(config, base_model=tiny_base(kind))


def test_default_targets_are_the_ffn_linears(base_kind):
    model = make_model(base_kind)
    names = [n for n, m in model.named_modules() if isinstance(m, DenseMoELoRALinear)]
    suffixes = {"bert": {"intermediate.dense", "output.dense"}, "llama": {"gate_proj", "up_proj", "down_proj"}}
    assert all(re.split(r"\.layers?\.\d+\.", n)[-1].removeprefix("mlp.") in suffixes[base_kind] for n in names)
    assert not any("attention" in n for n in names)
    assert len(names) == 2 * len(suffixes[base_kind])


def test_aux_loss_reaches_the_loss_only_with_labels(base_kind):
    model = make_model(base_kind, router_aux_loss_coef=0.3, router_z_loss_coef=0.01)
    reference = tiny_base(base_kind)
    batch, labels = tiny_batch(), torch.tensor([0, 1, 2, 1])
    out = model(**batch, labels=labels, output_router_logits=True)
    task_loss = reference(**batch, labels=labels).loss
    assert out.aux_loss > 0 and out.z_loss > 0
    assert torch.allclose(out.loss, task_loss + 0.3 * out.aux_loss + 0.01 * out.z_loss, rtol=1e-6)
    assert len(out.router_logits) == len(model.adapter_layers()) and out.router_logits[0].shape == (4, 10, 4)
    no_labels = model(**batch)
    assert no_labels.loss is None and no_labels.router_logits is None and no_labels.aux_loss is not None


def test_gate_learns_from_the_aux_loss():
    # at init every expert outputs 0 (B = 0), so the task loss gives the gates no gradient; only the aux loss does
    batch, labels = tiny_batch(), torch.tensor([0, 1, 2, 1])
    grads = {}
    for coef in (0.0, 0.5):
        model = make_model("bert", router_aux_loss_coef=coef)
        model(**batch, labels=labels).loss.backward()
        grads[coef] = torch.cat([p.grad.reshape(-1) for n, p in model.named_parameters() if "moelora_gate" in n])
    assert grads[0.0].abs().max() == 0 and grads[0.5].abs().max() > 0


def test_aux_loss_is_padding_invariant_in_the_model(base_kind):
    model = randomize_(make_model(base_kind)).eval()
    batch = tiny_batch(pad_last=2)
    padded = {k: torch.cat([v, torch.zeros(v.shape[0], 4, dtype=v.dtype)], dim=1) for k, v in batch.items()}
    assert model(**padded).aux_loss.item() == pytest.approx(model(**batch).aux_loss.item(), rel=1e-5)


def toy_dataset(n=64, seq=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 100, (n, seq), generator=g)
    return Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist(),
                              "labels": (ids[:, 0] % 3).tolist()})


def train(model, tmp_path, callback, max_steps=8, **kwargs):
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=max_steps, per_device_train_batch_size=16,
                             learning_rate=kwargs.pop("learning_rate", 1e-2), logging_steps=1, report_to=[],
                             use_cpu=True, seed=0, save_strategy=kwargs.pop("save_strategy", "no"), **kwargs)
    trainer = Trainer(model=model, args=args, train_dataset=toy_dataset(), callbacks=[callback])
    return trainer


def test_callback_schedules_and_logs(tmp_path):
    cb = BalanceLossCallback("cosine", min_ratio=0.2)
    assert [round(cb.factor(p), 6) for p in (0.0, 0.5, 1.0)] == [1.0, 0.6, 0.2]
    warm = BalanceLossCallback("linear_warmup", warmup_ratio=0.5)
    assert [warm.factor(p) for p in (0.0, 0.25, 0.5, 0.9)] == [0.0, 0.5, 1.0, 1.0]
    with pytest.raises(ValueError, match="schedule='step'"):
        BalanceLossCallback("step")
    model = make_model("bert", router_aux_loss_coef=0.1)
    trainer = train(model, tmp_path, cb, max_steps=4)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 4
    for entry in logs:
        assert {"aux_loss", "gate_entropy", "aux_loss_coef", *(f"expert_load/{i}" for i in range(4))} <= set(entry)
        assert sum(entry[f"expert_load/{i}"] for i in range(4)) == pytest.approx(1.0, abs=1e-6)
    assert [round(e["aux_loss_coef"], 6) for e in logs] == [round(0.1 * cb.factor(s / 4), 6) for s in range(4)]
    trainer2 = Trainer(model=model, args=trainer.args, train_dataset=toy_dataset())
    attached = BalanceLossCallback.attach(trainer2)
    assert trainer2.callback_handler.callbacks[0] is attached


def test_callback_state_survives_resume(tmp_path):
    def run(max_steps, resume=None, callback=None):
        torch.manual_seed(0)
        trainer = train(make_model("bert", router_aux_loss_coef=0.2), tmp_path / "run", callback, max_steps=max_steps,
                        save_strategy="steps", save_steps=2, restore_callback_states_from_checkpoint=True)
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    full = run(4, callback=BalanceLossCallback("cosine"))
    resumed = run(4, resume=str(tmp_path / "run" / "checkpoint-2"), callback=BalanceLossCallback("constant"))
    restored = next(c for c in resumed.callback_handler.callbacks if isinstance(c, BalanceLossCallback))
    assert restored.schedule == "cosine"
    coefs = lambda t: [h["aux_loss_coef"] for h in t.state.log_history if "aux_loss_coef" in h]  # noqa: E731
    assert coefs(resumed)[-2:] == pytest.approx(coefs(full)[-2:])


def test_balance_loss_evens_out_expert_load(tmp_path):
    """Start from a gate that sends almost every token to expert 0; train the same steps with the loss off and on."""

    def max_load(coef):
        torch.manual_seed(0)
        model = make_model("bert", router_aux_loss_coef=coef)
        with torch.no_grad():
            for layer in model.adapter_layers():
                layer.moelora_gate.weight.zero_()
        means = {}

        def record(module, args, output):
            means[module] = args[0].mean((0, 1))

        hooks = [layer.register_forward_hook(record) for layer in model.adapter_layers()]
        model(**{k: torch.tensor(v) for k, v in toy_dataset()[:16].items() if k != "labels"})
        for hook in hooks:
            hook.remove()
        with torch.no_grad():  # bias expert 0 along each layer's mean input direction
            for layer, mean in means.items():
                layer.moelora_gate.weight[0] = 4.0 * mean / mean.norm() ** 2
        callback = BalanceLossCallback()
        trainer = train(model, tmp_path / str(coef), callback, max_steps=30, learning_rate=2e-2)
        trainer.train()
        last = [h for h in trainer.state.log_history if "expert_load/0" in h][-5:]
        return max(max(h[f"expert_load/{i}"] for i in range(4)) for h in last)

    off, on = max_load(0.0), max_load(1.0)
    print(f"max expert load after 30 steps: loss off {off:.3f}, on {on:.3f}")
    assert off > 0.9, off  # without the loss the gate stays collapsed
    assert on < off - 0.2, (on, off)
