"""The reference's 2D preprocessing of images and masks (torchvision on PIL images)."""

from __future__ import annotations

import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from PIL import Image
from torchvision import transforms as T

__all__ = ["OPENAI_DATASET_MEAN", "OPENAI_DATASET_STD", "image_transform", "mask_transform"]


def image_transform(
    image_size: int, mean: tuple[float, ...] = OPENAI_DATASET_MEAN, std: tuple[float, ...] = OPENAI_DATASET_STD
) -> T.Compose:
    """RGB PIL image -> normalised (3, S, S) tensor: bicubic resize to S x S, centre crop, CLIP mean/std."""
    return T.Compose(
        [
            T.Resize((image_size, image_size), interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(image_size),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )


def mask_transform(image_size: int):
    """PIL mask -> (1, S, S) float tensor of {0, 1}: bilinear resize, centre crop, binarised at > 0.5."""
    resize = T.Compose([T.Resize((image_size, image_size)), T.CenterCrop(image_size), T.ToTensor()])

    def apply(mask: Image.Image) -> torch.Tensor:
        return (resize(mask) > 0.5).float()

    return apply
