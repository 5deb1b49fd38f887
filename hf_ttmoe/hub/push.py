"""Pushing any hf_ttmoe model, and a router's experts before the router; functional forms of the models' methods."""

from __future__ import annotations

from hub_cards import HubCardData

from ..saved_model import SavedModel

DEFAULT_ROUTER_NAME = "ttlora-moe"


def push_to_hub(model: SavedModel, repo_id: str, **kwargs):
    """`model.push_to_hub(repo_id, **kwargs)`: an expert, a dense MoE-LoRA model or a router (after its local experts)
    in one commit, with its card. Returns the `huggingface_hub.CommitInfo` (`.oid` is the commit sha)."""
    return model.push_to_hub(repo_id, **kwargs)


def push_experts(moe: SavedModel, namespace: str | None, repo_id: str | None = None, *,
                 repo_names: dict[str, str] | None = None, commit_message: str | None = None,
                 private: bool | None = None, token: str | bool | None = None, revision: str | None = None,
                 tags: list[str] | None = None):
    """Push every expert of `moe` that is not on the Hub yet, then the router, pinned to the experts' commits.

    Experts loaded from the Hub are already pinned to the commit they were pulled at and are not pushed again. A local
    expert goes to `{namespace}/{repo_names.get(task, directory name)}`; if that repo already holds the same config
    and weights, its head commit is pinned and nothing is pushed. `moe.config.experts` is updated in place to the
    Hub references.

    Args:
        moe: a `TTLoRAMoEModel`.
        namespace: user or organization for the expert repos (and the router, when `repo_id` is None).
        repo_id: the router's repo (default `{namespace}/ttlora-moe`).
        repo_names: task -> repo name for local experts.
        commit_message / private / token / revision / tags: as in `push_to_hub` (`revision` applies to the router).

    Returns:
        The router's `CommitInfo`.
    """
    if repo_id is None and namespace is None:
        raise ValueError("push_experts needs namespace= (for the expert repos) or repo_id= 'namespace/name'.")
    moe.push_dependencies(namespace, private, token, repo_names=repo_names)
    return moe.push_to_hub(repo_id or f"{namespace}/{DEFAULT_ROUTER_NAME}", commit_message=commit_message,
                           private=private, token=token, revision=revision, tags=tags)


def model_card_data(model: SavedModel) -> HubCardData:
    """`model.model_card_data`: the card data attached to `model` (user fields persist on the model)."""
    return model.model_card_data


def refresh_card_data(model: SavedModel, repo_id: str | None = None) -> HubCardData:
    """`model.refresh_card_data(repo_id)`: the card data with every automatic field filled from the model."""
    return model.refresh_card_data(repo_id)


__all__ = ["DEFAULT_ROUTER_NAME", "model_card_data", "push_experts", "push_to_hub", "refresh_card_data"]
