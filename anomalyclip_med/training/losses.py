"""
The reference's pixel losses: focal loss on the two-channel [normal, abnormal] probability maps and a binary
Dice loss, with the same constants and reductions (so that trained prompts and logged numbers match).

The Dice loss is MONAI's: ``DiceLoss(smooth_nr=1, smooth_dr=1)`` on a (B, 1, H, W) map is
``1 - mean over images of (2 |X ∩ Y| + 1) / (|X| + |Y| + 1)``, the reference's formula.
"""

from __future__ import annotations

import torch
from monai.losses import DiceLoss
from torch import nn

__all__ = ["FocalLoss", "dice_loss"]


class FocalLoss(nn.Module):
    """
    Focal loss on class probabilities (not logits): mean over pixels of ``-(1 - p_t)^gamma * log(p_t)``.

    As in the reference, the one-hot target is clamped to ``[smooth / (C - 1), 1 - smooth]`` and
    ``smooth`` is added to ``p_t`` before the logarithm (no class weighting).

    Args:
        gamma: focusing exponent.
        smooth: label smoothing and log guard.
    """

    def __init__(self, gamma: float = 2.0, smooth: float = 1e-5) -> None:
        super().__init__()
        if not 0 <= smooth <= 1:
            raise ValueError(f"smooth must be in [0, 1], got {smooth}.")
        self.gamma, self.smooth = gamma, smooth

    def forward(self, probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            probs: (B, C, H, W) class probabilities.
            target: (B, H, W) or (B, 1, H, W) class indices (here 0 normal, 1 abnormal).

        Returns:
            scalar loss.
        """
        num_class = probs.shape[1]
        p = probs.flatten(2).transpose(1, 2).reshape(-1, num_class)
        one_hot = torch.nn.functional.one_hot(target.reshape(-1).long(), num_class).to(p.dtype)
        if self.smooth:
            one_hot = one_hot.clamp(self.smooth / (num_class - 1), 1.0 - self.smooth)
        pt = (one_hot * p).sum(1) + self.smooth
        return (-torch.pow(1 - pt, self.gamma) * pt.log()).mean()


def dice_loss() -> DiceLoss:
    """The reference's soft binary Dice loss (smoothing 1 in numerator and denominator, mean over images) as
    MONAI's ``DiceLoss``; call it on (B, 1, H, W) probability maps and masks."""
    return DiceLoss(smooth_nr=1.0, smooth_dr=1.0)
