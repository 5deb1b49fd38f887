"""Small TrainerCallbacks, one job each."""

from .balance_loss import BalanceLossCallback
from .expert_freezing import ExpertFreezingCallback
from .model_card import ModelCardCallback

__all__ = ["BalanceLossCallback", "ExpertFreezingCallback", "ModelCardCallback"]
