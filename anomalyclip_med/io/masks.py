"""
Reading 2D anomaly masks into boolean arrays, whatever their encoding, and the rule that makes a lesion mask volume
binary (:func:`binarize_volume_mask`).

Published anomaly datasets store masks in several ways, all handled here: two-valued files (0/255, 0/1, or
any other single foreground value: MVTec AD, MPDD, BTAD, ISIC, TN3K), small integer label maps where each
defect type has its own id (VisA's raw masks), and lossy JPEG masks whose edges hold a few in-between values
(Kvasir-SEG). Anything else - a grey-level photograph passed as a mask, a probability map - is refused
rather than silently thresholded.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from anomalyclip_med.errors import InputError
from anomalyclip_med.io.images import open_image

__all__ = [
    "MAX_LABEL_ID", "MAX_LABEL_LEVELS", "MAX_EDGE_FRACTION", "binarize_mask", "binarize_volume_mask", "read_mask",
    "image_size_of",
]

# Label maps (VisA's raw masks: defect ids 1..9) use a few small ids; such a map is read as "non-zero = anomalous".
MAX_LABEL_ID = 32
MAX_LABEL_LEVELS = 16
# Lossy/anti-aliased two-level masks: at most this fraction of pixels may lie between the two levels.
MAX_EDGE_FRACTION = 0.05
# "Between the levels" for 8-bit masks: neither within 15 of black nor within 15 of white.
_EDGE_LOW, _EDGE_HIGH = 16, 239


def binarize_mask(values: np.ndarray, source: str = "mask") -> np.ndarray:
    """
    Turn a 2D mask array into a boolean anomaly mask.

    Rules, in order: at most one non-zero value -> non-zero is anomalous; an integer label map with largest
    value below :data:`MAX_LABEL_ID` and at most :data:`MAX_LABEL_LEVELS` values -> non-zero is anomalous;
    an 8-bit mask with at most :data:`MAX_EDGE_FRACTION` of its pixels strictly between near-black and
    near-white (JPEG edges) -> values >= 128 are anomalous.

    Args:
        values: (H, W) array, or (H, W, C) whose channels are combined by their maximum (alpha dropped).
        source: name of the mask for error messages.

    Returns:
        (H, W) bool array.

    Raises:
        InputError: the mask is not binary under any of these rules.
    """
    a = np.asarray(values)
    if a.ndim == 3:
        channels = a.shape[2] - 1 if a.shape[2] in (2, 4) else a.shape[2]  # drop alpha
        a = a[..., :channels].max(axis=2)
    if a.ndim != 2:
        raise InputError(f"Mask {source} has shape {a.shape}; expected a 2D single- or multi-channel image.")
    if a.dtype == bool:
        return a
    levels = np.unique(a)
    nonzero = levels[levels != 0]
    if nonzero.size <= 1:
        return a != 0
    is_integer = np.issubdtype(a.dtype, np.integer) or bool(np.all(np.mod(levels, 1) == 0))
    if is_integer and levels.min() >= 0 and levels.max() < MAX_LABEL_ID and levels.size <= MAX_LABEL_LEVELS:
        return a != 0
    if a.dtype == np.uint8:
        edge = np.count_nonzero((a >= _EDGE_LOW) & (a <= _EDGE_HIGH)) / a.size
        if edge <= MAX_EDGE_FRACTION:
            return a >= 128
    raise InputError(
        f"Mask {source} is not binary: it holds {levels.size} distinct values between {levels.min()} and "
        f"{levels.max()}. A mask must be 0 for normal pixels and one non-zero value (e.g. 255) for anomalous "
        f"ones (small integer label maps and JPEG masks with noisy edges are accepted too); check that this "
        f"file is a mask and not an image or a probability map."
    )


def binarize_volume_mask(values: np.ndarray, nonfinite: int = 0, source: str = "mask") -> np.ndarray:
    """
    Turn a lesion mask volume into a boolean lesion mask by an explicit rule: a label map (every value a whole
    number: 0/1, 0/255, BraTS' labels 1, 2, 4) is lesion wherever its label is non-zero; a float mask (any value
    with a fraction: a probability map, a resampled mask, a background of 1e-3) is lesion where it is > 0.5.

    Args:
        values: the mask's voxels (any shape), non-finite values already replaced.
        nonfinite: how many voxels were NaN or Inf in the file (``meta["nonfinite_voxels"]`` of
            :func:`anomalyclip_med.io.scans.load_volume`).
        source: the mask's name for the error message.

    Raises:
        InputError: the mask held NaN or Inf voxels, which are neither lesion nor normal.
    """
    if nonfinite:
        raise InputError(f"Mask {source} holds {nonfinite} NaN/Inf voxel(s), which are neither lesion nor normal: "
                         "a mask must be finite, 0 for normal voxels and a label (or 1) for lesion.")
    a = np.asarray(values)
    if np.all(a == np.floor(a)):
        return a != 0
    return a > 0.5


def image_size_of(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an image file from its header, without decoding the pixels."""
    with open_image(path) as im:
        return im.size


def read_mask(path: str | os.PathLike, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """
    Read a mask file as a boolean (H, W) array (see :func:`binarize_mask` for the accepted encodings).

    Args:
        path: mask image file.
        expected_size: (width, height) of the image the mask belongs to; a different size is an error.

    Raises:
        InputError: unreadable file, size different from ``expected_size``, or a non-binary mask.
    """
    path = Path(path)
    with open_image(path, "mask") as im:
        im.load()
        size = im.size
        # palette masks keep their indices (index 0 = background); exotic colour spaces become RGB
        values = np.asarray(im.convert("RGB") if im.mode in ("CMYK", "YCbCr", "LAB", "HSV") else im)
    if expected_size is not None and tuple(size) != tuple(expected_size):
        raise InputError(
            f"Mask '{path}' is {size[0]}x{size[1]} pixels but its image is {expected_size[0]}x{expected_size[1]}; "
            "a mask must have exactly its image's size (check that masks and images are paired correctly)."
        )
    return binarize_mask(values, f"'{path}'")
