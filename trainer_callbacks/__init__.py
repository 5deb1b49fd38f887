"""Small TrainerCallbacks, one job each."""

from .balance_loss import BalanceLossCallback
from .expert_freezing import ExpertFreezingCallback

__all__ = ["BalanceLossCallback", "ExpertFreezingCallback"]
