"""The AnomalyCLIP training objective on one batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from anomalyclip_med.errors import InputError
from anomalyclip_med.network.model import AnomalyCLIP, AnomalyCLIPForward
from anomalyclip_med.training.losses import FocalLoss, dice_loss

__all__ = ["PIXEL_WEIGHT", "PromptLoss", "compute_losses", "losses_from_forward"]

# The reference's lambda: the summed pixel terms are multiplied by 4 before the image term is added.
PIXEL_WEIGHT = 4.0

_focal = FocalLoss(gamma=2.0, smooth=1e-5)
_dice = dice_loss()


def compute_losses(
    model: AnomalyCLIP, images: torch.Tensor, masks: torch.Tensor | None, labels: torch.Tensor
) -> dict[str, torch.Tensor]:
    """
    The reference's training losses on a batch, with gradients to the prompt learner.

    For every map layer: focal loss on the two-channel map, Dice of the abnormal channel against the mask and
    Dice of the normal channel against its complement; ``total = 4 * (focal + dice) + image`` where ``image``
    is the cross-entropy of the image logits (cosine / temperature) against the labels. The text features are
    recomputed from the prompts, so this works whether the model is in train or eval mode; the losses are
    computed in float32 whatever the model's precision.

    Args:
        model: the AnomalyCLIP model.
        images: (B, 3, S, S) preprocessed images.
        masks: (B, 1, S, S) or (B, S, S) masks (binarised at 0.5 as the reference), or ``None`` for
            image-level-only data: then ``focal`` and ``dice`` are 0 and only the image loss trains.
        labels: (B,) 0 normal, 1 anomalous.

    Returns:
        ``{"focal", "dice", "image", "total"}`` scalar tensors (``focal`` and ``dice`` summed over layers).
    """
    images = images.to(model.device, torch.float32)
    labels = torch.as_tensor(labels, device=model.device).long().reshape(-1)
    if images.ndim != 4 or labels.numel() != images.shape[0]:
        raise InputError(f"Expected (B, 3, S, S) images and B labels, got {tuple(images.shape)} and {labels.numel()}.")
    b, h, w = images.shape[0], images.shape[-2], images.shape[-1]
    if masks is not None and (tuple(masks.shape[-2:]) != (h, w) or masks.numel() != b * h * w):
        raise InputError(f"Masks of shape {tuple(masks.shape)} do not match the images' {tuple(images.shape)}.")
    return losses_from_forward(model(images, text_features=model.encode_text()), masks, labels)


def losses_from_forward(
    fwd: AnomalyCLIPForward, masks: torch.Tensor | None, labels: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The losses of :func:`compute_losses` from a training-mode network forward (``AnomalyCLIPNet``'s, too)."""
    device = fwd.image_logits.device
    labels = torch.as_tensor(labels, device=device).long().reshape(-1)
    image_loss = F.cross_entropy(fwd.image_logits.float(), labels)
    zero = image_loss.new_zeros(())
    focal, dice = zero, zero
    if masks is not None:
        b, h, w = fwd.similarity_maps[0].shape[0], *fwd.similarity_maps[0].shape[-2:]
        gt = (masks.to(device, torch.float32).reshape(b, h, w) > 0.5).float()
        for maps in fwd.similarity_maps:
            maps = maps.float()
            focal = focal + _focal(maps, gt)
            dice = dice + _dice(maps[:, 1:2], gt[:, None]) + _dice(maps[:, 0:1], 1 - gt[:, None])
    total = PIXEL_WEIGHT * (focal + dice) + image_loss
    return {"focal": focal, "dice": dice, "image": image_loss, "total": total}


class PromptLoss(nn.Module):
    """
    The training objective as a MONAI ``loss_function``: ``loss(pred, target)`` with ``pred`` the training-mode
    output of :class:`anomalyclip_med.network.AnomalyCLIPNet` and ``target`` ``{"mask", "label"}``
    (:func:`anomalyclip_med.training.prepare_prompt_batch`). Returns ``total``; the last batch's four terms
    stay in :attr:`last` (floats) for logging.

    Args:
        pixel_losses: train the focal and Dice terms (every anomalous sample has a mask); else the image
            loss only, as :func:`anomalyclip_med.training.train` does.
    """

    def __init__(self, pixel_losses: bool = True) -> None:
        super().__init__()
        self.pixel_losses = bool(pixel_losses)
        self.last: dict[str, float] = {}

    def forward(self, pred: AnomalyCLIPForward, target: dict[str, torch.Tensor]) -> torch.Tensor:
        losses = losses_from_forward(pred, target["mask"] if self.pixel_losses else None, target["label"])
        self.last = {k: float(v.detach()) for k, v in losses.items()}
        return losses["total"]
