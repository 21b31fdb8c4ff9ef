"""Reading a scan, mask or anomaly map with SimpleITK and bringing it onto another volume's voxel grid."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from anomalyclip_med.errors import InputError

__all__ = ["read_volume", "on_grid", "volume_array"]


def read_volume(path: str | os.PathLike) -> sitk.Image:
    """
    Read a volume file (NIfTI, NRRD, MHA ...) or a folder holding one DICOM series.

    Raises:
        InputError: missing, unreadable or empty input, naming the path.
    """
    path = Path(path)
    try:
        if path.is_dir():
            files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path))
            if not files:
                raise InputError(f"Folder '{path}' holds no DICOM series.")
            return sitk.ReadImage(files)
        if not path.is_file():
            raise InputError(f"Volume '{path}' does not exist.")
        return sitk.ReadImage(str(path))
    except RuntimeError as err:  # SimpleITK's error for unreadable files
        raise InputError(f"Cannot read volume '{path}': {str(err).strip().splitlines()[-1]}") from None


def on_grid(image: sitk.Image, reference: sitk.Image, nearest: bool) -> sitk.Image:
    """
    ``image`` resampled onto ``reference``'s voxel grid (nearest neighbour for masks, linear for intensities),
    or ``image`` itself when the grids already agree; voxels outside ``image`` become 0.
    """
    same = (
        image.GetSize() == reference.GetSize()
        and np.allclose(image.GetSpacing(), reference.GetSpacing(), rtol=1e-4)
        and np.allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-3)
        and np.allclose(image.GetDirection(), reference.GetDirection(), atol=1e-4)
    )
    if same:
        return image
    interp = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    return sitk.Resample(image, reference, sitk.Transform(), interp, 0.0, image.GetPixelID())


def volume_array(image: sitk.Image) -> np.ndarray:
    """The voxels as a (z, y, x) numpy array (the first component of a vector image)."""
    a = sitk.GetArrayFromImage(image)
    return a[..., 0] if image.GetNumberOfComponentsPerPixel() > 1 else a
