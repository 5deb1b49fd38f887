"""Small TrainerCallbacks, one job each."""

from .balance_loss import BalanceLossCallback
from .expert_freezing import ExpertFreezingCallback
from .model_card import ModelCardCallback
from .one_class import OneClassWarningCallback, one_class_note, predicts_one_class

__all__ = ["BalanceLossCallback", "ExpertFreezingCallback", "ModelCardCallback", "OneClassWarningCallback",
           "one_class_note", "predicts_one_class"]
