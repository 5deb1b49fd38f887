"""`torch.compile` (inductor, CPU) of each method: a TT-LoRA expert, a dense MoE-LoRA model and a TT-LoRA MoE give the
eager outputs and gradients to 1e-4, and a batch shape seen before compiles nothing new.

Shapes: a new sequence length compiles each graph once more, with that length dynamic (dynamo's automatic dynamic
shapes), and then no further length compiles anything. Compiling is slow on a small CPU (up to a minute a graph with
a cold inductor cache), so the default run keeps a TT-LoRA expert's inference and its `Trainer(torch_compile=True)`
run; the matrix of every method on every base is marked `slow`.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch._dynamo
from conftest import BASES, random_expert, randomize_, rel_err, tiny_base, tiny_batch
from datasets import Dataset
from torch._dynamo.utils import counters
from transformers import Trainer, TrainingArguments

from hf_ttmoe import DenseMoELoRAConfig, DenseMoELoRAModel, TTLoRAMoEModel

TOL = 1e-4
BATCH = 4


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Each test compiles from scratch and counts only its own graphs."""
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def graphs() -> int:
    return counters["stats"]["unique_graphs"]


@contextlib.contextmanager
def compiles_nothing():
    """Fail if a guard fails (a recompile) or any new graph is compiled inside the block."""
    before = graphs()
    with torch._dynamo.config.patch(error_on_recompile=True):
        yield
    assert graphs() == before


def ttlora(kind: str, make_expert):
    return random_expert(kind, num_labels=3), {"labels": torch.tensor([0, 1, 2, 1])}


def moe_lora(kind: str, make_expert):
    config = DenseMoELoRAConfig(base_model_name_or_path=f"tiny-{kind}", num_labels=3, num_experts=4, lora_rank=2,
                                num_experts_per_tok=2, router_z_loss_coef=0.01, pad_token_id=0)
    model = randomize_(DenseMoELoRAModel(config, base_model=tiny_base(kind))).eval()
    return model, {"labels": torch.tensor([0, 1, 2, 1])}


def ttlora_moe(kind: str, make_expert):
    """Two experts with different label spaces under a random router; training is the router-only forward (it stops
    the base model early, from inside the routing hook)."""
    paths = [str(make_expert(kind, task=f"task{i}", num_labels=2 + i, seed=100 + i)) for i in range(2)]
    model = TTLoRAMoEModel.from_experts(paths, base_model=tiny_base(kind, num_labels=3), noisy_gating=False,
                                        router_aux_loss_coef=0.1)
    return randomize_(model, seed=1).eval(), {"task_ids": torch.tensor([0, 1, 1, 0])}


MODELS = {"ttlora": ttlora, "moe_lora": moe_lora, "ttlora_moe": ttlora_moe}


def cases(default: tuple[str, str] | None = None) -> list:
    """Every method on every base of the case matrix; all but `default` marked slow (each compiles for a minute)."""
    return [pytest.param(method, kind, marks=() if (method, kind) == default else pytest.mark.slow)
            for method in MODELS for kind in BASES]

def compared(out) -> dict[str, torch.Tensor]:
    """The output tensors to compare: logits (their finite entries: a MoE row's logits beyond its task's labels are
    -inf), loss, aux losses and router logits where the model gives them."""
    tensors = {}
    for key in ("logits", "loss", "aux_loss", "z_loss", "router_logits"):
        value = getattr(out, key, None)
        if isinstance(value, torch.Tensor):
            tensors[key] = value[torch.isfinite(value)] if key == "logits" else value
    return tensors


def assert_close(got, want) -> None:
    if getattr(want, "expert_index", None) is not None:  # the MoE routed each row as eager did
        assert torch.equal(got.expert_index, want.expert_index)
    got, want = compared(got), compared(want)
    assert got.keys() == want.keys()
    for key in want:
        assert rel_err(got[key], want[key]) <= TOL, key


