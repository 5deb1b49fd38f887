"""Model-card templates (`*.md`, Jinja) and the card data that fills them."""

from .card_data import (
    LIBRARY_NAME,
    ExpertCardData,
    HubCardData,
    MoELoRACardData,
    RouterCardData,
    TrainingFacts,
    is_hub_id,
)
from .readme import AUTO_END, AUTO_START, render_card, section_is_pristine, update_readme

__all__ = [
    "AUTO_END",
    "AUTO_START",
    "ExpertCardData",
    "HubCardData",
    "LIBRARY_NAME",
    "MoELoRACardData",
    "RouterCardData",
    "TrainingFacts",
    "is_hub_id",
    "render_card",
    "section_is_pristine",
    "update_readme",
]
