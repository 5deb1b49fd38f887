"""Inference time per row: one mixed batch of test rows (the same rows for every method, AdapterFusion's worker
included), each method's whole prediction (routing and heads included), interleaved round-robin, medians.

AdapterFusion runs in another process and environment, so it is timed there against the same plain base encoder
(transformers' `AutoModel` on the same folder, the same batch): every method is reported in ms per row and as a ratio
to that base forward measured beside it (`x_base`), which is what compares across the two processes.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModel

from benchmarks.common import interleaved
from hf_ttmoe import TTLoRAConfig, TTLoRAMoEModel, load_tokenizer
from hf_ttmoe.adapter import resolve_base_model

from .rows import read_labels, timing_rows
from .run import Run, method_stage


def timing_batch(run: Run, rows_dir: Path, tokenizer) -> tuple[dict, torch.Tensor]:
    s = run.settings
    rows = timing_rows(rows_dir, s.tasks, s.timing_rows, seed=0)
    texts = [r["text"] for _, r in rows]
    pairs = [r.get("text_pair") for _, r in rows]
    # a batch mixes single sentences and pairs: encode row by row, then pad together
    enc = [tokenizer(t, p, truncation=True, max_length=s.max_length) for t, p in zip(texts, pairs)]
    batch = tokenizer.pad(enc, return_tensors="pt")
    return dict(batch), torch.tensor([t for t, _ in rows])


def predictors(run: Run, seed: int, rows_dir: Path) -> dict:
    """Each finished method's `predict(batch, task_ids)`, rebuilt from what its stage saved."""
    s = run.settings
    fns = {}
    if (tt := run.done(method_stage(seed, "ttmoe"))) is not None:
        moe = TTLoRAMoEModel.from_pretrained(tt["router_dir"]).eval()
        fns["ttmoe"] = lambda batch, task_ids: moe(**batch)
        fns["ttmoe_oracle"] = lambda batch, task_ids: moe(**batch, expert_index=task_ids)
    if (lora := run.done(method_stage(seed, "lora"))) is not None:
        from . import peft_experts as pe

        experts = {t: Path(p) for t, p in lora["experts"].items()}
        fns["lora_oracle"] = pe.oracle_model(run, experts)
        if "arrow" in lora["methods"]:
            fns["arrow"] = pe.arrow_model(run, experts, seed)[0]
        if "xlora" in lora["methods"]:
            fns["xlora"] = pe.xlora_predictor(pe.load_xlora(run, experts, seed))
    if run.done(method_stage(seed, "mtl_lora")) is not None:
        from .mtl_lora import load_mtl_lora, predictor

        fns["mtl_lora"] = predictor(load_mtl_lora(run, [len(read_labels(rows_dir, t)) for t in s.tasks], seed))
    return fns


def run_timing(run: Run, seed: int, rows_dir: Path) -> dict:
    s = run.settings
    tokenizer = load_tokenizer(TTLoRAConfig(base_model_name_or_path=s.base_model))
    batch, task_ids = timing_batch(run, rows_dir, tokenizer)
    base = AutoModel.from_pretrained(resolve_base_model(s.base_model)[0]).eval()
    fns = {name: (lambda fn=fn: fn(batch, task_ids)) for name, fn in predictors(run, seed, rows_dir).items()}
    fns["base"] = lambda: base(**batch)
    print(f"  timing {sorted(fns)} on {len(task_ids)} rows, {s.timing_reps} interleaved repetitions, "
          f"{torch.get_num_threads()} thread(s)", flush=True)
    with torch.no_grad():
        seconds = interleaved(fns, reps=s.timing_reps)
    methods = {name: {"ms_per_row": 1000 * sec / len(task_ids), "x_base": sec / seconds["base"]}
               for name, sec in seconds.items() if name != "base"}
    if (af := run.done(method_stage(seed, "adapterfusion"))) is not None:
        t = af["timing"]
        methods["adapterfusion"] = {"ms_per_row": 1000 * t["adapterfusion_s"] / t["rows"],
                                    "x_base": t["adapterfusion_s"] / t["base_s"], "own_process": True}
    return {"rows": len(task_ids), "reps": s.timing_reps, "threads": torch.get_num_threads(),
            "base_ms_per_row": 1000 * seconds["base"] / len(task_ids), "methods": methods}
