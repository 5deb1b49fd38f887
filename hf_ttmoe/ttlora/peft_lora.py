"""Reading a PEFT LoRA adapter: `adapter_config.json` + `adapter_model.safetensors` from a local directory or the Hub
(through `hf_ttmoe.io.pull`, at a revision), checked, into the `lora_A` / `lora_B` of each adapted linear and the head
weights. Only what is a plain `ΔW = scaling · B @ A` on an `nn.Linear` is accepted; everything else is refused with an
error naming the option or tensor (`REFUSED_OPTIONS`, pickle files, embeddings, convolutions, DoRA).

- `adapter_config.json`: `peft_type` "LORA", `base_model_name_or_path` (+ `revision`), `r`, `lora_alpha`, `use_rslora`
  (scaling `alpha / sqrt(r)` instead of `alpha / r`), `rank_pattern` / `alpha_pattern` (per-module r and alpha,
  matched as PEFT matches them), `modules_to_save` (the task head), `task_type`, `lora_dropout`.
- `adapter_model.safetensors`: `base_model.model.<module>.lora_A.weight` `(r, in)` and `.lora_B.weight` `(out, r)` per
  adapted linear; head weights as `base_model.model.<head>.<param>` (older PEFT: `<head>.modules_to_save.<param>`).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import HfApi
from huggingface_hub.errors import RemoteEntryNotFoundError

from ..io import ExpertNotFoundError, is_local_path, pull, read_weights

ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_WEIGHTS_NAMES = ("adapter_model.bin", "adapter_model.pt", "adapter_model.pth", "pytorch_model.bin")
PEFT_PREFIX = "base_model.model."
PEFT_TASK_TYPES = {None: "seq_cls", "SEQ_CLS": "seq_cls", "CAUSAL_LM": "causal_lm"}
# PEFT inits that change the base weights: the adapter then only holds on top of those changed weights
BASE_MODIFYING_INITS = ("pissa", "olora", "corda", "loftq", "lora_ga")
# adapter_config.json option -> (is it set?, why a TT-LoRA expert cannot hold it)
REFUSED_OPTIONS = {
    "use_dora": (bool, "DoRA rescales each output column by a learned magnitude: the update is not B @ A"),
    "bias": (lambda v: v not in (None, "none"), "it trains base-layer biases, which a TT-LoRA expert does not carry"),
    "lora_bias": (bool, "a bias on lora_B is not part of a TT ΔW"),
    "layer_replication": (bool, "it duplicates base layers"),
    "trainable_token_indices": (bool, "it trains embedding rows"),
    "target_parameters": (bool, "LoRA on raw parameters (not nn.Linear modules) has no TT-LoRA layer"),
    "alora_invocation_tokens": (bool, "activated LoRA applies ΔW only after its invocation tokens"),
    "use_qalora": (bool, "QA-LoRA pools the input of a quantized layer"),
    "use_bdlora": (bool, "BD-LoRA's block-diagonal factors are not stored as plain A and B"),
    "fan_in_fan_out": (bool, "it targets Conv1D layers (weights stored transposed), not nn.Linear"),
    "init_lora_weights": (
        lambda v: isinstance(v, str) and v.lower().startswith(BASE_MODIFYING_INITS),
        "this initialisation changes the base weights, so the adapter holds only on top of those changed weights "
        "(convert it to a plain LoRA with PEFT's path_initial_model_for_weight_conversion first)",
    ),
}
_LORA_KEY = re.compile(r"(?P<module>.+)\.lora_(?P<factor>[AB])\.(?:[^.]+\.)?weight")


@dataclass
class PeftLoRA:
    """A PEFT LoRA adapter as read from disk: its config, its `lora_A` / `lora_B` per module and its head weights.

    Args:
        owner: how errors name it (`"PEFT adapter 'org/name'"`).
        factors: module path (as in the base model) -> `(A: (r, in), B: (out, r))`.
        heads: head weight names without PEFT's prefix and wrappers (`"classifier.weight"`) -> tensor.
    """

    source: str
    revision: str | None
    owner: str
    config: dict
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]]
    heads: dict[str, torch.Tensor]

    def scaling(self, module: str) -> float:
        """`alpha / r` (or `alpha / sqrt(r)` with rsLoRA) of one module, `rank_pattern` / `alpha_pattern` applied as
        PEFT applies them; a pattern rank that the weights contradict is refused."""
        c, r = self.config, self.factors[module][0].shape[0]
        want_r = _pattern_value(c.get("rank_pattern") or {}, module, c.get("r"))
        if want_r is not None and want_r != r:
            raise ValueError(f"{self.owner}: {module} has lora_A of rank {r}, but adapter_config.json gives it "
                             f"r={want_r} (r={c.get('r')}, rank_pattern={c.get('rank_pattern')}): the weights do not "
                             "match the config.")
        alpha = _pattern_value(c.get("alpha_pattern") or {}, module, c.get("lora_alpha"))
        if not isinstance(alpha, (int, float)) or isinstance(alpha, bool):
            raise ValueError(f"{self.owner}: lora_alpha={alpha!r} for {module} is not a number.")
        return alpha / math.sqrt(r) if c.get("use_rslora") else alpha / r

    def delta_weight(self, module: str) -> torch.Tensor:
        """`ΔW = scaling · B @ A`, `(out, in)`, in float64."""
        a, b = self.factors[module]
        return self.scaling(module) * (b.double() @ a.double())  # (out, r) @ (r, in)


def _pattern_value(pattern: dict, module: str, default):
    """PEFT's `get_pattern_key`: the first key that matches the end of the module path (as a regex)."""
    for key, value in pattern.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


