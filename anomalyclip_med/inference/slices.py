"""Slice-wise AnomalyCLIP inference over a scan, streamed in batches so memory does not grow with the slice count."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.networks.layers.convutils import gaussian_1d
from monai.utils import convert_to_tensor
from tqdm.auto import tqdm

from anomalyclip_med.network.model import AnomalyCLIP
from anomalyclip_med.transforms.intensity import IntensityPreset, PresetChoice
from anomalyclip_med.transforms.slicing import BodyMask, SliceForeground, SliceGeometry, SliceToNetworkInput

__all__ = ["SlicePlan", "SliceScores", "plan_slices", "score_planned", "score_slices", "smooth_along_axis", "to_device"]


@dataclass
class SlicePlan:
    """
    The per-scan decisions made before any slice reaches the network (CPU work that can run ahead of it).

    Attributes:
        to_input: the slices -> network inputs transform.
        geometry: how slices are cut and shown to the network.
        preset: the intensity preset chosen for the scan.
        scored: (n_slices,) which slices go through the network.
        foreground_threshold: the intensity threshold of the body/air test (``None``: neither skipping nor body
            mask, or a constant scan).
        body: the scan's body mask (bool, its spatial shape; see :class:`BodyMask`), ``None`` without one.
    """

    to_input: SliceToNetworkInput
    geometry: SliceGeometry
    preset: PresetChoice
    scored: np.ndarray
    foreground_threshold: float | None
    body: torch.Tensor | None = None


@dataclass
class SliceScores:
    """
    Per-slice results of one scan.

    Attributes:
        anomaly_map: float32 map in [0, 1], the scan's spatial shape and voxel order; 0 on slices not scored.
        slice_scores: (n_slices,) image-level anomaly score of each slice along ``geometry.axis`` (0 if not scored).
        scored: (n_slices,) which slices went through the network.
        geometry: how slices were cut and shown to the network.
        preset: the intensity preset used.
        foreground_threshold: the intensity threshold of the body/air test (``None``: neither skipping nor body
            mask, or a constant scan).
        body_voxels: voxels inside the body mask (``None``: no body mask applied).
        labelmap: uint8 ``anomaly_map >= threshold`` when a threshold was given, else ``None``.
    """

    anomaly_map: np.ndarray
    slice_scores: np.ndarray
    scored: np.ndarray
    geometry: SliceGeometry
    preset: PresetChoice
    foreground_threshold: float | None
    body_voxels: int | None = None
    labelmap: np.ndarray | None = None


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``; a CUDA upload goes from pinned memory without blocking the host."""
    if device.type != "cuda" or tensor.device == device:
        return tensor.to(device)
    return (tensor if tensor.is_pinned() else tensor.pin_memory()).to(device, non_blocking=True)


def smooth_along_axis(volume: torch.Tensor, sigma: float, axis: int, truncate: float = 4.0) -> torch.Tensor:
    """
    Gaussian filter of ``volume`` along one axis on its own device, as ``scipy.ndimage.gaussian_filter1d(volume,
    sigma, axis, mode="nearest", truncate=truncate)`` (sampled kernel of radius ``int(truncate * sigma + 0.5)``,
    edge values repeated past the ends), in float32.
    """
    kernel = gaussian_1d(torch.tensor(float(sigma)), truncated=truncate, approx="sampled", normalize=True)
    kernel = kernel.to(device=volume.device, dtype=torch.float32)
    radius = (kernel.numel() - 1) // 2
    moved = volume.float().movedim(axis, -1)
    rows = moved.reshape(-1, 1, moved.shape[-1])
    smoothed = F.conv1d(F.pad(rows, (radius, radius), mode="replicate"), kernel.view(1, 1, -1))
    return smoothed.reshape(moved.shape).movedim(-1, axis)