@pytest.mark.parametrize(("method", "kind"), cases(default=("ttlora", "bert")))
def test_compiled_inference_matches_eager_and_reuses_graphs(method, kind, make_expert):
    model, _ = MODELS[method](kind, make_expert)
    compiled = torch.compile(model, backend="inductor")
    with torch.no_grad():
        assert_close(compiled(**tiny_batch(BATCH, 10)), model(**tiny_batch(BATCH, 10)))
        assert graphs() >= 1
        with compiles_nothing():  # the same shape, other tokens and padding
            assert_close(compiled(**tiny_batch(BATCH, 10, seed=1, pad_last=5)),
                         model(**tiny_batch(BATCH, 10, seed=1, pad_last=5)))


@pytest.mark.parametrize(("method", "kind"), cases())
def test_new_sequence_length_compiles_once_more(method, kind, make_expert):
    """The second length recompiles each graph at most once, with the length dynamic; a third compiles nothing."""
    model, _ = MODELS[method](kind, make_expert)
    compiled = torch.compile(model, backend="inductor")
    with torch.no_grad():
        compiled(**tiny_batch(BATCH, 10))
        first = graphs()
        assert_close(compiled(**tiny_batch(BATCH, 14)), model(**tiny_batch(BATCH, 14)))
        assert first < graphs() <= 2 * first
        with compiles_nothing():
            assert_close(compiled(**tiny_batch(BATCH, 12)), model(**tiny_batch(BATCH, 12)))


@pytest.mark.parametrize(("method", "kind"), cases())
def test_compiled_training_step_matches_eager(method, kind, make_expert):
    model, targets = MODELS[method](kind, make_expert)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]

    def step(fn, batch):
        out = fn(**batch, **targets)
        return out, torch.autograd.grad(out.loss, params)

    compiled = torch.compile(model, backend="inductor")
    for attempt, batch in enumerate([tiny_batch(BATCH, 10), tiny_batch(BATCH, 10, seed=1, pad_last=5)]):
        want, want_grads = step(model, batch)  # eager first: HF heads set config.problem_type on their first call
        with compiles_nothing() if attempt else contextlib.nullcontext():
            got, got_grads = step(compiled, batch)
        assert_close(got, want)
        for g, w in zip(got_grads, want_grads, strict=True):
            assert rel_err(g, w) <= TOL


def toy_dataset(n: int = 16, seq: int = 10) -> Dataset:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 100, (n, seq), generator=g)
    return Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist(),
                              "labels": (ids[:, 0] % 3).tolist()})


def test_trainer_torch_compile_trains_the_eager_weights(tmp_path):
    """Two AdamW steps with `TrainingArguments(torch_compile=True)` end at the eager run's weights: the compiled
    kernels only reorder floating-point sums (relative differences ~1e-7 in the gradients), which Adam's normalized
    steps of size ~lr do not amplify over two steps. No step after the first compiles anything."""
    weights = {}
    for compile_ in (False, True):
        torch._dynamo.reset()
        model = random_expert("bert", num_labels=3).train()
        model.model.config.problem_type = "single_label_classification"  # else set on the first call: one recompile
        args = TrainingArguments(output_dir=str(tmp_path / str(compile_)), max_steps=2, per_device_train_batch_size=8,
                                 learning_rate=1e-2, report_to=[], use_cpu=True, seed=0, save_strategy="no",
                                 torch_compile=compile_, dataloader_num_workers=0)
        with torch._dynamo.config.patch(error_on_recompile=True):
            Trainer(model=model, args=args, train_dataset=toy_dataset()).train()
        weights[compile_] = {k: v.clone() for k, v in model.adapter_state_dict().items()}
    assert graphs() >= 1  # the compiled run did compile
    start = random_expert("bert", num_labels=3).adapter_state_dict()
    for key, value in weights[False].items():
        assert rel_err(value, start[key]) > 1e-3  # training moved the weights
        assert rel_err(weights[True][key], value) <= TOL, key
