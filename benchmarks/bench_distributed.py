"""Distributed training costs (issue 6).

    python -m benchmarks.bench_distributed

1. Per-rank memory of the trainable state (fp32 params + grads + AdamW's two moments) of a TT-LoRA expert vs PEFT
   LoRA r=16 on the same modules, under ZeRO-2 and ZeRO-3 with 2 ranks, for MiniLM and the Llama-3.2-1B-shaped
   config (counts from models built on the meta device; ZeRO-2 partitions grads and optimizer state, ZeRO-3 also
   the parameters).
2. Wall time of 1 process vs 2-process ZeRO-2 / ZeRO-3 for the same global batch on MiniLM (tests/dist_worker.py's
   kind of run, 20 steps): on 2 CPU cores no speed-up is expected.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, LlamaConfig

from benchmarks.common import LLAMA_1B, REFERENCE_SHAPES, save
from hf_ttmoe import DEFAULT_BASE_MODEL, TTLoRAConfig, TTLoRAModel
from hf_ttmoe.adapter import resolve_base_model

ROOT = Path(__file__).resolve().parents[1]


def meta_base(name: str):
    config = LlamaConfig(**LLAMA_1B, num_labels=2) if name == "llama-1b" else AutoConfig.from_pretrained(
        resolve_base_model(DEFAULT_BASE_MODEL)[0], num_labels=2)
    with torch.device("meta"):
        return AutoModelForSequenceClassification.from_config(config)


def trainable_counts(name: str) -> dict[str, int]:
    import peft

    targets = ["q_proj", "v_proj"] if name == "llama-1b" else ["query", "value"]
    shapes = REFERENCE_SHAPES if name == "llama-1b" else None
    tt = TTLoRAModel(TTLoRAConfig(base_model_name_or_path=name, num_labels=2, tt_shapes=shapes,
                                  target_modules=targets), base_model=meta_base(name))
    lora = peft.get_peft_model(meta_base(name), peft.LoraConfig(r=16, target_modules=targets))
    return {"TT-LoRA r=5": tt.num_parameters_by_kind()["adapter"],
            "PEFT LoRA r=16": sum(p.numel() for n, p in lora.named_parameters() if "lora_" in n)}


def per_rank_bytes(params: int, stage: int, ranks: int = 2) -> int:
    """fp32 params (4 B) + grads (4 B) + AdamW moments (8 B) held by one rank."""
    if stage == 2:
        return 4 * params + (4 + 8) * params // ranks
    return 16 * params // ranks


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wall_time(nproc: int, deepspeed: str | None, base_dir: str, steps: int) -> float:
    worker = [str(ROOT / "tests/dist_worker.py"), "--kind", "ttlora", "--base_dir", base_dir, "--out_dir",
              tempfile.mkdtemp(), "--max_steps", str(steps)] + (["--deepspeed", deepspeed] if deepspeed else [])
    cmd = ([sys.executable, *worker] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run",
           "--nproc_per_node", str(nproc), "--master_port", str(free_port()), *worker])
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": str(2 // nproc)})
    return time.perf_counter() - t0


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    memory = []
    for name in ("minilm", "llama-1b"):
        for method, params in trainable_counts(name).items():
            for stage in (2, 3):
                memory.append({"model": name, "method": method, "trainable": params, "zero": stage,
                               "per_rank_bytes": per_rank_bytes(params, stage)})
    print("| model | method | trainable | ZeRO-2 per rank | ZeRO-3 per rank |\n|---|---|---:|---:|---:|")
    for r2, r3 in zip(memory[::2], memory[1::2]):
        print(f"| {r2['model']} | {r2['method']} | {r2['trainable']:,} | {r2['per_rank_bytes'] / 1024:.1f} KiB | "
              f"{r3['per_rank_bytes'] / 1024:.1f} KiB |")
    base_dir = tempfile.mkdtemp()
    AutoModelForSequenceClassification.from_pretrained(resolve_base_model(DEFAULT_BASE_MODEL)[0], num_labels=3
                                                       ).save_pretrained(base_dir)
    times = {}
    for label, nproc, ds in (("1 process", 1, None), ("2-process DDP", 2, None),
                             ("2-process ZeRO-2", 2, str(ROOT / "scripts/ds_configs/zero2.json")),
                             ("2-process ZeRO-3", 2, str(ROOT / "scripts/ds_configs/zero3.json"))):
        times[label] = wall_time(nproc, ds, base_dir, steps=20)
        print(label, f"{times[label]:.1f} s")
    save("distributed", {"memory": memory, "wall_time_s": times})
    print(json.dumps({k: round(v / times["1 process"], 2) for k, v in times.items()}))


if __name__ == "__main__":
    main()
