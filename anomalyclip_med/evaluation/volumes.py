"""
A scan, mask or anomaly map as a SimpleITK image (read by the package's one volume reader), and bringing it onto
another volume's voxel grid, refusing grids that do not cover it.
"""

from __future__ import annotations

import itertools
import os

import numpy as np
import SimpleITK as sitk
import torch

from anomalyclip_med.errors import InputError
from anomalyclip_med.io.masks import binarize_volume_mask
from anomalyclip_med.io.scans import load_volume

__all__ = ["read_volume", "read_mask_volume", "on_grid", "volume_array"]

_LPS = np.diag([-1.0, -1.0, 1.0])  # RAS <-> LPS: MONAI affines are RAS, ITK geometry is LPS
# a reference voxel centre counts as inside a grid up to this many voxels beyond its outer faces (rounding)
_EDGE_TOL = 1e-3


def read_volume(path: str | os.PathLike) -> sitk.Image:
    """
    Read a volume file (NIfTI, NRRD, MHA ...) or a DICOM series folder with
    :func:`anomalyclip_med.io.scans.load_volume` (all its checks: whole files, declared sizes, DICOM series
    whole) as a float32 SimpleITK image in the same physical space.

    Raises:
        InputError: missing, damaged or unreadable input, naming the path.
    """
    return _as_sitk(load_volume(path), path)


def read_mask_volume(path: str | os.PathLike) -> sitk.Image:
    """
    Read a lesion mask as :func:`read_volume` does, made binary by
    :func:`anomalyclip_med.io.masks.binarize_volume_mask` (a label map: non-zero labels; a float mask: > 0.5): a
    float32 image of 0 and 1.

    Raises:
        InputError: as :func:`read_volume`, and a mask holding NaN or Inf voxels.
    """
    img = load_volume(path)
    lesion = binarize_volume_mask(img.numpy(), int(img.meta.get("nonfinite_voxels", 0)), f"'{path}'")
    img.as_tensor().copy_(torch.from_numpy(lesion))
    return _as_sitk(img, path)


def _as_sitk(img, path: str | os.PathLike) -> sitk.Image:
    affine = np.asarray(img.meta["affine"], dtype=float)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if not (np.all(np.isfinite(affine)) and np.all(spacing > 0)):
        raise InputError(f"Volume '{path}' has a degenerate voxel-to-world affine {affine.round(4).tolist()}.")
    image = sitk.GetImageFromArray(np.ascontiguousarray(img.numpy()[0].transpose(2, 1, 0)))
    try:
        image.SetSpacing(spacing.tolist())
        image.SetOrigin((_LPS @ affine[:3, 3]).tolist())
        image.SetDirection((_LPS @ affine[:3, :3] / spacing).flatten().tolist())
    except RuntimeError as err:  # a sheared affine has no ITK direction matrix
        raise InputError(f"Volume '{path}' has a voxel-to-world affine ITK cannot use: "
                         f"{str(err).strip().splitlines()[-1]}") from None
    return image


def _coverage(image: sitk.Image, reference: sitk.Image) -> float:
    """Fraction of ``reference``'s voxel centres that lie inside ``image``'s grid."""
    size = np.asarray(image.GetSize())
    corners = itertools.product(*[(0, n - 1) for n in reference.GetSize()])
    inside = all(
        np.all(np.abs(np.asarray(image.TransformPhysicalPointToContinuousIndex(
            reference.TransformIndexToPhysicalPoint(c))) - (size - 1) / 2) <= size / 2 + _EDGE_TOL)
        for c in corners
    )
    if inside:  # a grid is a convex box: all 8 corners inside means every voxel centre is
        return 1.0
    ones = sitk.Image(image.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(image)
    covered = sitk.Resample(ones, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return float(sitk.GetArrayViewFromImage(covered).mean())


def on_grid(image: sitk.Image, reference: sitk.Image, nearest: bool, name: str = "volume") -> sitk.Image:
    """
    ``image`` resampled onto ``reference``'s voxel grid (nearest neighbour for masks, linear for intensities),
    or ``image`` itself when the grids already agree.

    Raises:
        InputError: ``image`` (called ``name`` in the message) does not cover every voxel of ``reference``: no
            physical overlap at all, or only part of it (a mask of another scan, or a cropped one), which would
            silently count the uncovered voxels as normal.
    """
    same = (
        image.GetSize() == reference.GetSize()
        and np.allclose(image.GetSpacing(), reference.GetSpacing(), rtol=1e-4)
        and np.allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-3)
        and np.allclose(image.GetDirection(), reference.GetDirection(), atol=1e-4)
    )
    if same:
        return image
    covered = _coverage(image, reference)
    if covered < 1.0:
        where = ("has no physical overlap with" if covered == 0.0
                 else f"covers only {100 * covered:.1f}% of")
        raise InputError(
            f"{name} {where} its scan's voxel grid (origin {np.round(image.GetOrigin(), 2).tolist()} mm, size "
            f"{list(image.GetSize())} vs the scan's origin {np.round(reference.GetOrigin(), 2).tolist()} mm, size "
            f"{list(reference.GetSize())}): it belongs to another scan or was cropped. Give the mask on the scan's "
            "grid (or one covering it)."
        )
    interp = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    return sitk.Resample(image, reference, sitk.Transform(), interp, 0.0, image.GetPixelID())


def volume_array(image: sitk.Image) -> np.ndarray:
    """The voxels as a (z, y, x) numpy array (the first component of a vector image)."""
    a = sitk.GetArrayFromImage(image)
    return a[..., 0] if image.GetNumberOfComponentsPerPixel() > 1 else a
