"""The Hub workflow: every expert its own small repo with a model card; routers pin experts to commits and compose
them at load time.

- `push.py`: `push_to_hub` (an expert, a dense MoE-LoRA model or a router, one commit with its card) and
  `push_experts` (a router's experts not on the Hub yet, then the router pinned to their commits).
- `pull.py`: `pull` (files at a revision into the Hugging Face cache, checked, all or nothing) and the errors, which
  name the repo: `ExpertNotFoundError` (repo, revision or file missing, or not cached when offline),
  `CorruptExpertError` (truncated or corrupted download or file), `IncompatibleExpertError` (base model or shapes).
- `experts.py`: `Expert`, `load_experts` (local directories, or Hub repos pulled in parallel at pinned commits).
- `cards.py`: card data filled from models and saved experts; writing and merging README files.
"""

from .cards import README_NAME, expert_facts, fetch_readme, model_card_data, refresh_card_data, write_model_card
from .experts import CORE_TAG, Expert, load_expert, load_experts, local_expert_dir
from .pull import (
    MODEL_FILES,
    CorruptExpertError,
    ExpertLoadError,
    ExpertNotFoundError,
    IncompatibleExpertError,
    check_safetensors,
    file_sha256,
    git_blob_sha1,
    pull,
    read_weights,
)
from .push import DEFAULT_ROUTER_NAME, push_expert_dir, push_experts, push_to_hub

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
