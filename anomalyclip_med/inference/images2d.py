"""Scoring 2D images (PNG/JPEG/TIFF): the network's input from images, and each image's score and map at its own size
(the run engine's image job, :class:`anomalyclip_med.runs.images.ImageJob`, writes them)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from anomalyclip_med.io.images import read_image, to_rgb
from anomalyclip_med.network.model import AnomalyCLIP
from anomalyclip_med.transforms.image2d import image_transform

__all__ = ["preprocess_images", "image_maps"]


def preprocess_images(
    model: AnomalyCLIP, images: Image.Image | str | os.PathLike | Sequence[Image.Image | str | os.PathLike]
) -> torch.Tensor:
    """
    The reference preprocessing for ``model``: images (PIL or paths; any mode, converted to RGB) -> a
    (B, 3, S, S) tensor at the network's input size, normalised with the backbone's mean and std.
    """
    if isinstance(images, (Image.Image, str, os.PathLike)):
        images = [images]
    transform = image_transform(model.config.image_size, model.mean, model.std)
    return torch.stack([transform(to_rgb(im) if isinstance(im, Image.Image) else read_image(im)) for im in images])


def image_maps(model: AnomalyCLIP, images: list[Image.Image]) -> list[tuple[float, np.ndarray]]:
    """Each image's score and its anomaly map at the image's own size (float32 in [0, 1]; computed at the network's
    input size and resized back bilinearly), from one forward pass over ``images``."""
    out = model.predict(preprocess_images(model, images))
    maps = []
    for k, image in enumerate(images):
        amap = F.interpolate(out.anomaly_map[k][None, None], size=(image.height, image.width), mode="bilinear",
                             align_corners=False)[0, 0].clamp_(0, 1)
        maps.append((float(out.image_score[k]), amap.cpu().numpy().astype(np.float32)))
    return maps
