"""Slice-wise AnomalyCLIP inference over a scan, streamed in batches so memory does not grow with the slice count."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.data import MetaTensor
from monai.utils import convert_to_tensor
from scipy.ndimage import gaussian_filter1d
from tqdm.auto import tqdm

from anomalyclip_med.network.model import AnomalyCLIP
from anomalyclip_med.transforms.intensity import IntensityPreset, PresetChoice
from anomalyclip_med.transforms.slicing import BodyMask, SliceForeground, SliceGeometry, SliceToNetworkInput

__all__ = ["SliceScores", "score_slices"]


@dataclass
class SliceScores:
    """
    Per-slice results of one scan.

    Attributes:
        anomaly_map: float32 map in [0, 1], the scan's spatial shape and voxel order; 0 on slices not scored and,
            with the body mask, outside the body.
        slice_scores: (n_slices,) image-level anomaly score of each slice along ``geometry.axis`` (0 if not scored).
        scored: (n_slices,) which slices went through the network.
        geometry: how slices were cut and shown to the network.
        preset: the intensity preset used.
        foreground_threshold: the intensity threshold of the body/air test (``None``: neither skipping nor body
            mask, or a constant scan).
        body_voxels: voxels inside the body mask (``None``: no body mask applied).
    """

    anomaly_map: np.ndarray
    slice_scores: np.ndarray
    scored: np.ndarray
    geometry: SliceGeometry
    preset: PresetChoice
    foreground_threshold: float | None
    body_voxels: int | None = None


def score_slices(
    model: AnomalyCLIP,
    image: MetaTensor,
    preset: IntensityPreset,
    axis: str | int | None = None,
    batch_size: int = 8,
    skip_empty: bool = True,
    min_foreground: float = 0.01,
    z_smooth: float = 0.0,
    slice_indices: Sequence[int] | None = None,
    body_mask: bool = True,
    progress: bool = False,
    desc: str | None = None,
) -> SliceScores:
    """
    Run AnomalyCLIP on the slices of a scan.

    Batches of ``batch_size`` slices are cut from the raw scan, mapped to [0, 1] by the preset (whose parameters
    come from the whole scan), turned into network inputs, scored, and their maps resampled back onto the slice
    grid, so at most one batch of network inputs exists at a time. The per-slice map is the model's
    ``anomaly_map`` (Gaussian-smoothed mean of the layer maps) and the slice score its ``image_score``.

    Args:
        model: the network (its device and precision are used).
        image: channel-first scan ``(1, X, Y, Z)`` with raw intensities (as loaded).
        preset: intensity preset.
        axis: slicing axis (see :func:`anomalyclip_med.transforms.slicing.resolve_axis`).
        batch_size: slices per forward pass.
        skip_empty: skip slices without body (see :class:`SliceForeground`); they get score 0 and map 0.
        min_foreground: fraction of a slice that must be body for it to be scored.
        z_smooth: Gaussian sigma in mm across neighbouring slices applied to the map (0 = off); skipped slices
            stay 0 and slice scores are not smoothed.
        slice_indices: score only these slices (others count as skipped); default all.
        body_mask: set the map to 0 outside the body (see :class:`BodyMask`), so air, padding and the scanner
            table never light up; ``False`` keeps the network's raw map there.
        progress: show a progress bar.
        desc: progress bar label.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    to_input = SliceToNetworkInput(model.config.image_size, axis, model.mean, model.std)
    geometry = to_input.geometry(image)
    n = geometry.n_slices
    choice = preset.choose(image)
    # one body/air threshold for slice skipping and the body mask, so both agree on what is body
    threshold = SliceForeground().threshold_of(image) if skip_empty or body_mask else None
    scored = SliceForeground(axis, min_foreground, threshold)(image).numpy() if skip_empty else np.ones(n, bool)
    if slice_indices is not None:
        chosen = np.zeros(n, dtype=bool)
        chosen[np.asarray(slice_indices, dtype=int)] = True
        scored &= chosen

    raw = image.as_tensor()[0].movedim(geometry.axis, 0)
    anomaly_map = np.zeros(tuple(image.shape[1:]), dtype=np.float32)
    map_slices = np.moveaxis(anomaly_map, geometry.axis, 0)  # a view: writing it fills anomaly_map
    slice_scores = np.zeros(n, dtype=np.float64)
    todo = np.flatnonzero(scored)
    with tqdm(total=len(todo), desc=desc, unit="slice", disable=not progress, leave=False) as bar:
        for start in range(0, len(todo), batch_size):
            index = todo[start : start + batch_size]
            batch = convert_to_tensor(choice.transform(raw[torch.from_numpy(index)]), track_meta=False)
            out = model.predict(to_input.from_slices(batch, geometry))
            slice_scores[index] = out.image_score.float().cpu().numpy()
            map_slices[index] = geometry.from_square(out.anomaly_map.float().cpu()).clamp_(0, 1).numpy()
            bar.update(len(index))

    if z_smooth > 0:
        spacing = float(np.linalg.norm(np.asarray(image.affine, dtype=float)[:3, geometry.axis]))
        anomaly_map = gaussian_filter1d(anomaly_map, sigma=z_smooth / spacing, axis=geometry.axis, mode="nearest")
        map_slices = np.moveaxis(anomaly_map, geometry.axis, 0)
        map_slices[~scored] = 0.0
        np.clip(anomaly_map, 0.0, 1.0, out=anomaly_map)
    body_voxels = None
    if body_mask:  # after smoothing, which would spread the map back into the air
        body = BodyMask(axis, threshold)(image).numpy()
        anomaly_map[~body] = 0.0
        body_voxels = int(body.sum())
    return SliceScores(anomaly_map, slice_scores, scored, geometry, choice, threshold, body_voxels)
