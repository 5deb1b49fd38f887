"""Dense MoE-LoRA model: a frozen base with gated LoRA experts in its feed-forward linears, plus the task head."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.utils import ModelOutput

from hub_cards import MoELoRACardData

from ..adapter import AdapterModel
from ..losses import gate_entropy, load_balancing_loss, router_z_loss, stack_router_logits
from .config import DenseMoELoRAConfig
from .layer import DenseMoELoRALinear


@torch.compiler.disable
def _routed_tokens(router_logits: tuple[torch.Tensor, ...], attention_mask: torch.Tensor | None) -> torch.Tensor:
    """`stack_router_logits`, always eager under `torch.compile`: the number N of non-padding tokens depends on the
    mask's values, so the graph breaks here anyway. N is marked dynamic, so that a batch of a shape seen before but
    with other padding compiles nothing new."""
    stacked = stack_router_logits(router_logits, attention_mask)  # (L, N, E)
    torch._dynamo.maybe_mark_dynamic(stacked, 1)
    return stacked


@dataclass
class DenseMoELoRAOutput(ModelOutput):
    """Outputs of `DenseMoELoRAModel`, following the transformers MoE output contract.

    Args:
        loss: task loss + `router_aux_loss_coef · aux_loss` + `router_z_loss_coef · z_loss`, only with labels.
        logits: the base model's logits.
        aux_loss: load-balancing loss, averaged over layers (always computed).
        z_loss: router z-loss, averaged over layers.
        router_logits: per adapted layer, `(batch, seq, num_experts)`, with `output_router_logits`.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None
    z_loss: torch.Tensor | None = None
    router_logits: tuple[torch.Tensor, ...] | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


class DenseMoELoRAModel(AdapterModel):
    """Dense MoE-LoRA on any HF encoder or decoder. See `DenseMoELoRAConfig`.

    The balance-loss coefficient in use is `self.router_aux_loss_coef` (initialized from the config), so a callback
    can schedule it. Running routing statistics of training forwards accumulate in `self.routing_stats` (tensors, so
    they can be all-reduced across ranks) until `pop_routing_stats()`.
    """

    config_class = DenseMoELoRAConfig
    adapter_prefix = "moelora_"
    adapter_layer_cls = DenseMoELoRALinear
    default_targets = "feed_forward"
    supports_merge = False  # the expert mixture depends on each token: there is no single ΔW to fold in
    card_data_class = MoELoRACardData

    def __init__(self, config: DenseMoELoRAConfig, base_model=None):
        super().__init__(config, base_model)
        self.router_aux_loss_coef = config.router_aux_loss_coef
        self.routing_stats: dict[str, torch.Tensor] = {}

    def _make_adapter_layer(self, name: str, linear: nn.Linear) -> DenseMoELoRALinear:
        c = self.config
        return DenseMoELoRALinear(linear, c.num_experts, c.lora_rank, c.lora_alpha, c.num_experts_per_tok,
                                  c.lora_dropout, c.router_jitter_noise)

    def fill_card_data(self, data: MoELoRACardData) -> None:
        c = self.config
        data.num_experts, data.lora_rank, data.lora_alpha = c.num_experts, c.lora_rank, c.lora_alpha
        data.num_experts_per_tok, data.router_aux_loss_coef = c.num_experts_per_tok, c.router_aux_loss_coef
        data.target_modules, data.layers = list(c.target_modules or []), c.layers_to_transform
        data.adapted_linears = len(self.adapter_layers())
        counts = self.num_parameters_by_kind()
        data.trainable_parameters = {"adapter": counts["adapter"], "head": counts["head"]}

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, inputs_embeds=None,
                labels=None, output_router_logits: bool | None = None, **kwargs) -> DenseMoELoRAOutput:
        out = super().forward(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                              position_ids=position_ids, inputs_embeds=inputs_embeds, labels=labels, **kwargs)
        layers = self.adapter_layers()
        router_logits = tuple(layer.router_logits for layer in layers)  # each (B, T, E)
        for layer in layers:
            layer.router_logits = None
        stacked = _routed_tokens(router_logits, attention_mask)  # (L, N, E): non-padding tokens of every layer
        aux = load_balancing_loss(stacked, self.config.num_experts, self.config.num_experts_per_tok)
        z = router_z_loss(stacked)
        loss = None
        if labels is not None:
            loss = out.loss + self.router_aux_loss_coef * aux + self.config.router_z_loss_coef * z
        if self.training:
            self._accumulate_stats(stacked, aux)
        if output_router_logits is None:
            output_router_logits = self.config.output_router_logits
        return DenseMoELoRAOutput(
            loss=loss, logits=out.logits, aux_loss=aux, z_loss=z,
            router_logits=router_logits if output_router_logits else None,
            hidden_states=getattr(out, "hidden_states", None), attentions=getattr(out, "attentions", None),
        )

    @torch.compiler.disable
    @torch.no_grad()
    def _accumulate_stats(self, stacked: torch.Tensor, aux: torch.Tensor) -> None:
        """Add this forward's routing statistics (`stacked`: `(L, N, E)` router logits of the non-padding tokens) as
        sums (token counts, not fractions), so that sums over steps and over ranks divide into exact global averages.
        All layers at once, and one device-to-host copy. Always eager under `torch.compile`: traced, the growing
        `routing_stats` dict would be a guard that recompiles the model, and the host copy a graph break anyway."""
        num_experts, top_k = self.config.num_experts, self.config.num_experts_per_tok or 1
        layers, tokens, _ = stacked.shape
        flat = stacked.detach().reshape(-1, num_experts)  # (L·N, E)
        chosen = flat.topk(top_k, dim=-1).indices.reshape(-1)  # (L·N·k,)
        entropy = gate_entropy(flat) * flat.shape[0] if flat.shape[0] else flat.new_zeros(())
        sums = torch.cat([torch.bincount(chosen, minlength=num_experts).float(),
                          torch.stack([entropy.float(), aux.detach().float()])]).cpu()
        stats = {"expert_slots": sums[:num_experts], "slots": torch.tensor(float(chosen.numel())),
                 "entropy_sum": sums[num_experts], "tokens": torch.tensor(float(layers * tokens)),
                 "aux_loss_sum": sums[num_experts + 1], "forwards": torch.ones(())}
        for key, value in stats.items():
            self.routing_stats[key] = self.routing_stats.get(key, 0) + value

    def pop_routing_stats(self) -> dict[str, torch.Tensor]:
        """Sums of routing statistics over training forwards since the last call, then reset. Keys: `expert_slots`
        `(E,)` and `slots` (tokens × k routed, over layers), `entropy_sum` and `tokens` (gate entropy over tokens and
        layers), `aux_loss_sum` and `forwards`."""
        stats, self.routing_stats = self.routing_stats, {}
        return stats


__all__ = ["DenseMoELoRAModel", "DenseMoELoRAOutput"]
