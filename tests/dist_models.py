"""Models and data shared by the distributed worker and the single-process references in test_distributed.py."""

from __future__ import annotations

import torch

GLOBAL_BATCH = 8  # = the dataset size: every step sees all rows, whatever the sampler, so runs compare exactly
BATCH = GLOBAL_BATCH
SEQ = 8


def make_dataset() -> dict[str, list]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 100, (GLOBAL_BATCH, SEQ), generator=g)
    mask = torch.ones_like(ids)
    mask[0, -3:] = 0
    return {"input_ids": ids.tolist(), "attention_mask": mask.tolist(), "labels": (ids[:, 0] % 3).tolist()}


def build_model(kind: str, base_dir: str):
    """A model of `kind` on the saved tiny base in `base_dir` (loaded with from_pretrained, so ZeRO-3 partitions)."""
    torch.manual_seed(0)
    if kind == "ttlora":
        from hf_ttmoe import TTLoRAConfig, TTLoRAModel

        return TTLoRAModel(TTLoRAConfig(base_model_name_or_path=base_dir, num_labels=3, tt_rank=3))
    if kind == "moe_lora":
        from hf_ttmoe import DenseMoELoRAConfig, DenseMoELoRAModel

        # the balance loss is computed per rank (as Switch does per device), so it is left out of the loss here to
        # compare losses exactly; its statistics are still logged and must be reduced over ranks
        return DenseMoELoRAModel(DenseMoELoRAConfig(base_model_name_or_path=base_dir, num_labels=3, num_experts=4,
                                                    lora_rank=2, router_aux_loss_coef=0.0))
    raise ValueError(f"unknown model kind {kind!r}; known: {KINDS}")


def callbacks_for(kind: str) -> list:
    if kind == "moe_lora":
        from trainer_callbacks import BalanceLossCallback

        return [BalanceLossCallback()]
    return []


KINDS = ("ttlora", "moe_lora")
