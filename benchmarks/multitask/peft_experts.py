"""PEFT over per-task LoRA experts (r=16 on query/value, as `benchmarks/bench_quality.py`'s `lora`): the right expert
by hand (oracle, PEFT's mixed-adapter batches), Arrow routing (training-free) and X-LoRA (a trained gate).

Each expert is saved as PEFT saves a LoRA (`adapter_model.safetensors`, `adapter_config.json`) with its task head
beside it (`head.safetensors`), not as a `modules_to_save` classifier: the tasks' heads have different sizes, and a
PEFT model that loads several adapters into one base would load every adapter's classifier into the same module.
Arrow and X-LoRA mix the experts inside the encoder; the head that answers a row is the one of the expert their own
routing weights favour most for that row (summed over tokens and layers): that choice is this benchmark's, as neither
method chooses a head, and it is what their "router accuracy" measures.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding

from hf_ttmoe import TTLoRAConfig, load_base_model, load_tokenizer

from ..lr_grid import tune
from .fit import fit
from .heads import TaskHeads, predict_rows, score
from .params import stored_parameters, trainable_parameters
from .rows import encode, mixed, read_labels, read_rows
from .run import Run

LORA_RANK = 16
TARGETS = ["query", "value"]
HEAD_FILE = "head.safetensors"
EXPERT_FILES = ("adapter_model.safetensors", HEAD_FILE, "results.json")


def base_classifier(run: Run, num_labels: int = 2):
    """The base model with a sequence-classification head (`.bert` is the encoder, `.bert.pooler` its pooler)."""
    return load_base_model(TTLoRAConfig(base_model_name_or_path=run.settings.base_model, num_labels=num_labels))


@torch.no_grad()
def validation_accuracy(model, rows: list[dict], tokenizer, max_length: int) -> float:
    """Accuracy of a sequence classifier on `rows` (the task's validation rows)."""
    data = encode(rows, tokenizer, max_length, 0).remove_columns("task_ids")
    correct = 0
    for batch in DataLoader(data, batch_size=64, collate_fn=DataCollatorWithPadding(tokenizer)):
        labels = batch.pop("labels")
        correct += (model(**batch).logits.argmax(-1) == labels).sum().item()
    return correct / len(data)


def train_expert(run: Run, task: str, lr: float, seed: int, rows_dir: Path, tokenizer, out: Path) -> None:
    import peft

    s = run.settings
    labels = read_labels(rows_dir, task)
    torch.manual_seed(seed)
    model = peft.get_peft_model(base_classifier(run, len(labels)),
                                peft.LoraConfig(r=LORA_RANK, lora_alpha=LORA_RANK, target_modules=TARGETS))
    classifier = model.get_base_model().classifier
    classifier.requires_grad_(True)  # trained with the adapter, saved beside it
    data = encode(read_rows(rows_dir, task, "train"), tokenizer, s.max_length, 0).remove_columns("task_ids")
    info = fit(model, data, tokenizer, lr, seed, s, run.work / "trainer")
    info["trainable_params"] = trainable_parameters(model)
    info["validation_accuracy"] = validation_accuracy(model, read_rows(rows_dir, task, "validation"), tokenizer,
                                                      s.max_length)
    model.save_pretrained(str(out))
    save_file({k: v.contiguous() for k, v in classifier.state_dict().items()}, str(out / HEAD_FILE),
              metadata={"labels": json.dumps(labels)})
    (out / "results.json").write_text(json.dumps(info, indent=2) + "\n")


def complete(out: Path) -> bool:
    """An expert folder with every file and its validation accuracy (older runs saved none: those are retrained)."""
    return (all((out / f).exists() for f in EXPERT_FILES)
            and "validation_accuracy" in json.loads((out / "results.json").read_text()))


def train_experts(run: Run, seed: int, rows_dir: Path, tokenizer) -> tuple[dict[str, Path], dict[str, dict], float]:
    """Per task, a LoRA expert at each rate of `lora_lrs` (reused when one trained alike exists); the task keeps the
    best on validation rows (`lr_grid`). Returns the chosen experts, the choices and the grid's training seconds."""
    s = run.settings
    def folder(task: str, lr: float) -> Path:
        return run.expert_dir("lora", task, s.training_key("lora", LORA_RANK, TARGETS, lr, seed))

    def train(task: str, lr: float, out: Path) -> None:
        train_expert(run, task, lr, seed, rows_dir, tokenizer, out)

    def read(out: Path) -> dict:
        return json.loads((out / "results.json").read_text())

    experts, choices, train_s = {}, {}, 0.0
    for i, task in enumerate(s.tasks):
        print(f"  LoRA expert {task} ({i + 1}/{len(s.tasks)})", flush=True)
        choices[task], records = tune(task, s.lora_lrs, folder, complete, train, read, s.extend_grid)
        experts[task] = folder(task, choices[task]["chosen"])
        train_s += sum(r["train_s"] for r in records.values())
    return experts, choices, train_s


def load_heads(experts: dict[str, Path]) -> TaskHeads:
    states = [load_file(str(p / HEAD_FILE)) for p in experts.values()]
    heads = TaskHeads(states[0]["weight"].shape[1], [st["weight"].shape[0] for st in states])
    for head, state in zip(heads.heads, states):
        head.load_state_dict(state)
    return heads.eval().requires_grad_(False)


class Pooled(nn.Module):
    """A PEFT-wrapped classifier run for its encoder's pooled output (its own classifier is not used), then the
    per-task heads. `route` maps (batch, true task ids) to the head each row goes to."""

    def __init__(self, peft_model, heads: TaskHeads):
        super().__init__()
        self.peft_model, self.heads = peft_model, heads

    def pooled(self, batch: dict, **kwargs) -> torch.Tensor:
        out = self.peft_model(**batch, output_hidden_states=True, **kwargs)
        return self.peft_model.get_base_model().bert.pooler(out.hidden_states[-1])  # (B, H)

    def forward(self, input_ids, attention_mask, token_type_ids=None, task_ids=None, labels=None):
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        loss, _ = self.heads(self.pooled(batch), task_ids, labels)
        return {"loss": loss}


def oracle_model(run: Run, experts: dict[str, Path]):
    """Every expert in one PEFT model; each row uses its task's adapter (`adapter_names=`) and head."""
    import peft

    tasks = list(experts)
    model = peft.PeftModel.from_pretrained(base_classifier(run), str(experts[tasks[0]]), adapter_name=tasks[0])
    for task in tasks[1:]:
        model.load_adapter(str(experts[task]), adapter_name=task)
    pooled = Pooled(model.eval(), load_heads(experts))

    def predict(batch, task_ids):
        return task_ids, pooled.heads(pooled.pooled(batch, adapter_names=[tasks[t] for t in task_ids]), task_ids)[1]

    return predict


class ArrowVotes:
    """Forward hooks on every Arrow layer that add up, per row, the routing coefficients each expert receives over the
    row's real tokens (the same top-k softmax over |token · prototype| the layer computes)."""

    def __init__(self, model):
        from peft.tuners.lora.arrow import ArrowLoraLinearLayer

        self.layers = [m for m in model.modules() if isinstance(m, ArrowLoraLinearLayer)]
        if not self.layers:
            raise RuntimeError("no Arrow layer found in the model")
        self.mask, self.votes = None, None
        for layer in self.layers:
            layer.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, layer, args, kwargs, output):
        x = (args[0] if args else kwargs["x"]).float()  # (B, T, in)
        sim = (x @ layer.prototypes.T.float()).abs()  # (B, T, E)
        top_v, idx = sim.topk(layer.top_k, dim=-1)
        coeff = torch.full_like(sim, float("-inf")).scatter(-1, idx, top_v).div(layer.temperature).softmax(-1)
        votes = (coeff * self.mask[..., None]).sum(1)  # (B, E)
        self.votes = votes if self.votes is None else self.votes + votes

    def choose(self, attention_mask: torch.Tensor, run_forward) -> torch.Tensor:
        self.mask, self.votes = attention_mask.float(), None
        run_forward()
        return self.votes.argmax(-1)


