"""Heat-map overlays of anomaly maps on their images, as PNG, with a visible banner for untrained models."""

from __future__ import annotations

import os

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw, PngImagePlugin

from anomalyclip_med.utils.atomic import atomic_path

__all__ = ["overlay", "save_png"]


def overlay(image: Image.Image, anomaly_map: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """Blend a jet heat-map of ``anomaly_map`` (H, W, values in [0, 1]) over the RGB ``image`` of the same size."""
    heat = colormaps["jet"](np.clip(anomaly_map, 0, 1))[..., :3]
    base = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    return Image.fromarray(np.round(255 * ((1 - alpha) * base + alpha * heat)).astype(np.uint8))


def save_png(image: Image.Image, path: str | os.PathLike, warning: str | None = None, overwrite: bool = True) -> None:
    """
    Write ``image`` as PNG atomically. A ``warning`` is drawn as a red banner on the picture and stored as
    the PNG text field ``Warning``, so an untrained model's output cannot be mistaken for a real result.
    """
    info = PngImagePlugin.PngInfo()
    if warning:
        image = image.copy()
        draw = ImageDraw.Draw(image)
        banner = "UNTRAINED / RANDOM WEIGHTS"
        draw.rectangle([0, 0, image.width, 12], fill=(200, 0, 0))
        draw.text((2, 0), banner, fill=(255, 255, 255))
        info.add_text("Warning", warning)
    with atomic_path(path, overwrite=overwrite) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)