# ----- reading the adapter -----


def _adapter_dir(source: str, revision: str | None, owner: str, **hub_kwargs) -> tuple[str, str | None]:
    """The directory holding the adapter's files (a Hub snapshot pulled at `revision`), and the commit."""
    if os.path.isdir(source):
        for name in (ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME):
            if not os.path.isfile(os.path.join(source, name)):
                _refuse_pickle([p for p in PICKLE_WEIGHTS_NAMES if os.path.isfile(os.path.join(source, p))], owner)
                raise ExpertNotFoundError(f"{owner}: {source!r} has no {name}: it is not a saved PEFT adapter.")
        return source, None
    if is_local_path(source):
        raise ExpertNotFoundError(f"{owner}: no such directory (a Hub repo id is 'name' or 'namespace/name').")
    directory, commit = _pull(source, ADAPTER_CONFIG_NAME, revision, owner, hub_kwargs)
    try:
        _pull(source, ADAPTER_WEIGHTS_NAME, commit, owner, hub_kwargs)
    except ExpertNotFoundError:
        _refuse_pickle(_hub_pickles(source, commit, hub_kwargs.get("token")), owner)
        raise
    return directory, commit


def _pull(repo_id: str, filename: str, revision: str | None, owner: str, hub_kwargs: dict) -> tuple[str, str]:
    """`hf_ttmoe.io.pull` of one file; a file the repo lacks is named as a PEFT adapter's file."""
    try:
        return pull(repo_id, (filename,), revision, owner=owner, **hub_kwargs)
    except ExpertNotFoundError as err:
        if isinstance(err.__cause__, RemoteEntryNotFoundError):
            at = f" at revision {revision!r}" if revision else ""
            raise ExpertNotFoundError(f"{owner}{at}: the repository has no {filename}: it is not a saved PEFT "
                                      "adapter.", repo_id, revision) from err
        raise


def _hub_pickles(repo_id: str, commit: str, token) -> list[str]:
    """The pickle weight files a Hub repo holds at `commit` (none when the Hub cannot be asked)."""
    try:
        files = HfApi(token=token).list_repo_files(repo_id, revision=commit)
    except Exception:  # offline or unreachable: the missing-file error stands
        return []
    return [f for f in PICKLE_WEIGHTS_NAMES if f in files]


def _refuse_pickle(pickles: list[str], owner: str) -> None:
    if pickles:
        raise ValueError(f"{owner} holds its weights as {pickles[0]} (a pickle, which can run code when loaded), not "
                         f"{ADAPTER_WEIGHTS_NAME}: only safetensors adapters are imported. Convert it where you trust "
                         "it (load it with PEFT, then save_pretrained(..., safe_serialization=True)).")


