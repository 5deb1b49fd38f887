"""Top-level ATen ops per training step: what a GPU pays in kernel launches, counted deterministically on the CPU.

    python -m benchmarks.bench_ops [--batch 2 --tokens 16]

One forward + backward of MiniLM (random weights of its architecture, batch 2, 16 tokens) with each adapter; an op is
"top-level" when no other ATen op encloses it (what the Python side or the autograd engine launches; on a GPU each
becomes at least one kernel). Compares TT-LoRA on query/value with PEFT LoRA r=16 there, and dense MoE-LoRA (8
experts of rank 4 in the feed-forward linears) with PEFT LoRA of rank E·r = 32 on the same linears.
"""

from __future__ import annotations

import argparse
import copy

import torch

from hf_ttmoe import DenseMoELoRAConfig, DenseMoELoRAModel, TTLoRAConfig, TTLoRAModel
from hf_ttmoe.testing import top_level_ops

from .common import bench_base, save


def models(base) -> dict:
    import peft

    ffn = ["intermediate.dense", "output.dense"]
    moe = DenseMoELoRAConfig(base_model_name_or_path=base.config.name_or_path, num_labels=2, target_modules=ffn)
    return {
        "TT-LoRA r=5 (q, v)": TTLoRAModel(TTLoRAConfig(base_model_name_or_path=base.config.name_or_path,
                                                       num_labels=2), base_model=copy.deepcopy(base)),
        "PEFT LoRA r=16 (q, v)": peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(
            r=16, lora_alpha=32, target_modules=["query", "value"], modules_to_save=["classifier"])),
        "dense MoE-LoRA E=8 r=4 (FFN)": DenseMoELoRAModel(moe, base_model=copy.deepcopy(base)),
        "PEFT LoRA r=32 (FFN)": peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(
            r=32, lora_alpha=64, target_modules=ffn, modules_to_save=["classifier"])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=16)
    args = parser.parse_args()
    args.random_base = True
    base = bench_base(args)
    torch.manual_seed(0)
    batch = {"input_ids": torch.randint(1000, 2000, (args.batch, args.tokens)),
             "attention_mask": torch.ones(args.batch, args.tokens, dtype=torch.long),
             "labels": torch.zeros(args.batch, dtype=torch.long)}
    counts = {}
    for name, model in models(base).items():
        model.train()

        def step(m=model):  # a training step's forward and backward (gradients start at None, as after zero_grad)
            m.zero_grad(set_to_none=True)
            m(**batch).loss.backward()

        step()  # warm-up: lazy initialisation and caches are not what a step costs
        counts[name] = top_level_ops(step)
        print(f"{name}: {counts[name]} top-level ATen ops per forward+backward")
    ratios = {"ttlora_over_lora": counts["TT-LoRA r=5 (q, v)"] / counts["PEFT LoRA r=16 (q, v)"],
              "moe_lora_over_lora": counts["dense MoE-LoRA E=8 r=4 (FFN)"] / counts["PEFT LoRA r=32 (FFN)"]}
    print(f"TT-LoRA / LoRA {ratios['ttlora_over_lora']:.2f}; dense MoE-LoRA / LoRA of rank E·r "
          f"{ratios['moe_lora_over_lora']:.2f}")
    save("ops", {"batch": args.batch, "tokens": args.tokens, "counts": counts, **ratios})


if __name__ == "__main__":
    main()
