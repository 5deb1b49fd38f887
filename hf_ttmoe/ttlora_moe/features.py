"""Fast stage 2: the router's input features computed once per example, and the router trained on them.

Everything below the router is frozen, so its features never change during router training: compute them once
(only the prefix up to `router_layer` runs), then train the router module itself on the cached tensors.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ..losses import router_loss


@torch.no_grad()
def compute_router_features(model, batches, desc: str = "router features") -> tuple[torch.Tensor, torch.Tensor]:
    """`(features (N, H), task_ids (N,))` for an iterable of collated batches that carry `task_ids`."""
    was_training = model.training
    model.eval()
    feats, tasks = [], []
    for batch in tqdm(batches, desc=desc):
        batch = dict(batch)
        tasks.append(batch.pop("task_ids"))
        batch.pop("labels", None)
        feats.append(model.router_features(**batch).float())
    model.train(was_training)
    return torch.cat(feats), torch.cat(tasks)


def train_router_on_features(model, features: torch.Tensor, task_ids: torch.Tensor, epochs: int = 30,
                             lr: float = 1e-2, batch_size: int = 256, weight_decay: float = 0.0,
                             seed: int = 0) -> list[float]:
    """Train `model.router` on cached features with the model's own loss (cross-entropy vs task id, plus the
    weighted balance loss); returns the mean loss per epoch. The trained weights are the model's router weights."""
    router = model.router
    router.train()
    opt = torch.optim.AdamW(router.parameters(), lr=lr, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(seed)
    history = []
    for _ in tqdm(range(epochs), desc="router epochs"):
        order = torch.randperm(len(features), generator=g)
        total = 0.0
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            loss = router_loss(router(features[idx]), task_ids[idx], model.config.router_aux_loss_coef)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        history.append(total / len(features))
    router.eval()
    return history


__all__ = ["compute_router_features", "train_router_on_features"]
