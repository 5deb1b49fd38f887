"""The Hub workflow in one namespace: every expert its own small repo with a model card; routers pin experts to
commits and compose them at load time.

Each piece lives in the layer it belongs to and is gathered here: pulling, checked reads, card writing and the errors
in `hf_ttmoe.io`; a TT-LoRA expert's card facts and `push_expert_dir` in `hf_ttmoe.ttlora.hub`; reading experts for a
MoE in `hf_ttmoe.ttlora_moe.experts`; `push_to_hub` / `push_experts` in `hub/push.py`. Errors name the repo:
`ExpertNotFoundError` (repo, revision or file missing, or not cached when offline), `CorruptExpertError` (truncated
or corrupted download or file), `IncompatibleExpertError` (base model or shapes).
"""

from ..io import (
    MODEL_FILES,
    README_NAME,
    CorruptExpertError,
    ExpertLoadError,
    ExpertNotFoundError,
    IncompatibleExpertError,
    check_safetensors,
    fetch_readme,
    file_sha256,
    git_blob_sha1,
    pull,
    read_weights,
    write_model_card,
)
from ..ttlora.hub import expert_facts, push_expert_dir
from ..ttlora.layer import CORE_TAG
from ..ttlora_moe.experts import Expert, load_expert, load_experts, local_expert_dir
from .push import DEFAULT_ROUTER_NAME, model_card_data, push_experts, push_to_hub, refresh_card_data

__all__ = [
    "CORE_TAG",
    "DEFAULT_ROUTER_NAME",
    "MODEL_FILES",
    "README_NAME",
    "CorruptExpertError",
    "Expert",
    "ExpertLoadError",
    "ExpertNotFoundError",
    "IncompatibleExpertError",
    "check_safetensors",
    "expert_facts",
    "fetch_readme",
    "file_sha256",
    "git_blob_sha1",
    "load_expert",
    "load_experts",
    "local_expert_dir",
    "model_card_data",
    "pull",
    "push_expert_dir",
    "push_experts",
    "push_to_hub",
    "read_weights",
    "refresh_card_data",
    "write_model_card",
]
