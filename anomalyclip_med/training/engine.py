"""What MONAI's engines need to train the prompts: the batch preparation of ``SupervisedTrainer``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["prepare_prompt_batch"]


def prepare_prompt_batch(
    batchdata: Mapping[str, Any], device: str | torch.device | None = None, non_blocking: bool = False, **kwargs: Any
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """
    ``SupervisedTrainer``'s ``prepare_batch`` for :class:`anomalyclip_med.data.dataset.AnomalyDataset` batches:
    the images are the network input and the target is ``{"mask", "label"}``, both of which the loss
    (:class:`anomalyclip_med.training.PromptLoss`) needs (MONAI's default would pass the labels alone).
    """
    images = batchdata["image"].to(device=device, non_blocking=non_blocking)
    target = {key: torch.as_tensor(batchdata[key]).to(device=device, non_blocking=non_blocking)
              for key in ("mask", "label")}
    return images, target
