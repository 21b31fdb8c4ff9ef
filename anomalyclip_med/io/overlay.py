"""Heat-map overlays of anomaly maps on their images, as PNG, with a visible banner for untrained models."""

from __future__ import annotations

import os

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw, PngImagePlugin

from anomalyclip_med.utils.atomic import atomic_path

__all__ = ["COLORMAP", "heatmap_overlay", "colour_bar", "save_png"]

COLORMAP = "jet"


def heatmap_overlay(image: Image.Image, anomaly_map: np.ndarray, alpha: float = 0.5, low: float = 0.0) -> Image.Image:
    """
    Blend a jet heat-map of ``anomaly_map`` (H, W, values in [0, 1]) over the RGB ``image`` of the same size.
    Pixels whose map is below ``low`` are left untinted, so a map that is 0 outside the body (or a padded
    border) shows the image itself there rather than the colour map's blue.
    """
    heat = colormaps[COLORMAP](np.clip(anomaly_map, 0, 1))[..., :3]
    base = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    weight = alpha * (np.asarray(anomaly_map) >= low)[..., None]
    return Image.fromarray(np.round(255 * ((1 - weight) * base + weight * heat)).astype(np.uint8))


def colour_bar(height: int, low: float = 0.0, threshold: float | None = None, width: int = 72) -> Image.Image:
    """
    A vertical key of the overlay colours, 1 at the top and 0 at the bottom, ``height`` pixels tall: values below
    ``low`` (not drawn by :func:`heatmap_overlay`) are left black, and ``threshold`` (the labelmap's) is marked with a
    white line.
    """
    bar = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(bar)
    top, bottom, left, right = 20, height - 12, 6, 18
    span = max(bottom - top, 1)

    def row(value: float) -> int:
        return round(bottom - value * span)

    values = np.linspace(1.0, 0.0, span + 1)
    colours = np.round(255 * colormaps[COLORMAP](values)[:, :3]).astype(np.uint8)
    colours[values < low] = 0
    strip = np.repeat(colours[:, None], right - left, axis=1)
    bar.paste(Image.fromarray(strip, mode="RGB"), (left, top))
    draw.rectangle([left - 1, top - 1, right, bottom + 1], outline=(160, 160, 160))
    labels = [(1.0, "1", (255, 255, 255)), (0.0, "0", (255, 255, 255))]
    if threshold is not None:
        y = row(threshold)
        draw.line([left - 3, y, right + 2, y], fill=(255, 255, 255), width=2)
        labels.insert(0, (threshold, f"{threshold:g} thr", (255, 255, 255)))
    if low > 0:
        labels.append((low, f"{low:g}", (160, 160, 160)))
    labels.append((0.5, "0.5", (255, 255, 255)))
    placed: list[int] = []
    for value, text, colour in labels:  # in order of importance; a label too close to a placed one is dropped
        y = row(value)
        if all(abs(y - other) >= 11 for other in placed):
            draw.text((right + 4, y - 5), text, fill=colour)
            placed.append(y)
    return bar


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