def arrow_model(run: Run, experts: dict[str, Path], seed: int):
    import peft

    config = peft.ArrowConfig(top_k=min(run.settings.arrow_top_k, len(experts)), router_temperature=1.0,
                              rng_seed=seed)
    model = peft.create_arrow_model(base_classifier(run), [str(p) for p in experts.values()], config).eval()
    pooled = Pooled(model, load_heads(experts))
    votes = ArrowVotes(model)

    def predict(batch, task_ids):
        out = {}
        chosen = votes.choose(batch["attention_mask"], lambda: out.setdefault("pooled", pooled.pooled(batch)))
        return chosen, pooled.heads(out["pooled"], chosen)[1]

    return predict, config


class UnderModel(nn.Module):
    """The base classifier under a `.model` attribute. X-LoRA's adapter loader
    (`peft.tuners.xlora.model._load_adapter_into_lora_model`) rewrites every saved key to start with `model.model.`,
    the layout of `*ForCausalLM` models whose decoder is `.model`; a BERT classifier's keys
    (`base_model.model.bert.encoder...`) become `model.model.bert.encoder...` and match nothing ("Got unexpected
    keys!"). Under `.model` the rewritten keys are the module's own. X-LoRA itself is unchanged."""

    def __init__(self, inner):
        super().__init__()
        self.model, self.config = inner, inner.config

    def forward(self, **kwargs):
        return self.model(**kwargs)

    @property
    def bert(self):
        return self.model.bert


