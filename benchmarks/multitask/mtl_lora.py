"""The "no experts" baseline: one PEFT LoRA (r=16 on query/value) trained on the union of the tasks' training rows,
shuffled together, with one head per task (each row's loss from its task's head; the task is given at test too)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from hf_ttmoe import TTLoRAConfig, load_tokenizer

from .fit import fit
from .heads import TaskHeads, predict_rows, score
from .params import stored_parameters, trainable_parameters
from .peft_experts import LORA_RANK, TARGETS, Pooled, base_classifier
from .rows import mixed, read_labels
from .run import Run


def build(run: Run, num_labels: list[int], seed: int) -> Pooled:
    import peft

    torch.manual_seed(seed)
    base = base_classifier(run)
    model = peft.get_peft_model(base, peft.LoraConfig(r=LORA_RANK, lora_alpha=LORA_RANK, target_modules=TARGETS))
    return Pooled(model, TaskHeads(base.config.hidden_size, num_labels))


def predictor(model: Pooled):
    def predict(batch, task_ids):
        return task_ids, model.heads(model.pooled(batch), task_ids)[1]

    return predict


def load_mtl_lora(run: Run, num_labels: list[int], seed: int) -> Pooled:
    """The multi-task LoRA and heads `run_mtl_lora` saved."""
    from peft import set_peft_model_state_dict

    model = build(run, num_labels, seed)
    folder = model_dir(run, seed)
    result = set_peft_model_state_dict(model.peft_model, load_file(str(folder / "adapter_model.safetensors")))
    if result.unexpected_keys:
        raise RuntimeError(f"multi-task LoRA does not fit: unexpected {result.unexpected_keys}")
    model.heads.load_state_dict(load_file(str(folder / "heads.safetensors")))
    return model.eval()


def model_dir(run: Run, seed: int) -> Path:
    return run.work / f"seed{seed}" / "mtl_lora"


def run_mtl_lora(run: Run, seed: int, rows_dir: Path) -> dict:
    s = run.settings
    tokenizer = load_tokenizer(TTLoRAConfig(base_model_name_or_path=s.base_model))
    num_labels = [len(read_labels(rows_dir, t)) for t in s.tasks]
    model = build(run, num_labels, seed)
    train = mixed(rows_dir, s.tasks, "train", tokenizer, s.max_length, seed)
    print(f"  training one LoRA on {len(train)} rows of {len(s.tasks)} tasks", flush=True)
    info = fit(model, train, tokenizer, s.mtl_lr, seed, s, run.work / "trainer")
    info["trainable_params"] = trainable_parameters(model)
    out = model_dir(run, seed)
    model.peft_model.save_pretrained(str(out))
    save_file({k: v.contiguous() for k, v in model.heads.state_dict().items()}, str(out / "heads.safetensors"))
    stored = stored_parameters(out / "adapter_model.safetensors", out / "heads.safetensors")

    test = mixed(rows_dir, s.tasks, "test", tokenizer, s.max_length, seed)
    result = score(predict_rows(predictor(model.eval()), test, tokenizer), s.tasks, num_labels, routed=False)
    return {"methods": {"mtl_lora": {"trainable_params": info["trainable_params"], "stored_params": stored,
                                     "composition_params": 0, "task_given": True, **result}},
            "training": info, "model_dir": str(out)}
