"""The reference's optimiser over the prompt learner (the only trainable part)."""

from __future__ import annotations

import torch

from anomalyclip_med.network.model import AnomalyCLIP
from anomalyclip_med.training.settings import LEARNING_RATE

__all__ = ["BETAS", "make_optimizer"]

BETAS = (0.5, 0.999)


def make_optimizer(model: AnomalyCLIP, lr: float = LEARNING_RATE) -> torch.optim.Adam:
    """Adam(lr 1e-3, betas (0.5, 0.999)) over ``model.prompt_learner``'s parameters, as the reference."""
    return torch.optim.Adam(model.prompt_learner.parameters(), lr=lr, betas=BETAS)
