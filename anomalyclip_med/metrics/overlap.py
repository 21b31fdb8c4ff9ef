"""Overlap of a thresholded anomaly map with the ground-truth mask: Dice and IoU (MONAI's implementations)."""

from __future__ import annotations

import torch
from monai.metrics import compute_dice, compute_iou

from anomalyclip_med.metrics.arrays import check_pair

__all__ = ["dice", "iou", "volume_dice"]


def _pooled(truth, scores, threshold: float, ndim=None) -> tuple[torch.Tensor, torch.Tensor]:
    # all elements pooled into one (batch 1, channel 1, flat) sample, the layout MONAI's metrics expect
    t, s = check_pair(truth, scores, ndim=ndim)
    pred = torch.from_numpy(s >= threshold).reshape(1, 1, -1).double()
    return pred, torch.from_numpy(t).reshape(1, 1, -1).double()


def dice(truth, scores, threshold: float = 0.5) -> float:
    """
    Dice = 2 TP / (2 TP + FP + FN) of ``scores >= threshold`` against the mask, over all elements pooled.

    Args:
        truth: masks (N, H, W) or one mask/volume, values > 0.5 anomalous.
        scores: anomaly maps of the same shape.
        threshold: maps at or above it are predicted anomalous (MONAI ``AsDiscrete(threshold=...)`` convention).

    Returns:
        Dice in [0, 1]; 1.0 when both the mask and the prediction are empty (MONAI's ``ignore_empty=False``).
    """
    return float(compute_dice(*_pooled(truth, scores, threshold), ignore_empty=False))


def iou(truth, scores, threshold: float = 0.5) -> float:
    """IoU = TP / (TP + FP + FN) of ``scores >= threshold`` against the mask, pooled; 1.0 when both are empty."""
    return float(compute_iou(*_pooled(truth, scores, threshold), ignore_empty=False))


def volume_dice(truth, scores, threshold: float = 0.5) -> float:
    """
    Dice of one scan: a (D, H, W) anomaly map thresholded at ``threshold`` against the (D, H, W) lesion mask.

    Raises:
        ValueError: inputs are not one 3D volume each, or their shapes differ.
    """
    return float(compute_dice(*_pooled(truth, scores, threshold, ndim=3), ignore_empty=False))
