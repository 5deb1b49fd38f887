"""TT-LoRA model: one expert = a frozen base model + TT-LoRA layers + the task head."""

from __future__ import annotations

from torch import nn

from hub_cards import ExpertCardData

from ..adapter import AdapterModel
from ..architectures import names_module, path_in_layer
from .config import TTLoRAConfig
from .convert import from_lora
from .hub import expert_facts
from .layer import TTLoRALinear
from .shared_factors import shared_factors
from .stacked import stacked_modes, tie_stacks_, tied_aliases


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
        """Swap in the TT-LoRA layers (a layout that does not fit its module fails there, naming it); every
        `tt_shapes` key must have named an adapted module. Then `config.tt_shapes` is set to every adapted module's
        layout as built (`resolved_layouts`), so a saved expert is rebuilt with its own layout even if the automatic
        choice changes in a later version."""
        super()._inject_adapters()
        layers = self.adapter_layers()
        if self.config.layout == "stacked":
            tie_stacks_(layers)
        paths = [layer.name for layer in layers]
        unknown = sorted(k for k in self.config.tt_shapes or {} if not any(names_module(k, p) for p in paths))
        if unknown:
            adapted = sorted({p.rsplit(".", 1)[-1] for p in paths})
            raise ValueError(f"tt_shapes has layouts for {unknown}, which are not adapted modules; adapted: "
                             f"{adapted} (target_modules={self.config.target_modules}).")
        self.config.tt_shapes = resolved_layouts(layers)

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
        if c.layout == "stacked":
            in_modes, out_modes = stacked_modes(linear.in_features, linear.out_features)
        else:
            in_modes, out_modes = layout_for(name, c.tt_shapes)
        return TTLoRALinear(linear, in_modes, out_modes, c.tt_rank, c.alpha, c.forward_impl, c.dropout, name=name,
                            init=c.init)

    def tied_aliases(self) -> dict[str, str]:
        """The stacked layout's shared cores in every layer but a module's first (`stacked.tied_aliases`)."""
        if self.config.layout != "stacked":
            return {}
        return tied_aliases(self.adapter_layers(), prefix="model.")

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


def layout_for(module: str, tt_shapes: dict | None) -> tuple[list[int] | None, list[int] | None]:
    """`[in_modes, out_modes]` that `tt_shapes` gives the module path `module`, its keys read as `target_modules`
    entries are (`architectures.names_module`): a dotted key (its path in the layer, "attention.output.dense") wins
    over its last name ("dense"); `(None, None)` (automatic) when no key names it."""
    keys = [k for k in tt_shapes or {} if names_module(k, module)]
    return tuple(tt_shapes[max(keys, key=lambda k: "." in k)]) if keys else (None, None)


def resolved_layouts(layers: list[TTLoRALinear]) -> dict[str, list[list[int]]]:
    """Every layer's `[in_modes, out_modes]`, keyed by the module's last name ("query") where all modules of that
    name share one layout, else by each module's path in its layer (BERT's three "dense" linears differ in shape)."""
    by_name: dict[str, dict[str, list[list[int]]]] = {}
    for layer in layers:
        by_name.setdefault(layer.name.rsplit(".", 1)[-1], {})[path_in_layer(layer.name)] = [layer.in_modes,
                                                                                              layer.out_modes]
    shapes = {}
    for name, paths in sorted(by_name.items()):
        distinct = {(tuple(i), tuple(o)) for i, o in paths.values()}
        shapes.update({name: next(iter(paths.values()))} if len(distinct) == 1 else sorted(paths.items()))
    return shapes


__all__ = ["TTLoRAModel"]
