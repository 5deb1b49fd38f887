"""What hf_ttmoe knows about base architectures, in one table: where attention and feed-forward linears sit, which
are encoders, and how transformer layers are named. Imports nothing of hf_ttmoe."""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class Architecture:
    """Per `model_type`: `attention` = the query/value projections (TT-LoRA's default targets), `feed_forward` = the
    feed-forward linears as paths inside a layer (dense MoE-LoRA's default targets), `encoder` = bidirectional
    (routers pool encoders by mean, decoders by their last token)."""

    attention: tuple[str, ...]
    feed_forward: tuple[str, ...]
    encoder: bool


_BERT = Architecture(("query", "value"), ("intermediate.dense", "output.dense"), encoder=True)
_LLAMA = Architecture(("q_proj", "v_proj"), ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"), encoder=False)
ARCHITECTURES = {
    "bert": _BERT,
    "roberta": _BERT,
    "xlm-roberta": _BERT,
    "electra": _BERT,
    "distilbert": Architecture(("q_lin", "v_lin"), ("ffn.lin1", "ffn.lin2"), encoder=True),
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "qwen3": _LLAMA,
    "gemma": _LLAMA,
}
LAYER_LIST_NAMES = ("layer", "layers", "h", "block", "blocks")  # the nn.ModuleList of transformer layers
_LAYER_INDEX = re.compile(rf"\.(?:{'|'.join(LAYER_LIST_NAMES)})\.(\d+)\.")  # ".layers.3." -> 3


def default_targets(model: nn.Module, model_type: str, kind: str) -> list[str]:
    """The `kind` ("attention" or "feed_forward") linears of `model_type`; the error lists the model's linears."""
    if model_type in ARCHITECTURES:
        return list(getattr(ARCHITECTURES[model_type], kind))
    linears = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
    raise ValueError(
        f"No default target_modules for model_type={model_type!r}; pass target_modules= with some of {linears}."
    )


def is_encoder(model_type: str) -> bool:
    return model_type in ARCHITECTURES and ARCHITECTURES[model_type].encoder


def layer_index(name: str) -> int | None:
    """The transformer layer a module path lies in ("model.layers.3.self_attn.q_proj" -> 3), or None."""
    match = _LAYER_INDEX.search(f".{name}.")
    return int(match.group(1)) if match else None


def path_in_layer(name: str) -> str:
    """A module path below its layer ("encoder.layer.0.attention.output.dense" -> "attention.output.dense"); the
    whole path for a module outside the layers ("bert.pooler.dense")."""
    return _LAYER_INDEX.split(f".{name}")[-1].lstrip(".")


def target_names(model: nn.Module, targets: list[str], layers: list[int] | None = None) -> list[str]:
    """The `nn.Linear` module paths that `targets` name: a target without a dot matches the last name component
    ("query"); a dotted target matches the path inside its layer exactly ("output.dense" is BERT's FFN output, not
    "attention.output.dense"). `layers`: only inside these transformer layers (None = anywhere)."""

    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear)
            and any(names_module(t, name) for t in targets) and (layers is None or layer_index(name) in layers)]


def names_module(target: str, name: str) -> bool:
    """Whether `target` names the module path `name`: its last name component ("query"), or for a dotted target its
    path inside its layer ("attention.output.dense")."""
    return path_in_layer(name) == target if "." in target else name.rsplit(".", 1)[-1] == target


def layer_linears(model: nn.Module) -> list[str]:
    """The paths of every `nn.Linear` inside the transformer layers (not the embeddings, a pooler or a head)."""
    return [name for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and layer_index(name) is not None]


def find_layers(model: nn.Module) -> tuple[nn.Module, nn.ModuleList]:
    """The embeddings module and the list of transformer layers of an HF model."""
    layers = max((m for n, m in model.named_modules() if isinstance(m, nn.ModuleList)
                  and n.rsplit(".", 1)[-1] in LAYER_LIST_NAMES), key=len, default=None)
    embeddings = next((m for n, m in model.named_modules() if n.rsplit(".", 1)[-1] == "embeddings"), None)
    if embeddings is None:
        embeddings = model.get_input_embeddings()
    if layers is None:
        raise ValueError(f"Cannot find the transformer layers of {type(model).__name__}.")
    return embeddings, layers


def num_layers(model: nn.Module) -> int:
    return len(find_layers(model)[1])


__all__ = ["ARCHITECTURES", "Architecture", "default_targets", "find_layers", "is_encoder", "layer_index",
           "layer_linears", "path_in_layer", "target_names"]