def read_peft_lora(source: str | os.PathLike, revision: str | None = None, **hub_kwargs) -> PeftLoRA:
    """Read a PEFT LoRA adapter from a local directory or a Hub repo (at `revision`, through `hf_ttmoe.io.pull`).

    Args:
        source: directory or Hub id holding `adapter_config.json` and `adapter_model.safetensors`.
        revision: branch, tag or commit on the Hub.
        hub_kwargs: `token`, `cache_dir`, `local_files_only`, as `hf_ttmoe.io.pull` takes them.

    Raises:
        ExpertNotFoundError: a missing directory, repo, revision or file. `ValueError`: a pickle-only adapter, another
            PEFT method, an option TT-LoRA cannot hold, LoRA on embeddings or convolutions, or weights that do not
            match their config; each names the value.
    """
    source = os.fspath(source)
    owner = f"PEFT adapter {source!r}"
    directory, commit = _adapter_dir(source, revision, owner, **hub_kwargs)
    try:
        config = json.loads(Path(directory, ADAPTER_CONFIG_NAME).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{owner}: {ADAPTER_CONFIG_NAME} is not valid JSON: {err}") from err
    _check_config(config, owner)
    tensors = read_weights(os.path.join(directory, ADAPTER_WEIGHTS_NAME), owner)
    factors, heads = _split_weights(tensors, owner)
    return PeftLoRA(source, commit, owner, config, factors, heads)


def _check_config(config: dict, owner: str) -> None:
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        kind = config.get("peft_type") if isinstance(config, dict) else config
        raise ValueError(f"{owner}: peft_type={kind!r}; only PEFT LoRA adapters (peft_type 'LORA') can be imported.")
    for option, (is_set, why) in REFUSED_OPTIONS.items():
        if is_set(config.get(option)):
            raise ValueError(f"{owner}: {option}={config[option]!r} cannot be imported as TT-LoRA: {why}.")
    if config.get("task_type") not in PEFT_TASK_TYPES:
        raise ValueError(f"{owner}: task_type={config['task_type']!r}; TT-LoRA experts are sequence classifiers "
                         f"or causal LMs, importable from {sorted(k for k in PEFT_TASK_TYPES if k)} (or None).")


def _split_weights(tensors: dict[str, torch.Tensor], owner: str):
    """`(factors, heads)` from the adapter's tensors; LoRA on embeddings or convolutions, DoRA magnitudes and
    unknown `lora_` tensors are refused."""
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    heads = {}
    for key, tensor in tensors.items():
        name = key.removeprefix(PEFT_PREFIX)
        match = _LORA_KEY.fullmatch(name)
        if "lora_embedding_" in name:
            raise ValueError(f"{owner}: {key} is LoRA on an embedding; only nn.Linear targets can be imported.")
        if "lora_magnitude_vector" in name:
            raise ValueError(f"{owner}: {key} is a DoRA magnitude vector; DoRA cannot be imported as TT-LoRA.")
        if match:
            if tensor.dim() != 2:
                raise ValueError(f"{owner}: {key} has shape {tuple(tensor.shape)}: LoRA on a convolution; only "
                                 "nn.Linear targets can be imported.")
            pairs.setdefault(match["module"], {})[match["factor"]] = tensor
        elif ".lora_" in f".{name}":
            raise ValueError(f"{owner}: {key} is no lora_A / lora_B weight of a linear layer; cannot import it.")
        else:  # a head (modules_to_save): older PEFT saved it inside its wrapper
            heads[re.sub(r"\.modules_to_save(?:\.default)?(?=\.)", "", name)] = tensor
    factors = {}
    for module, pair in sorted(pairs.items()):
        if set(pair) != {"A", "B"}:
            lacking = ({"A", "B"} - set(pair)).pop()
            raise ValueError(f"{owner}: {module} has lora_{''.join(pair)} but no lora_{lacking}.")
        a, b = pair["A"], pair["B"]
        if a.shape[0] != b.shape[1]:
            raise ValueError(f"{owner}: {module} has lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)}: their "
                             "ranks differ.")
        factors[module] = (a, b)
    if not factors:
        raise ValueError(f"{owner}: {ADAPTER_WEIGHTS_NAME} holds no lora_A / lora_B weights.")
    return factors, heads


__all__ = ["ADAPTER_CONFIG_NAME", "ADAPTER_WEIGHTS_NAME", "REFUSED_OPTIONS", "PeftLoRA", "read_peft_lora"]
