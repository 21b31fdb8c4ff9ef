"""Per-scan metrics of one anomaly map against its lesion mask."""

from __future__ import annotations

import os

import numpy as np

from anomalyclip_med.evaluation.curves import curve_points
from anomalyclip_med.evaluation.volumes import on_grid, read_mask_volume, read_volume, volume_array
from anomalyclip_med.metrics import iou, volume_auroc, volume_dice

__all__ = ["scan_voxel_metrics"]


def scan_voxel_metrics(
    map_path: str | os.PathLike, mask_path: str | os.PathLike | None, threshold: float
) -> dict:
    """
    Voxel metrics of a scan's anomaly map against its lesion mask, on the map's voxel grid.

    Map and mask are read by the package's one volume reader (whole or an error) and the mask is resampled
    (nearest neighbour) onto the map's grid when their geometry differs, so a mask in another orientation or
    resolution still lines up; the mask is made binary first (:func:`read_mask_volume`: non-zero labels of a label
    map, > 0.5 of a float mask). A mask with NaN voxels, or not covering the whole scan, is an error.

    Args:
        map_path: the anomaly map volume written by the scan scoring (values in [0, 1]).
        mask_path: the lesion mask, or None.
        threshold: map values at or above it are predicted lesion (Dice, IoU).

    Returns:
        ``lesion_voxels``, ``predicted_voxels``, ``voxel_auroc`` (NaN without lesion), ``dice``, ``iou``,
        ``key_slice`` (the z index of the largest lesion area, else of the highest map value) and the curves
        ``voxel_roc`` / ``voxel_pr`` (None without lesion). Without a mask only ``predicted_voxels`` and
        ``key_slice`` are filled.

    Raises:
        InputError: unreadable, damaged or truncated map or mask, a mask with NaN/Inf voxels, or a mask not
            covering the scan's grid.
    """
    amap_image = read_volume(map_path)
    amap = volume_array(amap_image).astype(np.float32)
    out = {"lesion_voxels": None, "predicted_voxels": int((amap >= threshold).sum()), "voxel_auroc": None,
           "dice": None, "iou": None, "voxel_roc": None, "voxel_pr": None,
           "key_slice": int(np.unravel_index(np.argmax(amap), amap.shape)[0])}
    if mask_path is None:
        return out
    mask = volume_array(on_grid(read_mask_volume(mask_path), amap_image, nearest=True, name=f"Mask '{mask_path}'")) > 0
    lesion = int(mask.sum())
    out.update(lesion_voxels=lesion, voxel_auroc=volume_auroc(mask, amap), dice=volume_dice(mask, amap, threshold),
               iou=iou(mask, amap, threshold))
    if lesion:
        out["key_slice"] = int(mask.sum(axis=(1, 2)).argmax())
        if lesion < mask.size:
            out["voxel_roc"], out["voxel_pr"] = curve_points(mask, amap)
    return out
