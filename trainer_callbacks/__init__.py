"""Small TrainerCallbacks, one job each."""

from .balance_loss import BalanceLossCallback

__all__ = ["BalanceLossCallback"]
