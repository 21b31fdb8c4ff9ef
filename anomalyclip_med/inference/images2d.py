"""Scoring 2D images (PNG/JPEG/TIFF): per-image anomaly maps (.npy + overlay PNG) and a scores.csv."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from anomalyclip_med.calibration.calibration import CalibratedDecision
from anomalyclip_med.io.images import check_image, read_image, to_rgb
from anomalyclip_med.io.overlay import heatmap_overlay, save_png
from anomalyclip_med.io.writers import write_csv
from anomalyclip_med.network.model import AnomalyCLIP
from anomalyclip_med.transforms.image2d import image_transform
from anomalyclip_med.utils.atomic import atomic_path
from anomalyclip_med.utils.paths import check_outputs

__all__ = ["PREDICT_BATCH_SIZE", "ImageResult", "output_names", "preprocess_images", "image_maps", "predict_images"]

PREDICT_BATCH_SIZE = 8  # images per forward pass (the command line's --batch-size default)
CSV_FIELDS = ("image", "image_score", "max_pixel_score", "map_file", "overlay_file", "warning")
# added with a calibration: the image's conformal p-value, its flag, and the pixels at or above the pixel threshold
CALIBRATED_FIELDS = ("p_value", "flag", "flagged_pixels")


@dataclass
class ImageResult:
    image: Path
    image_score: float
    max_pixel_score: float
    map_file: Path
    overlay_file: Path
    calibrated: dict | None = None  # CALIBRATED_FIELDS, with a calibration


def output_names(images: list[Path]) -> list[str]:
    """Unique output stems: the file stem, prefixed by as many parent folders as it takes to be unique."""
    parts = [p.resolve().with_suffix("").parts for p in images]
    names = [""] * len(parts)
    pending, depth = list(range(len(parts))), 1
    while pending:
        counts = Counter(q[-depth:] for q in parts)
        still = []
        for i in pending:
            if counts[parts[i][-depth:]] == 1 or depth >= len(parts[i]):
                names[i] = "__".join(parts[i][-depth:])
            else:
                still.append(i)
        pending, depth = still, depth + 1
    return names


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


def predict_images(
    model: AnomalyCLIP,
    images: list[Path],
    out_dir: str | os.PathLike,
    batch_size: int = PREDICT_BATCH_SIZE,
    overwrite: bool = False,
    progress: bool = True,
    decision: CalibratedDecision | None = None,
) -> list[ImageResult]:
    """
    Score ``images`` and write, per image, ``<name>_anomaly_map.npy`` (float32, the image's own size, values in
    [0, 1]) and ``<name>_overlay.png``, then ``scores.csv``.

    The map is computed at the network's input size and resized back to the image (bilinear). Every output is
    written atomically; existing outputs are refused unless ``overwrite`` (checked before any work starts).

    With a calibration ``decision`` (kind "images"), scores.csv also holds each image's p-value, flag and flagged
    pixel count, and the ``.npy`` holds the pixel p-values when the decision asks for a calibrated map.

    Raises:
        InputError: an unreadable image or an unwritable output folder.
        OutputExistsError: outputs exist and ``overwrite`` is false.
    """
    out_dir = Path(out_dir)
    names = output_names(images)
    planned = [out_dir / f"{n}_anomaly_map.npy" for n in names] + [out_dir / f"{n}_overlay.png" for n in names]
    planned.append(out_dir / "scores.csv")
    check_outputs(out_dir, planned, images, overwrite)
    for path in images:  # a corrupt file must stop the run before anything is written
        check_image(path)

    warning = model.untrained_warning
    results: list[ImageResult] = []
    bar = tqdm(total=len(images), desc="predict", unit="img", disable=not progress)
    for start in range(0, len(images), batch_size):
        paths = images[start : start + batch_size]
        pil = [read_image(p) for p in paths]
        for k, (path, image, (score, amap)) in enumerate(zip(paths, pil, image_maps(model, pil))):
            name = names[start + k]
            map_file, overlay_file = out_dir / f"{name}_anomaly_map.npy", out_dir / f"{name}_overlay.png"
            calibrated = None
            with atomic_path(map_file) as tmp, open(tmp, "wb") as f:
                np.save(f, amap if decision is None else decision.output_map(amap))
            if decision is not None:
                calibrated = {**decision.image_fields(score), "flagged_pixels": int(decision.labelmap(amap).sum())}
            save_png(heatmap_overlay(image, amap), overlay_file, warning=warning)
            results.append(ImageResult(path, score, float(amap.max()), map_file, overlay_file, calibrated))
        bar.update(len(paths))
    bar.close()
    rows = [dict(zip(CSV_FIELDS, (str(r.image), f"{r.image_score:.6f}", f"{r.max_pixel_score:.6f}", r.map_file.name,
                                  r.overlay_file.name, warning or ""))) | (r.calibrated or {}) for r in results]
    write_csv(rows, out_dir / "scores.csv")
    return results

