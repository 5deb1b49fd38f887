"""TT-LoRA model: one expert = a frozen base model + TT-LoRA layers + the task head."""

from __future__ import annotations

from torch import nn

from hub_cards import ExpertCardData

from ..adapter import AdapterModel
from .config import TTLoRAConfig
from .convert import from_lora
from .hub import expert_facts
from .layer import TTLoRALinear
from .shared_factors import shared_factors


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

    def _inject_adapters(self) -> None:
        """Swap in the TT-LoRA layers (a layout that does not fit its module fails there, naming it); then every
        `tt_shapes` key must have named an adapted module (by its last name component)."""
        super()._inject_adapters()
        adapted = sorted({layer.name.rsplit(".", 1)[-1] for layer in self.adapter_layers()})
        unknown = sorted(set(self.config.tt_shapes or {}) - set(adapted))
        if unknown:
            raise ValueError(f"tt_shapes has layouts for {unknown}, which are not adapted modules; adapted: "
                             f"{adapted} (target_modules={self.config.target_modules}).")

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, inputs_embeds=None,
                labels=None, **kwargs):
        """As `AdapterModel.forward` (the named arguments are what `Trainer` keeps of a dataset). With gradient, the
        factors of all layers that share a TT layout are built at once: a few ops per layout and step instead of ~40
        per layer (`shared_factors.py`)."""
        with shared_factors(self.adapter_layers()):
            return super().forward(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                                   position_ids=position_ids, inputs_embeds=inputs_embeds, labels=labels, **kwargs)

    def _make_adapter_layer(self, name: str, linear: nn.Linear) -> TTLoRALinear:
        c = self.config
        in_modes, out_modes = (c.tt_shapes or {}).get(name.rsplit(".", 1)[-1], (None, None))
        return TTLoRALinear(linear, in_modes, out_modes, c.tt_rank, c.alpha, c.forward_impl, c.dropout, name=name,
                            init=c.init)

    @classmethod
    def from_lora(cls, path_or_hub_id, tt_rank: int | list[int] = 5, revision: str | None = None, base_model=None,
                  **kwargs) -> TTLoRAModel:
        """Compress a PEFT LoRA adapter (directory or Hub id; `adapter_model.safetensors` only) into a TT-LoRA expert:
        each ΔW = scaling · B @ A is fitted by TT-SVD at `tt_rank` in the layer's own layout (exact when `tt_rank`
        reaches ΔW's TT ranks), the head (`modules_to_save`) is copied. `model.from_lora_report` gives each module's
        relative ΔW error. `kwargs`: `token`, `cache_dir`, `local_files_only`, and `TTLoRAConfig` fields (`alpha`,
        `task`, `id2label`, ...). See `hf_ttmoe.ttlora.convert` for what is imported and what is refused."""
        return from_lora(cls, path_or_hub_id, tt_rank, revision, base_model, **kwargs)

    def set_forward_impl(self, forward_impl: str) -> None:
        """Switch every layer to "factors", "contraction" or "reconstruction"."""
        TTLoRAConfig(forward_impl=forward_impl)  # validates
        self.config.forward_impl = forward_impl
        for layer in self.adapter_layers():
            layer.forward_impl = forward_impl


__all__ = ["TTLoRAModel"]