def xlora_model(run: Run, experts: dict[str, Path]):
    import peft

    base = UnderModel(base_classifier(run))
    base.config.use_cache = False  # X-LoRA refuses a config whose use_cache is set
    config = peft.XLoraConfig(hidden_size=base.config.hidden_size,
                              adapters={str(i): str(p) for i, p in enumerate(experts.values())})
    model = peft.get_peft_model(base, config)
    return Pooled(model, load_heads(experts))


def xlora_gate_file(run: Run, seed: int) -> Path:
    return run.work / f"seed{seed}" / "xlora_gate.safetensors"


def load_xlora(run: Run, experts: dict[str, Path], seed: int) -> Pooled:
    """The X-LoRA model with the gate `run_xlora` trained."""
    pooled = xlora_model(run, experts)
    state = load_file(str(xlora_gate_file(run, seed)))
    missing, unexpected = pooled.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if k in state]:
        raise RuntimeError(f"X-LoRA gate does not fit: unexpected {unexpected}")
    return pooled.eval()


def xlora_predictor(pooled: Pooled):
    def predict(batch, task_ids):
        p = pooled.pooled(batch)
        scalings = pooled.peft_model.base_model.internal_xlora_scalings  # (B, T, layers, E)
        mask = batch["attention_mask"].float()[..., None, None]
        chosen = (scalings * mask).sum((1, 2)).argmax(-1)
        return chosen, pooled.heads(p, chosen)[1]

    return predict


def run_peft_experts(run: Run, seed: int, rows_dir: Path) -> dict:
    s = run.settings
    tokenizer = load_tokenizer(TTLoRAConfig(base_model_name_or_path=s.base_model))
    experts, choices, grid_train_s = train_experts(run, seed, rows_dir, tokenizer)
    num_labels = [len(read_labels(rows_dir, t)) for t in s.tasks]
    test = mixed(rows_dir, s.tasks, "test", tokenizer, s.max_length, seed)
    files = [p / f for p in experts.values() for f in ("adapter_model.safetensors", HEAD_FILE)]
    experts_params = stored_parameters(*files)
    train = [json.loads((p / "results.json").read_text()) for p in experts.values()]
    common = {"trainable_params": experts_params, "stored_params": experts_params, "composition_params": 0}
    print("  evaluating the LoRA experts (oracle)", flush=True)
    methods = {"lora_oracle": {**common, "task_given": True,
                               **score(predict_rows(oracle_model(run, experts), test, tokenizer), s.tasks, num_labels,
                                       routed=False)}}
    errors = {}
    if "arrow" in s.methods:
        print("  evaluating Arrow routing", flush=True)
        try:
            predict, config = arrow_model(run, experts, seed)
            methods["arrow"] = {**common, "task_given": False, "top_k": config.top_k,
                                **score(predict_rows(predict, test, tokenizer), s.tasks, num_labels, routed=True)}
        except Exception as e:  # noqa: BLE001 - reported in the results, not hidden
            errors["arrow"] = f"{type(e).__name__}: {e}"
    if "xlora" in s.methods:
        print("  training and evaluating X-LoRA", flush=True)
        try:
            methods["xlora"] = run_xlora(run, seed, rows_dir, experts, tokenizer, test, num_labels, experts_params)
        except Exception as e:  # noqa: BLE001
            errors["xlora"] = f"{type(e).__name__}: {e}"
    for name, error in errors.items():
        print(f"  {name} failed: {error}", flush=True)
    return {"methods": methods, "errors": errors, "experts": {t: str(p) for t, p in experts.items()},
            "training": {"expert_train_s": sum(r["train_s"] for r in train),
                         "expert_steps": sum(r["steps"] for r in train), "grid_train_s": grid_train_s},
            "lr_choice": choices}


def run_xlora(run: Run, seed: int, rows_dir: Path, experts, tokenizer, test, num_labels, experts_params) -> dict:
    """X-LoRA's gate trained on the union of the tasks' training rows, each row's loss from its own task's head (the
    experts and heads frozen), then evaluated with the head its gate favours."""
    s = run.settings
    torch.manual_seed(seed)
    pooled = xlora_model(run, experts)
    gate = [p for n, p in pooled.named_parameters() if p.requires_grad]
    train = mixed(rows_dir, s.tasks, "train", tokenizer, s.max_length, seed)
    info = fit(pooled, train, tokenizer, s.xlora_lr, seed, s, run.work / "trainer")
    gate_params = sum(p.numel() for p in gate)
    state = {n: p.detach().contiguous() for n, p in pooled.named_parameters() if p.requires_grad}
    out = xlora_gate_file(run, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out))
    return {"trainable_params": experts_params + gate_params, "stored_params": experts_params + gate_params,
            "composition_params": gate_params, "task_given": False, "training": info,
            **score(predict_rows(xlora_predictor(pooled), test, tokenizer), s.tasks, num_labels, routed=True)}