def plan_slices(
    image: MetaTensor,
    preset: IntensityPreset,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    axis: str | int | None = None,
    skip_empty: bool = True,
    min_foreground: float = 0.01,
    slice_indices: Sequence[int] | None = None,
    body_mask: bool = True,
) -> SlicePlan:
    """
    Decide, from the whole scan on the host, the slicing, the intensity preset, which slices to score and
    which voxels are body (see :func:`score_slices` for the arguments). The body mask depends on the raw scan
    only, so it is made here, ahead of the network (its per-slice hole filling is scipy's), and applied to the
    map on the device.
    """
    to_input = SliceToNetworkInput(image_size, axis, tuple(mean), tuple(std))
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
    body = BodyMask(axis, threshold)(image) if body_mask else None
    return SlicePlan(to_input, geometry, choice, scored, threshold, body)


def score_planned(
    model: AnomalyCLIP,
    image: MetaTensor,
    plan: SlicePlan,
    batch_size: int = 8,
    z_smooth: float = 0.0,
    threshold: float | None = None,
    progress: bool = False,
    desc: str | None = None,
) -> SliceScores:
    """
    Score the slices ``plan`` chose, on the model's device from upload to final volumes.

    The raw scan goes to the device once (from pinned memory on CUDA); every batch is cut, windowed, resampled,
    scored and resampled back there, into a map volume that stays there for the z smoothing and the threshold;
    the final map, labelmap and slice scores come back to the host in one copy each at the end. With no
    per-batch copies the host queues batch after batch without waiting for the device.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    device = model.device
    geometry, scored = plan.geometry, plan.scored
    n = geometry.n_slices
    raw = to_device(image.as_tensor()[0], device).movedim(geometry.axis, 0)
    maps = torch.zeros((n, *geometry.slice_shape), dtype=torch.float32, device=device)
    slice_scores = torch.zeros(n, dtype=torch.float64, device=device)
    todo = np.flatnonzero(scored)
    todo_device = to_device(torch.from_numpy(todo), device)
    with tqdm(total=len(todo), desc=desc, unit="slice", disable=not progress, leave=False) as bar:
        for start in range(0, len(todo), batch_size):
            index = todo_device[start : start + batch_size]
            batch = convert_to_tensor(plan.preset.transform(raw[index]), track_meta=False)
            out = model.predict(plan.to_input.from_slices(batch, geometry))
            slice_scores[index] = out.image_score.float().double()
            maps[index] = geometry.from_square(out.anomaly_map.float()).clamp_(0, 1)
            bar.update(len(index))

    volume = maps.movedim(0, geometry.axis)  # back in the scan's voxel order
    if z_smooth > 0:
        spacing = float(np.linalg.norm(np.asarray(image.affine, dtype=float)[:3, geometry.axis]))
        volume = smooth_along_axis(volume, z_smooth / spacing, geometry.axis)
        volume.movedim(geometry.axis, 0)[to_device(torch.from_numpy(~scored), device)] = 0.0
        volume = volume.clamp_(0.0, 1.0)
    body_voxels = None
    if plan.body is not None:  # after smoothing, which would spread the map back into the air
        volume = volume.masked_fill(~to_device(plan.body, device), 0.0)
        body_voxels = int(plan.body.sum())
    labelmap = None if threshold is None else (volume >= threshold).to(torch.uint8).contiguous().cpu().numpy()
    return SliceScores(volume.contiguous().cpu().numpy(), slice_scores.cpu().numpy(), scored, geometry, plan.preset,
                       plan.foreground_threshold, body_voxels, labelmap)


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
    threshold: float | None = None,
) -> SliceScores:
    """
    Run AnomalyCLIP on the slices of a scan: :func:`plan_slices` then :func:`score_planned`.

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
        threshold: also compute the uint8 labelmap ``anomaly_map >= threshold`` (on the device).
    """
    plan = plan_slices(image, preset, model.config.image_size, model.mean, model.std, axis, skip_empty,
                       min_foreground, slice_indices, body_mask)
    return score_planned(model, image, plan, batch_size, z_smooth, threshold, progress, desc)
