"""TT-LoRA model: one expert = a frozen base model + TT-LoRA layers + the task head."""

from __future__ import annotations

from torch import nn

from hub_cards import ExpertCardData

from ..adapter import AdapterModel
from .config import TTLoRAConfig
from .hub import expert_facts
from .layer import TTLoRALinear


class TTLoRAModel(AdapterModel):
    """A TT-LoRA expert on any HF encoder or decoder. See `TTLoRAConfig`.

    Example:
        ```python
        config = TTLoRAConfig(base_model_name_or_path="sentence-transformers/all-MiniLM-L6-v2", num_labels=2)
        model = TTLoRAModel(config)        # or TTLoRAModel(config, base_model=m)
        model.save_pretrained("experts/sst2")
        model = TTLoRAModel.from_pretrained("experts/sst2")
        ```
    """

    config_class = TTLoRAConfig
    adapter_prefix = "ttlora_"
    adapter_layer_cls = TTLoRALinear
    card_data_class = ExpertCardData

    def fill_card_data(self, data: ExpertCardData) -> None:
        dims = {name: layer.base_layer.in_features for name, layer in self.named_modules()
                if isinstance(layer, TTLoRALinear)}
        expert_facts(data, self.config, self.adapter_state_dict(), dims, data.model_id)

    def _make_adapter_layer(self, name: str, linear: nn.Linear) -> TTLoRALinear:
        c = self.config
        in_modes, out_modes = (c.tt_shapes or {}).get(name.rsplit(".", 1)[-1], (None, None))
        return TTLoRALinear(linear, in_modes, out_modes, c.tt_rank, c.alpha, c.forward_impl, c.dropout)

    def set_forward_impl(self, forward_impl: str) -> None:
        """Switch every layer to "factors", "contraction" or "reconstruction"."""
        TTLoRAConfig(forward_impl=forward_impl)  # validates
        self.config.forward_impl = forward_impl
        for layer in self.adapter_layers():
            layer.forward_impl = forward_impl


__all__ = ["TTLoRAModel"]
