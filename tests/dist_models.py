"""Models and data shared by the distributed worker and the single-process references in test_distributed.py."""

from __future__ import annotations

import torch

GLOBAL_BATCH = 8  # = the dataset size: every step sees all rows, whatever the sampler, so runs compare exactly
BATCH = GLOBAL_BATCH
SEQ = 8


def make_dataset(kind: str = "ttlora") -> dict[str, list]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 100, (GLOBAL_BATCH, SEQ), generator=g)
    mask = torch.ones_like(ids)
    mask[0, -3:] = 0
    data = {"input_ids": ids.tolist(), "attention_mask": mask.tolist()}
    if kind == "router":  # stage 2 learns which expert (task) each row belongs to
        return {**data, "task_ids": (ids[:, 0] % 2).tolist()}
    return {**data, "labels": (ids[:, 0] % 3).tolist()}


def save_router_experts(base_dir) -> list[str]:
    """Two frozen TT-LoRA experts with random cores on the saved base, in base_dir/experts (made once, by the test)."""
    from hf_ttmoe import TTLoRAConfig, TTLoRAModel

    paths = []
    for i in range(2):
        torch.manual_seed(10 + i)
        expert = TTLoRAModel(TTLoRAConfig(base_model_name_or_path=str(base_dir), num_labels=3, tt_rank=3,
                                          task=f"task{i}"))
        with torch.no_grad():
            for p in expert.parameters():
                if p.requires_grad:
                    p.normal_(0, 0.3)
        paths.append(f"{base_dir}/experts/e{i}")
        expert.save_pretrained(paths[-1])
    return paths


def whole_base(base_dir):
    """The base loaded without ZeRO-3's partitioning on load: experts compose onto whole weights."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, BertForSequenceClassification

    model = BertForSequenceClassification(AutoConfig.from_pretrained(base_dir))
    model.load_state_dict(load_file(f"{base_dir}/model.safetensors"), strict=False)
    return model


def build_model(kind: str, base_dir: str):
    """A model of `kind` on the saved tiny base in `base_dir` (loaded with from_pretrained, so ZeRO-3 partitions)."""
    torch.manual_seed(0)
    if kind in ("ttlora", "ttlora_stacked"):
        from hf_ttmoe import TTLoRAConfig, TTLoRAModel

        layout = "stacked" if kind == "ttlora_stacked" else "chain"
        return TTLoRAModel(TTLoRAConfig(base_model_name_or_path=base_dir, num_labels=3, tt_rank=3, layout=layout))
    if kind == "moe_lora":
        from hf_ttmoe import DenseMoELoRAConfig, DenseMoELoRAModel

        # the balance loss is computed per rank (as Switch does per device), so it is left out of the loss here to
        # compare losses exactly; its statistics are still logged and must be reduced over ranks
        return DenseMoELoRAModel(DenseMoELoRAConfig(base_model_name_or_path=base_dir, num_labels=3, num_experts=4,
                                                    lora_rank=2, router_aux_loss_coef=0.0))
    if kind == "router":
        from hf_ttmoe import TTLoRAMoEModel

        return TTLoRAMoEModel.from_experts([f"{base_dir}/experts/e0", f"{base_dir}/experts/e1"],
                                           base_model=whole_base(base_dir), noisy_gating=False)
    raise ValueError(f"unknown model kind {kind!r}; known: {KINDS}")


def callbacks_for(kind: str) -> list:
    if kind == "moe_lora":
        from trainer_callbacks import BalanceLossCallback

        return [BalanceLossCallback()]
    return []


KINDS = ("ttlora", "ttlora_stacked", "moe_lora", "router")
